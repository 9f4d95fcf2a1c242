"""DET curve and score histogram as PNG files.

DET curve (Martin et al. 1997, "The DET curve in assessment of detection task performance",
Eurospeech): P_miss against P_fa on normal-deviate (probit) axes, ``scipy.stats.norm.ppf``,
where the score distributions of a Gaussian system plot as straight lines. The EER point and
the minDCF operating points are marked. matplotlib is imported lazily and used through its
object API with the Agg canvas, so plotting never touches a display or the global backend.
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np

from speakerid.fileio import atomic_path
from speakerid.scoring.metrics import DEFAULT_P_TARGETS, eer_point, min_dcf_point, operating_points

__all__ = ["plot_det", "plot_score_histogram", "det_points"]

_TICKS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.5, 0.6, 0.8, 0.9, 0.95, 0.99)
_MAX_PLOT_POINTS_PER_UNIT = 400  # thinning resolution in probit units


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def det_points(p_fa: np.ndarray, p_miss: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Probit coordinates of a DET curve, rates clipped to [floor, 1-floor] and thinned to
    the points that move the curve by a visible amount (millions of trials -> thousands)."""
    x = _probit(np.clip(p_fa, floor, 1 - floor))
    y = _probit(np.clip(p_miss, floor, 1 - floor))
    qx = np.round(x * _MAX_PLOT_POINTS_PER_UNIT)
    qy = np.round(y * _MAX_PLOT_POINTS_PER_UNIT)
    keep = np.ones(x.size, dtype=bool)
    keep[1:] = (qx[1:] != qx[:-1]) | (qy[1:] != qy[:-1])
    keep[-1] = True
    return x[keep], y[keep]


def _probit(p: np.ndarray | float) -> np.ndarray:
    from scipy.stats import norm

    return norm.ppf(p)


def plot_det(
    scores: np.ndarray,
    labels: np.ndarray,
    path: str | os.PathLike,
    title: str | None = None,
    p_targets: Iterable[float] = DEFAULT_P_TARGETS,
) -> None:
    """Write the DET curve of ``scores`` with the EER and minDCF points marked to ``path``."""
    op = operating_points(scores, labels)
    eer, _ = eer_point(op)
    p_fa, p_miss = op.p_fa, op.p_miss
    floor = 0.5 / max(op.n_targets, op.n_nontargets)
    lo = max(t for t in _TICKS if t <= max(floor, _TICKS[0]))
    marks = [(p, *min_dcf_point(op, p)) for p in p_targets]
    # widen the axes so that every marked operating point is on the plot (a minDCF point at a
    # low P_target often sits at a miss rate above 50%)
    reach = max([0.5 if eer < 0.2 else 0.99] + [max(p_fa[k], p_miss[k]) for _, _, k in marks])
    hi = min([t for t in _TICKS if t >= reach] or [0.99])
    x, y = det_points(p_fa, p_miss, lo / 2)

    fig = _new_figure(5.5, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(x, y, color="C0", lw=1.5, label="DET")
    e = float(_probit(max(eer, lo / 2)))
    ax.plot([e], [e], "o", color="C3", label=f"EER {100 * eer:.2f}%")
    for i, (p, value, k) in enumerate(marks):
        px, py = _probit(np.clip([p_fa[k], p_miss[k]], lo, hi))
        ax.plot([px], [py], "s^Dv"[i % 4], color=f"C{i + 1}", label=f"minDCF(P_tar={p:g}) {value:.4f}")
    lim = _probit(np.array([lo, hi]))
    ax.plot(lim, lim, ":", color="gray", lw=0.8)
    ticks: list[float] = []
    for t in (t for t in _TICKS if lo <= t <= hi):  # skip ticks whose labels would overlap
        if not ticks or _probit(t) - _probit(ticks[-1]) > 0.22 or t == hi:
            ticks.append(t)
    tick_pos = _probit(np.array(ticks))
    tick_lab = [f"{100 * t:g}" for t in ticks]
    ax.set_xticks(tick_pos, tick_lab)
    ax.set_yticks(tick_pos, tick_lab)
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_xlabel("false alarm rate (%)")
    ax.set_ylabel("miss rate (%)")
    ax.set_title(title or f"DET: {op.n_targets} target / {op.n_nontargets} non-target trials")
    ax.grid(True, lw=0.4, alpha=0.6)
    ax.legend(loc="upper right", fontsize=8)
    _save(fig, path)


def plot_score_histogram(
    scores: np.ndarray, labels: np.ndarray, path: str | os.PathLike, title: str | None = None, bins: int = 100
) -> None:
    """Write overlaid target / non-target score histograms (densities) with the EER threshold."""
    op = operating_points(scores, labels)  # validates as the metrics do
    _, eer_thr = eer_point(op)
    s = np.asarray(scores, dtype=np.float64)
    lab = np.asarray(labels).astype(bool)
    lo, hi = np.percentile(s, [0.05, 99.95])
    if hi <= lo:
        lo, hi = float(s.min()) - 0.5, float(s.max()) + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    fig = _new_figure(6.5, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for mask, name, colour in ((~lab, "non-target", "C0"), (lab, "target", "C1")):
        ax.hist(np.clip(s[mask], lo, hi), bins=edges, density=True, alpha=0.55, color=colour,
                label=f"{name} ({int(mask.sum())})")
    ax.axvline(eer_thr, color="k", ls="--", lw=1, label=f"EER threshold {eer_thr:.4g}")
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    ax.set_title(title or "score distributions")
    ax.legend(fontsize=8)
    _save(fig, path)
