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
networks numpy uses for plain keys), so :func:`operating_points` sorts ONE packed int64 array
instead: each score becomes an order-preserving integer key with the label in the lowest bit
(see :func:`_packed_keys`). One ``np.sort`` then yields scores and labels together, ties end
up adjacent, and EER and every minDCF come from the same cumulative counts. When the scores
cannot be packed losslessly the code sorts targets and non-targets separately and merges
them (:func:`_sort_by_merge`; same results, a little slower);
``tests/test_scoring_metrics.py`` checks both routes against each other and against a
brute-force loop over thresholds, and ``benchmarks/bench_scoring.py`` times them.
"""

from __future__ import annotations

import bisect
import math
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable

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
# sorting: packed keys (fast path), sorted merge (fallback) or plain argsort (reference)


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


def _packed_keys(
    s: np.ndarray, lab: np.ndarray, s32: np.ndarray | None
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]] | None:
    """One int64/uint64 array ``key << 1 | label`` whose sorted order is the score order.

    The trick: sorting this array with ``np.sort`` (fast SIMD sort, no index array) sorts the
    scores and carries the labels along in the lowest bit; equal scores have equal ``key`` so
    they stay adjacent and are grouped exactly. The key must be exact, which needs a free bit:
    * float32-representable scores (cosine scores of float32 embeddings): the 32-bit sortable
      key shifted into an int64 always fits;
    * other float64 scores: the 64-bit sortable key minus its minimum fits in 63 bits when the
      scores span less than half of the float64 key space (e.g. all scores inside (-1, 1)).
    Otherwise None (the caller falls back to :func:`_sort_by_merge`). Returns (packed, decode) where
    ``decode(sorted_packed_values)`` gives the float scores back. ``s32`` is
    ``_as_float32_exact(s)``.
    """
    label_bits = lab.view(np.uint8)
    if s32 is not None:
        s32 = s32 + np.float32(0.0)  # -0.0 -> +0.0: equal floats must get equal keys
        key = _sortable_int(s32.view(np.int32), _MASK31).astype(np.int64)
        key <<= 1
        key |= label_bits

        def decode32(p: np.ndarray) -> np.ndarray:
            k = (np.asarray(p, dtype=np.int64) >> 1).astype(np.int32)
            return _sortable_int(k, _MASK31).view(np.float32).astype(np.float64)

        return key, decode32

    s64 = s + 0.0
    key = _sortable_int(s64.view(np.int64), _MASK63)
    kmin, kmax = int(key.min()), int(key.max())
    if kmax - kmin >= 2**63:
        return None
    key -= np.int64(kmin)  # now in [0, 2**63): one bit free at the top
    packed = key.view(np.uint64)
    packed <<= np.uint64(1)
    packed |= label_bits

    def decode64(p: np.ndarray) -> np.ndarray:
        k = (np.asarray(p, dtype=np.uint64) >> np.uint64(1)).view(np.int64) + np.int64(kmin)
        return _sortable_int(k, _MASK63).view(np.float64)

    return packed, decode64


def _sort_by_merge(s: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted scores and their labels for scores that cannot be packed (exact for any float).

    Sorting targets and non-targets separately with ``np.sort`` costs less than one sort of
    everything; a stable argsort of the two concatenated sorted runs is then a single linear
    merge (timsort finds the runs), still ~2x cheaper than ``np.argsort`` of the raw scores.
    The label of a merged element is simply whether it came from the first run.
    """
    tar = np.sort(s[lab])
    merged = np.concatenate([tar, np.sort(s[~lab])])
    order = np.argsort(merged, kind="stable")
    return merged[order], order < tar.size


# --------------------------------------------------------------------------------------
# operating points


