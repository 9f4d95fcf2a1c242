"""Verification metrics: EER, minDCF, actDCF and Cllr, exact under tied scores.

Conventions (docs/ARCHITECTURE.md, "Definitions")
--------------------------------------------------
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

from speakerid.scoring.sorting import SORT_BLOCK, MetricsError, SortedScores, validate_scores


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
    _sorted: SortedScores = field(repr=False)

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
    srt = SortedScores(scores, labels, method)
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


def _scan(srt: SortedScores, p_targets: tuple[float, ...], c_miss: float, c_fa: float, block: int = SORT_BLOCK) -> _ScanResult:
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


def _eer_from_pair(srt: SortedScores, pair: tuple[tuple[int, int, int], tuple[int, int, int]]) -> tuple[float, float]:
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
    s, lab = validate_scores(llrs, labels)
    norm = _dcf_norm(p_target, c_miss, c_fa)
    accept = s >= bayes_threshold(p_target, c_miss, c_fa)
    n_t = int(np.count_nonzero(lab))
    p_miss = np.count_nonzero(lab & ~accept) / n_t
    p_fa = np.count_nonzero(~lab & accept) / (s.size - n_t)
    return float((c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa) / norm)


def compute_cllr(llrs: np.ndarray | Iterable[float], labels: np.ndarray | Iterable) -> float:
    """Cllr in bits (Brümmer & du Preez 2006, eq. 11); 1.0 = a system that always says LLR 0."""
    s, lab = validate_scores(llrs, labels)
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
    srt = SortedScores(scores, labels, method)
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
