"""The ``speakerid eval`` job: metrics of a score file, optionally its DET curve and histogram.

Kept apart from :mod:`speakerid.scoring.metrics` so that metrics and plots do not import
each other (plots uses metrics' operating points; this module uses both).
"""

from __future__ import annotations

from typing import Iterable

from speakerid.scoring import plots
from speakerid.scoring.metrics import DEFAULT_P_TARGETS, Metrics, compute_metrics
from speakerid.scoring.sorting import MetricsError
from speakerid.scoring.labelled_scores import read_labelled_scores


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
    sl = read_labelled_scores(scores, trials)
    try:
        m = compute_metrics(sl.scores, sl.labels, p_targets, calibrated=calibrated)
    except MetricsError as e:
        raise MetricsError(f"{scores}: {e}") from None
    if det or hist:
        if det:
            plots.plot_det(sl.scores, sl.labels, det, p_targets=p_targets)
        if hist:
            plots.plot_score_histogram(sl.scores, sl.labels, hist)
    return m