@dataclass(frozen=True)
class OperatingPoints:
    """All operating points of a score list, from one sort.

    Point ``k`` (0..m, m = number of distinct scores) accepts the scores ``>= v_k`` where
    ``v_0 < v_1 < ...`` are the distinct scores; point m rejects everything.
    ``targets_below[k]`` (misses) and ``nontargets_below[k]`` (correct rejections) are exact
    integer counts.
    """

    n_targets: int
    n_nontargets: int
    targets_below: np.ndarray
    nontargets_below: np.ndarray
    _positions: np.ndarray = field(repr=False)  # sorted position of v_k for k < m
    _sorted_at: Callable[[np.ndarray], np.ndarray] = field(repr=False)  # positions -> scores
    _float32: bool = field(default=False, repr=False)  # scores are float32 values

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
        """Threshold of point(s) ``k`` (all points when None); the reject-all point gets the
        next float above the highest score, so ``score >= threshold`` holds for no trial."""
        m = self._positions.size
        ks = np.arange(m + 1) if k is None else np.asarray(k)
        flat = np.atleast_1d(ks)
        out = np.empty(flat.shape, dtype=np.float64)
        inner = flat < m
        out[inner] = self._sorted_at(self._positions[flat[inner]])
        if not inner.all():
            # next float above the top score in the scores' own precision, so that the
            # comparison also rejects it when made in float32
            top = self._sorted_at(self._positions[-1:])[0]
            ftype = np.float32 if self._float32 else np.float64
            out[~inner] = np.nextafter(ftype(top), ftype(np.inf))
        return out if (k is None or np.ndim(ks)) else float(out[0])


SORT_METHODS = ("auto", "packed", "merge", "argsort")


def operating_points(
    scores: np.ndarray | Iterable[float], labels: np.ndarray | Iterable, method: str = "auto"
) -> OperatingPoints:
    """Sort once and count targets / non-targets below every distinct score value.

    ``method``: "auto" (packed keys when lossless, else merge), or force "packed" (error if
    the scores cannot be packed), "merge" or "argsort" (the plain reference route). All give
    identical results; they differ only in speed.
    """
    if method not in SORT_METHODS:
        raise MetricsError(f"unknown sort method {method!r}; choose from {', '.join(SORT_METHODS)}")
    s, lab = _validate(scores, labels)
    n = s.size
    s32 = _as_float32_exact(s)
    packed = _packed_keys(s, lab, s32) if method in ("auto", "packed") else None
    if method == "packed" and packed is None:
        raise MetricsError("these scores cannot be packed losslessly into 64-bit keys")
    if packed is not None:
        arr, decode = packed
        arr.sort()
        # label = lowest bit; on little-endian machines it is the first byte of each element,
        # a strided uint8 view reads it without building another 8-byte array
        if sys.byteorder == "little":
            lab_sorted = arr.view(np.uint8)[:: arr.itemsize] & np.uint8(1)
        else:
            lab_sorted = (arr & arr.dtype.type(1)).astype(np.uint8)
        grp = arr >> arr.dtype.type(1)
        boundaries = np.flatnonzero(grp[1:] != grp[:-1])
        del grp

        def sorted_at(p: np.ndarray) -> np.ndarray:
            return decode(arr[p])

    else:
        if method == "argsort":
            order = np.argsort(s)
            s_sorted, lab_sorted = s[order], lab[order]
            del order
        else:
            s_sorted, lab_sorted = _sort_by_merge(s, lab)
        boundaries = np.flatnonzero(s_sorted[1:] != s_sorted[:-1])

        def sorted_at(p: np.ndarray) -> np.ndarray:
            return s_sorted[p].astype(np.float64)

    count_dtype = np.int32 if n < 2**31 - 1 else np.int64
    cum = np.cumsum(lab_sorted, dtype=count_dtype)  # cum[i] = targets among the i+1 lowest
    n_t = int(cum[-1])
    targets_below = np.empty(boundaries.size + 2, dtype=np.int64)
    targets_below[0] = 0
    targets_below[1:-1] = cum[boundaries]
    targets_below[-1] = n_t
    del cum
    positions = np.empty(boundaries.size + 1, dtype=np.int64)  # start of each tie group
    positions[0] = 0
    np.add(boundaries, 1, out=positions[1:])
    nontargets_below = np.empty_like(targets_below)
    np.subtract(positions, targets_below[:-1], out=nontargets_below[:-1])
    nontargets_below[-1] = n - n_t
    return OperatingPoints(n_t, n - n_t, targets_below, nontargets_below, positions, sorted_at, s32 is not None)


# --------------------------------------------------------------------------------------
# EER and DCF from operating points


def eer_point(op: OperatingPoints) -> tuple[float, float]:
    """EER and its (interpolated) threshold from precomputed operating points."""
    return _eer_from_points(op)


