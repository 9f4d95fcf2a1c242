"""Validating and sorting scores for the metrics: packed keys with the label in the low bit (fast) or argsort.

One sort of the scores gives every metric of :mod:`speakerid.scoring.metrics`; this module
holds that sort (see the metrics module doc for the packed-key trick).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

_MASK63 = np.int64(0x7FFF_FFFF_FFFF_FFFF)
_MASK31 = np.int32(0x7FFF_FFFF)


class MetricsError(ValueError):
    """Scores/labels that no metric can be computed from (NaN, no targets, ...)."""


# --------------------------------------------------------------------------------------
# validation


def validate_scores(scores: np.ndarray | Iterable[float], labels: np.ndarray | Iterable) -> tuple[np.ndarray, np.ndarray]:
    """Return (scores as float32 or float64 1-D, labels as bool 1-D) or raise MetricsError."""
    s = np.asarray(scores)
    if s.dtype != np.float32:
        if s.dtype.kind not in "fiub":
            raise MetricsError(f"scores must be numbers, got dtype {s.dtype}")
        s = s.astype(np.float64, copy=False)  # the only float conversion
    lab = np.asarray(labels)
    if s.ndim != 1 or lab.ndim != 1:
        raise MetricsError(f"scores and labels must be 1-D, got shapes {s.shape} and {lab.shape}")
    if s.shape != lab.shape:
        raise MetricsError(f"{s.size} scores but {lab.size} labels")
    if lab.dtype != np.bool_:
        if lab.dtype.kind not in "iuf" or not np.all((lab == 0) | (lab == 1)):
            raise MetricsError("labels must be 0/1 or booleans (1 = target)")
        lab = lab.astype(bool)
    finite = np.isfinite(s)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise MetricsError(
            f"{bad.size} of {s.size} scores are NaN or infinite (first at index {bad[0]}: {s[bad[0]]})"
        )
    n_t = int(np.count_nonzero(lab))
    if n_t == 0:
        raise MetricsError(f"no target trials among {s.size} scores: the metrics need both classes")
    if n_t == s.size:
        raise MetricsError(f"no non-target trials among {s.size} scores: the metrics need both classes")
    return s, lab


# --------------------------------------------------------------------------------------
# sorting: packed keys with the label in the low bit (fast) or plain argsort (reference)


def _sortable_int(bits: np.ndarray, mask: np.integer) -> np.ndarray:
    """IEEE-754 bit patterns -> signed integers with the same order as the floats.

    Positive floats already order like their bit patterns; for negative ones the magnitude
    bits are flipped. The map is an involution, so the same call decodes keys back to bits.
    """
    return bits ^ ((bits >> (bits.dtype.itemsize * 8 - 1)) & mask)


def _as_float32_exact(s: np.ndarray) -> np.ndarray | None:
    """``s`` as float32 if that is lossless (always for float32 input), else None."""
    if s.dtype == np.float32:
        return s
    with np.errstate(over="ignore", invalid="ignore"):
        s32 = s.astype(np.float32)
    return s32 if np.array_equal(s32, s) else None


SORT_BLOCK = 1 << 16  # elements per block of the streaming passes (~0.5 MiB of int64: stays in cache)


def _pack32(s32: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """Sorted int64 array of ``key << 1 | label`` for float32 scores.

    The trick: sorting one plain integer array with ``np.sort`` (SIMD sorting, no index
    array) sorts the scores and carries each label along in the lowest bit; equal scores get
    equal keys, so ties end up adjacent and are grouped exactly. A float32's 32-bit
    order-preserving key leaves room for the label bit in an int64. Built block by block so
    the temporaries stay in cache.
    """
    packed = np.empty(s32.size, dtype=np.int64)
    label_bits = lab.view(np.uint8)
    for lo in range(0, s32.size, SORT_BLOCK):
        blk = slice(lo, lo + SORT_BLOCK)
        k = s32[blk] + np.float32(0.0)  # -0.0 -> +0.0: equal floats must get equal keys
        packed[blk] = _sortable_int(k.view(np.int32), _MASK31)
        packed[blk] <<= 1
        packed[blk] |= label_bits[blk]
    packed.sort()
    return packed


def _pack64(s: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, int]:
    """Sorted uint64 ``key << 1 | label`` arrays for any finite float64 scores: (array, n_neg).

    A float64's order-preserving key needs all 64 bits, leaving none for the label, so the
    sign is taken out instead: negative and non-negative scores are sorted as two parts, each
    keyed by 63 magnitude bits (negatives by ``MASK63 - magnitude``, so that ascending keys are
    ascending values). ``array[:n_neg]`` holds the negative scores, ``array[n_neg:]`` the rest,
    both ascending: together the scores in ascending order.
    """
    n_neg = int(np.count_nonzero(s < 0.0))  # -0.0 is not < 0: it joins +0.0
    out = np.empty(s.size, dtype=np.uint64)
    label_bits = lab.view(np.uint8)
    i_neg, i_pos = 0, n_neg  # write cursors of the two parts
    for lo in range(0, s.size, SORT_BLOCK):  # block by block: temporaries stay in cache
        blk = slice(lo, lo + SORT_BLOCK)
        bits = (s[blk] + 0.0).view(np.int64)  # -0.0 -> +0.0
        neg = bits < 0
        mag = bits & _MASK63
        np.subtract(_MASK63, mag, out=mag, where=neg)
        packed = mag.view(np.uint64)
        packed <<= np.uint64(1)
        packed |= label_bits[blk]
        part = packed[neg]
        out[i_neg : i_neg + part.size] = part
        i_neg += part.size
        part = packed[~neg]
        out[i_pos : i_pos + part.size] = part
        i_pos += part.size
    out[:n_neg].sort()
    out[n_neg:].sort()
    return out, n_neg


SORT_METHODS = ("auto", "packed64", "argsort")


class SortedScores:
    """Scores in ascending order with their labels, from one sort, read block by block.

    Routes (identical results): float32-representable scores (e.g. cosine scores of float32
    embeddings) -> :func:`_pack32`; other floats -> :func:`_pack64`; "argsort" is the plain
    reference route (``np.argsort`` + gathers) kept for tests and benchmarks; "packed64"
    forces :func:`_pack64`. ``block(lo, hi)`` gives (group keys, uint8 labels) of sorted
    positions lo..hi-1, equal keys <=> equal scores; ``values(positions)`` decodes scores
    (float64).
    """

    def __init__(self, scores: np.ndarray | Iterable[float], labels: np.ndarray | Iterable, method: str = "auto"):
        if method not in SORT_METHODS:
            raise MetricsError(f"unknown sort method {method!r}; choose from {', '.join(SORT_METHODS)}")
        s, lab = validate_scores(scores, labels)
        self.n = s.size
        self.n_targets = int(np.count_nonzero(lab))
        s32 = _as_float32_exact(s)
        self.is_float32 = s32 is not None
        self._route = "argsort" if method == "argsort" else ("packed32" if s32 is not None and method == "auto" else "packed64")
        if self._route == "packed32":
            self._packed = _pack32(s32, lab)
        elif self._route == "packed64":
            self._packed, self._n_neg = _pack64(s.astype(np.float64, copy=False), lab)
        else:
            order = np.argsort(s)
            self._sorted, self._labels = s[order], lab[order].view(np.uint8)

    def block(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        if self._route == "argsort":
            return self._sorted[lo:hi], self._labels[lo:hi]
        p = self._packed[lo:hi]
        one = p.dtype.type(1)
        keys = (p >> one).view(np.int64)
        if self._route == "packed64" and lo < self._n_neg:
            # negative part: set the sign bit (key - 2**63) so it sorts below the other part
            keys[: self._n_neg - lo] |= np.int64(-(2**63))
        return keys, (p & one).astype(np.uint8)

    def values(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions)
        if self._route == "argsort":
            return self._sorted[positions].astype(np.float64)
        p = self._packed[positions]
        if self._route == "packed32":
            k = (p >> 1).astype(np.int32)
            return _sortable_int(k, _MASK31).view(np.float32).astype(np.float64)
        stored = (p >> np.uint64(1)).view(np.int64)
        neg = positions < self._n_neg
        bits = np.where(neg, (_MASK63 - stored) | np.int64(-(2**63)), stored)
        return bits.view(np.float64)

    def threshold(self, position: int) -> float:
        """Threshold of the point accepting sorted positions >= ``position``; for n (reject
        all) the next float above the top score, in the scores' own precision so that the
        comparison also rejects it when made in float32."""
        if position < self.n:
            return float(self.values(np.array([position]))[0])
        ftype = np.float32 if self.is_float32 else np.float64
        top = self.values(np.array([self.n - 1]))[0]
        with np.errstate(over="ignore"):  # the largest float's successor is inf: that rejects all too
            return float(np.nextafter(ftype(top), ftype(np.inf)))


