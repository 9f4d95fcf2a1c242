"""Verification metrics: EER, minDCF, actDCF and Cllr, exact under tied scores.

Conventions (DESIGN.md, "Definitions")
-------------------------------------
* A trial is accepted as *target* when ``score >= threshold``. Every distinct score value
  ``v_1 < ... < v_m`` gives one operating point (accept scores ``>= v_k``), plus the point
  that rejects everything; thresholds therefore only fall *between* distinct score values
  and tied scores always move together (no tie is ever split by trial order).
* P_miss(k) = #targets below v_k / #targets, P_fa(k) = #non-targets at or above v_k /
  #non-targets.
* EER: the crossing of the P_miss and P_fa curves, linearly interpolated between the two
  consecutive operating points that straddle it. This is the same point as the usual
  "interpolate the ROC curve and solve FPR = 1 - TPR" (sklearn ``roc_curve`` + root finding),
  without the root finding. The returned threshold is interpolated the same way.
* minDCF: ``min_k C_miss*P_miss*P_target + C_fa*P_fa*(1-P_target)`` divided by
  ``min(C_miss*P_target, C_fa*(1-P_target))`` (the cost of the best trivial system).
* actDCF: the same cost at the Bayes threshold ``log(C_fa*(1-P_target) / (C_miss*P_target))``
  (``-logit(P_target)`` for unit costs) applied to calibrated log-likelihood ratios.
* Cllr: Brümmer & du Preez (2006), "Application-independent evaluation of speaker detection",
  Computer Speech and Language 20(2-3), eq. (11):
  ``Cllr = 1/(2 log 2) * (mean_t log(1 + e^-s) + mean_n log(1 + e^s))`` in bits.

Speed
-----
Exact metrics need the scores in sorted order with their labels, so one sort is the floor.
``np.argsort`` is several times slower than ``np.sort`` (indices ruin the SIMD sorting
networks numpy uses for plain keys), so the scores are sorted as ONE packed integer array
instead: each score becomes an order-preserving integer key with the label in the lowest bit
(:func:`_pack32` for float32 values such as cosine scores of float32 embeddings;
:func:`_pack64` for any other float64, which sorts negatives and the rest as two parts to
free the sign bit). One ``np.sort`` then yields scores and labels together, ties end up
adjacent, and EER and every minDCF come from the same cumulative counts, computed in ONE
streaming pass over the sorted array in cache-sized blocks (:func:`_scan`): the work after
the sort is memory-bound, and full-length temporaries would cost more than the sort itself.
``tests/test_scoring_metrics.py`` checks every route against the plain argsort route and a
brute-force loop over thresholds; ``benchmarks/bench_scoring.py`` times them.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

__all__ = [
    "MetricsError",
    "OperatingPoints",
    "Metrics",
    "operating_points",
    "compute_eer",
    "compute_min_dcf",
    "compute_act_dcf",
    "compute_cllr",
    "compute_metrics",
    "bayes_threshold",
    "min_dcf_point",
    "eer_point",
]

DEFAULT_P_TARGETS: tuple[float, ...] = (0.01, 0.05)

_MASK63 = np.int64(0x7FFF_FFFF_FFFF_FFFF)
_MASK31 = np.int32(0x7FFF_FFFF)


class MetricsError(ValueError):
    """Scores/labels that no metric can be computed from (NaN, no targets, ...)."""


# --------------------------------------------------------------------------------------
# validation


def _validate(scores: np.ndarray | Iterable[float], labels: np.ndarray | Iterable) -> tuple[np.ndarray, np.ndarray]:
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


_BLOCK = 1 << 16  # elements per block of the streaming passes (~0.5 MiB of int64: stays in cache)


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
    for lo in range(0, s32.size, _BLOCK):
        blk = slice(lo, lo + _BLOCK)
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
    for lo in range(0, s.size, _BLOCK):  # block by block: temporaries stay in cache
        blk = slice(lo, lo + _BLOCK)
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


class _SortedScores:
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
        s, lab = _validate(scores, labels)
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


# --------------------------------------------------------------------------------------
# operating points (full arrays: DET curves, tests)


@dataclass(frozen=True)
class OperatingPoints:
    """All operating points of a score list, from one sort.

    Point ``k`` (0..m, m = number of distinct scores) accepts the scores ``>= v_k`` where
    ``v_0 < v_1 < ...`` are the distinct scores; point m rejects everything.
    ``targets_below[k]`` (misses) and ``nontargets_below[k]`` (correct rejections) are exact
    integer counts; ``positions[k]`` is the number of scores below ``v_k``.
    """

    n_targets: int
    n_nontargets: int
    targets_below: np.ndarray
    nontargets_below: np.ndarray
    positions: np.ndarray
    _sorted: _SortedScores = field(repr=False)

    @property
    def num_points(self) -> int:
        return int(self.targets_below.size)

    @property
    def p_miss(self) -> np.ndarray:
        return self.targets_below / self.n_targets

    @property
    def p_fa(self) -> np.ndarray:
        return (self.n_nontargets - self.nontargets_below) / self.n_nontargets

    def thresholds(self, k: np.ndarray | int | None = None) -> np.ndarray | float:
        """Threshold(s) of point(s) ``k`` (all points when None); decisions are ``score >= t``."""
        ks = np.arange(self.num_points) if k is None else np.asarray(k)
        flat = np.atleast_1d(ks)
        out = np.empty(flat.shape, dtype=np.float64)
        inner = flat < self.num_points - 1
        out[inner] = self._sorted.values(self.positions[flat[inner]])
        out[~inner] = self._sorted.threshold(self._sorted.n)
        return out if (k is None or np.ndim(ks)) else float(out[0])


def operating_points(
    scores: np.ndarray | Iterable[float], labels: np.ndarray | Iterable, method: str = "auto"
) -> OperatingPoints:
    """Sort once and count targets / non-targets below every distinct score value.

    ``method``: "auto" (packed keys), "packed64" (force the two-part float64 packing) or
    "argsort" (the plain reference route). All give identical results; only speed differs.
    """
    srt = _SortedScores(scores, labels, method)
    n, n_t = srt.n, srt.n_targets
    keys, lab = srt.block(0, n)
    boundaries = np.flatnonzero(keys[1:] != keys[:-1])
    cum = np.cumsum(lab, dtype=np.int64)  # cum[i] = targets among the i+1 lowest
    targets_below = np.concatenate([[0], cum[boundaries], [n_t]])
    positions = np.concatenate([[0], boundaries + 1, [n]])
    nontargets_below = positions - targets_below
    return OperatingPoints(n_t, n - n_t, targets_below, nontargets_below, positions, srt)


# --------------------------------------------------------------------------------------
# one streaming pass over the sorted scores: EER and every minDCF together


@dataclass
class _ScanResult:
    n_targets: int
    n_nontargets: int
    eer_pair: tuple[tuple[int, int, int], tuple[int, int, int]]  # (tb, nb, position) before / at crossing
    min_dcf: dict[float, tuple[float, int]]  # p_target -> (normalised value, position)


def _scan(srt: _SortedScores, p_targets: tuple[float, ...], c_miss: float, c_fa: float, block: int = _BLOCK) -> _ScanResult:
    """Visit every operating point (in order) block by block, keeping in cache what
    :func:`operating_points` would hold as full arrays; same points, same tie-breaking (the
    first minimum; the first point with P_miss >= P_fa)."""
    n, nt = srt.n, srt.n_targets
    nn = n - nt
    target = nt * nn  # EER crossing: tb*nn + nb*nt >= nt*nn
    weights = {}
    for p in p_targets:
        norm = _dcf_norm(p, c_miss, c_fa)
        weights[p] = (c_miss * p / nt / norm, c_fa * (1.0 - p) / nn / norm)
    # point 0 (accept everything): tb = nb = 0
    best = {p: (w_fa * nn, 0) for p, (_, w_fa) in weights.items()}
    last = (0, 0, 0)
    eer_pair = None
    carry = 0  # targets before the block
    prev_key = None

    def visit(tb: np.ndarray, nb: np.ndarray, pos: np.ndarray) -> None:
        nonlocal last, eer_pair
        if not pos.size:
            return
        for p, (w_miss, w_fa) in weights.items():
            cost = tb * w_miss
            cost -= nb * w_fa
            j = int(np.argmin(cost))
            value = float(cost[j]) + w_fa * nn
            if value < best[p][0]:
                best[p] = (value, int(pos[j]))
        if eer_pair is None:
            d = tb * nn + nb * nt
            j = int(np.searchsorted(d, target, side="left"))
            if j < d.size:
                before = last if j == 0 else (int(tb[j - 1]), int(nb[j - 1]), int(pos[j - 1]))
                eer_pair = (before, (int(tb[j]), int(nb[j]), int(pos[j])))
        last = (int(tb[-1]), int(nb[-1]), int(pos[-1]))

    for lo in range(0, n, block):
        keys, lab = srt.block(lo, min(lo + block, n))
        cum = np.empty(keys.size + 1, dtype=np.int64)  # cum[i] = targets before position lo+i
        cum[0] = carry
        np.cumsum(lab, out=cum[1:])
        cum[1:] += carry
        new_group = np.empty(keys.size, dtype=bool)  # a tie group starts at position lo+i
        new_group[0] = lo > 0 and keys[0] != prev_key
        np.not_equal(keys[1:], keys[:-1], out=new_group[1:])
        idx = np.flatnonzero(new_group)
        tb = cum[idx]
        pos = idx + lo
        visit(tb, pos - tb, pos)
        carry = int(cum[-1])
        prev_key = keys[-1]
    visit(np.array([nt]), np.array([nn]), np.array([n]))  # reject everything
    assert eer_pair is not None  # the last point has P_miss = 1 >= P_fa = 0
    return _ScanResult(nt, nn, eer_pair, {p: (max(v, 0.0), pos) for p, (v, pos) in best.items()})


def _eer_from_pair(srt: _SortedScores, pair: tuple[tuple[int, int, int], tuple[int, int, int]]) -> tuple[float, float]:
    """Interpolate P_miss = P_fa between the two straddling points (tb, nb, position)."""
    nt, nn = srt.n_targets, srt.n - srt.n_targets
    (tb0, nb0, pos0), (tb1, nb1, pos1) = pair
    pm0, pf0 = tb0 / nt, (nn - nb0) / nn
    pm1, pf1 = tb1 / nt, (nn - nb1) / nn
    gap0, gap1 = pf0 - pm0, pm1 - pf1  # gap0 > 0, gap1 >= 0
    alpha = gap0 / (gap0 + gap1)
    t0, t1 = srt.threshold(pos0), srt.threshold(pos1)
    return float(pm0 + alpha * (pm1 - pm0)), float(t0 + alpha * (t1 - t0))


# --------------------------------------------------------------------------------------
# EER and DCF from operating points


def eer_point(op: OperatingPoints) -> tuple[float, float]:
    """EER and its (interpolated) threshold from precomputed operating points.

    P_miss - P_fa is non-decreasing in k; in integers it is >= 0 iff
    ``tb*N_n + nb*N_t >= N_t*N_n``, so the straddling pair is found exactly by bisection.
    """
    nt, nn = op.n_targets, op.n_nontargets
    tb, nb, pos = op.targets_below, op.nontargets_below, op.positions
    k = bisect.bisect_left(range(op.num_points), nt * nn, key=lambda i: int(tb[i]) * nn + int(nb[i]) * nt)
    # k >= 1 because point 0 has P_miss = 0 < P_fa = 1; k <= m because the last point has P_miss = 1
    pair = tuple((int(tb[i]), int(nb[i]), int(pos[i])) for i in (k - 1, k))
    return _eer_from_pair(op._sorted, pair)


def _dcf_norm(p_target: float, c_miss: float, c_fa: float) -> float:
    if not 0.0 < p_target < 1.0:
        raise MetricsError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise MetricsError(f"costs must be positive, got c_miss={c_miss}, c_fa={c_fa}")
    return min(c_miss * p_target, c_fa * (1.0 - p_target))


def min_dcf_point(op: OperatingPoints, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0) -> tuple[float, int]:
    """Normalised minDCF and the index of the operating point attaining it (lowest on ties)."""
    norm = _dcf_norm(p_target, c_miss, c_fa)
    w_miss = c_miss * p_target / op.n_targets / norm
    w_fa = c_fa * (1.0 - p_target) / op.n_nontargets / norm
    # cost_k = w_miss*tb + w_fa*(N_n - nb); the constant is added after the argmin
    cost = op.targets_below * w_miss
    cost -= op.nontargets_below * w_fa
    k = int(np.argmin(cost))
    value = float(cost[k]) + w_fa * op.n_nontargets
    return max(value, 0.0), k


# --------------------------------------------------------------------------------------
# public API


def compute_eer(scores: np.ndarray | Iterable[float], labels: np.ndarray | Iterable) -> tuple[float, float]:
    """Equal error rate (a fraction, not %) and its threshold. See the module docstring."""
    m = compute_metrics(scores, labels, p_targets=())
    return m.eer, m.eer_threshold


def compute_min_dcf(
    scores: np.ndarray | Iterable[float],
    labels: np.ndarray | Iterable,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> tuple[float, float]:
    """Normalised minimum detection cost and the threshold that attains it (lowest one on ties)."""
    return compute_metrics(scores, labels, (p_target,), c_miss, c_fa).min_dcf[float(p_target)]


def bayes_threshold(p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """Bayes decision threshold on LLRs: ``log(C_fa*(1-P_target) / (C_miss*P_target))``."""
    _dcf_norm(p_target, c_miss, c_fa)
    return math.log(c_fa * (1.0 - p_target) / (c_miss * p_target))


def compute_act_dcf(
    llrs: np.ndarray | Iterable[float],
    labels: np.ndarray | Iterable,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> float:
    """Normalised actual DCF of calibrated LLRs at the Bayes threshold (accept ``llr >= thr``)."""
    s, lab = _validate(llrs, labels)
    norm = _dcf_norm(p_target, c_miss, c_fa)
    accept = s >= bayes_threshold(p_target, c_miss, c_fa)
    n_t = int(np.count_nonzero(lab))
    p_miss = np.count_nonzero(lab & ~accept) / n_t
    p_fa = np.count_nonzero(~lab & accept) / (s.size - n_t)
    return float((c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa) / norm)


def compute_cllr(llrs: np.ndarray | Iterable[float], labels: np.ndarray | Iterable) -> float:
    """Cllr in bits (Brümmer & du Preez 2006, eq. 11); 1.0 = a system that always says LLR 0."""
    s, lab = _validate(llrs, labels)
    s = s.astype(np.float64, copy=False)
    c_tar = np.mean(np.logaddexp(0.0, -s[lab]))
    c_non = np.mean(np.logaddexp(0.0, s[~lab]))
    return float((c_tar + c_non) / (2.0 * math.log(2.0)))


@dataclass(frozen=True)
class Metrics:
    """EER and minDCFs of one score list (from one sort), plus actDCF/Cllr when calibrated."""

    eer: float
    eer_threshold: float
    min_dcf: dict[float, tuple[float, float]]  # p_target -> (value, threshold)
    n_targets: int
    n_nontargets: int
    act_dcf: dict[float, float] | None = None  # p_target -> value, for calibrated LLRs
    cllr: float | None = None

    def to_dict(self) -> dict[str, float | int]:
        """Flat JSON-friendly dict: eer, eer_threshold, min_dcf_0.01, min_dcf_0.01_threshold, ..."""
        out: dict[str, float | int] = {
            "eer": self.eer,
            "eer_threshold": self.eer_threshold,
            "n_targets": self.n_targets,
            "n_nontargets": self.n_nontargets,
        }
        for p, (value, thr) in self.min_dcf.items():
            out[f"min_dcf_{p:g}"] = value
            out[f"min_dcf_{p:g}_threshold"] = thr
        if self.act_dcf is not None:
            for p, value in self.act_dcf.items():
                out[f"act_dcf_{p:g}"] = value
        if self.cllr is not None:
            out["cllr"] = self.cllr
        return out


def compute_metrics(
    scores: np.ndarray | Iterable[float],
    labels: np.ndarray | Iterable,
    p_targets: Iterable[float] = DEFAULT_P_TARGETS,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
    calibrated: bool = False,
    method: str = "auto",
) -> Metrics:
    """EER and minDCF at every ``p_targets`` from ONE sort and one streaming pass; with
    ``calibrated`` the scores are taken as LLRs and actDCF (same priors) and Cllr are added.
    ``method`` picks the sort route (see :func:`operating_points`; results are identical)."""
    p_targets = tuple(float(p) for p in p_targets)
    for p in p_targets:
        _dcf_norm(p, c_miss, c_fa)
    srt = _SortedScores(scores, labels, method)
    scan = _scan(srt, p_targets, c_miss, c_fa)
    eer, eer_thr = _eer_from_pair(srt, scan.eer_pair)
    min_dcf = {p: (value, srt.threshold(pos)) for p, (value, pos) in scan.min_dcf.items()}
    act = cllr = None
    if calibrated:
        act = {p: compute_act_dcf(scores, labels, p, c_miss, c_fa) for p in p_targets}
        cllr = compute_cllr(scores, labels)
    return Metrics(eer, eer_thr, min_dcf, scan.n_targets, scan.n_nontargets, act, cllr)


def format_metrics(m: Metrics) -> str:
    """A small aligned text table of the metrics (EER in %)."""
    rows = [("trials", f"{m.n_targets} target / {m.n_nontargets} non-target"),
            ("EER", f"{100 * m.eer:.3f}%  (threshold {m.eer_threshold:.6g})")]
    for p, (value, thr) in m.min_dcf.items():
        rows.append((f"minDCF@{p:g}", f"{value:.4f}  (threshold {thr:.6g})"))
    if m.act_dcf is not None:
        for p, value in m.act_dcf.items():
            rows.append((f"actDCF@{p:g}", f"{value:.4f}"))
    if m.cllr is not None:
        rows.append(("Cllr", f"{m.cllr:.4f} bits"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def evaluate_score_file(
    scores: str,
    trials: str | None = None,
    det: str | None = None,
    hist: str | None = None,
    calibrated: bool = False,
    p_targets: Iterable[float] = DEFAULT_P_TARGETS,
) -> Metrics:
    """The ``speakerid eval`` command: metrics of a score file (labels from its 4th column or
    from ``trials``), optionally writing the DET curve and the score histogram (PNG)."""
    from speakerid.scoring.trials import read_labelled_scores

    sl = read_labelled_scores(scores, trials)
    try:
        m = compute_metrics(sl.scores, sl.labels, p_targets, calibrated=calibrated)
    except MetricsError as e:
        raise MetricsError(f"{scores}: {e}") from None
    if det or hist:
        from speakerid.scoring import plots

        if det:
            plots.plot_det(sl.scores, sl.labels, det, p_targets=p_targets)
        if hist:
            plots.plot_score_histogram(sl.scores, sl.labels, hist)
    return m