def _eer_from_points(op: OperatingPoints) -> tuple[float, float]:
    """EER and its threshold: the first point where P_miss >= P_fa and the one before it.

    P_miss - P_fa is non-decreasing in k; in integers it is >= 0 iff
    ``tb*N_n + nb*N_t >= N_t*N_n``, so the straddling pair is found exactly by bisection.
    """
    nt, nn = op.n_targets, op.n_nontargets
    tb, nb = op.targets_below, op.nontargets_below
    k = bisect.bisect_left(range(op.num_points), nt * nn, key=lambda i: int(tb[i]) * nn + int(nb[i]) * nt)
    # k >= 1 because point 0 has P_miss = 0 < P_fa = 1; k <= m because the last point has P_miss = 1
    pm0, pf0 = tb[k - 1] / nt, (nn - nb[k - 1]) / nn
    pm1, pf1 = tb[k] / nt, (nn - nb[k]) / nn
    gap0, gap1 = pf0 - pm0, pm1 - pf1  # gap0 > 0, gap1 >= 0
    alpha = gap0 / (gap0 + gap1)
    eer = pm0 + alpha * (pm1 - pm0)
    t0, t1 = op.thresholds(np.array([k - 1, k]))
    return float(eer), float(t0 + alpha * (t1 - t0))


def _dcf_norm(p_target: float, c_miss: float, c_fa: float) -> float:
    if not 0.0 < p_target < 1.0:
        raise MetricsError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise MetricsError(f"costs must be positive, got c_miss={c_miss}, c_fa={c_fa}")
    return min(c_miss * p_target, c_fa * (1.0 - p_target))


def _min_dcf_from_points(op: OperatingPoints, p_target: float, c_miss: float, c_fa: float) -> tuple[float, float]:
    value, k = min_dcf_point(op, p_target, c_miss, c_fa)
    return value, float(op.thresholds(k))


def min_dcf_point(op: OperatingPoints, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0) -> tuple[float, int]:
    """Normalised minDCF and the index of the operating point attaining it (lowest on ties)."""
    norm = _dcf_norm(p_target, c_miss, c_fa)
    w_miss = c_miss * p_target / op.n_targets / norm
    w_fa = c_fa * (1.0 - p_target) / op.n_nontargets / norm
    # cost_k = w_miss*tb + w_fa*(N_n - nb); the constant is added after the argmin
    cost = op.targets_below * w_miss
    cost -= op.nontargets_below * w_fa
    k = int(np.argmin(cost))
    value = float(cost[k] + w_fa * op.n_nontargets)
    return max(value, 0.0), k


# --------------------------------------------------------------------------------------
# public API


def compute_eer(scores: np.ndarray | Iterable[float], labels: np.ndarray | Iterable) -> tuple[float, float]:
    """Equal error rate (a fraction, not %) and its threshold. See the module docstring."""
    return _eer_from_points(operating_points(scores, labels))


def compute_min_dcf(
    scores: np.ndarray | Iterable[float],
    labels: np.ndarray | Iterable,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> tuple[float, float]:
    """Normalised minimum detection cost and the threshold that attains it (lowest one on ties)."""
    _dcf_norm(p_target, c_miss, c_fa)
    return _min_dcf_from_points(operating_points(scores, labels), p_target, c_miss, c_fa)


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
) -> Metrics:
    """EER and minDCF at every ``p_targets`` from ONE sort; with ``calibrated`` the scores are
    taken as LLRs and actDCF (same priors) and Cllr are added."""
    p_targets = tuple(float(p) for p in p_targets)
    for p in p_targets:
        _dcf_norm(p, c_miss, c_fa)
    op = operating_points(scores, labels)
    eer, eer_thr = _eer_from_points(op)
    min_dcf = {p: _min_dcf_from_points(op, p, c_miss, c_fa) for p in p_targets}
    act = cllr = None
    if calibrated:
        act = {p: compute_act_dcf(scores, labels, p, c_miss, c_fa) for p in p_targets}
        cllr = compute_cllr(scores, labels)
    return Metrics(eer, eer_thr, min_dcf, op.n_targets, op.n_nontargets, act, cllr)


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
