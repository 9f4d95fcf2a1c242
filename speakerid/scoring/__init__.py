"""Scoring: trial lists, embeddings, cosine scoring, S-/AS-norm, metrics, calibration, plots.

numpy / scipy / scikit-learn / kaldiio / matplotlib only: nothing here imports torch, so
scoring runs on machines without it. scikit-learn and matplotlib are imported lazily.
"""

from speakerid.scoring.metrics import (
    compute_act_dcf,
    compute_cllr,
    compute_eer,
    compute_metrics,
    compute_min_dcf,
)
from speakerid.scoring.trials import read_scores, read_trials, write_scores

__all__ = [
    "compute_act_dcf",
    "compute_cllr",
    "compute_eer",
    "compute_metrics",
    "compute_min_dcf",
    "read_scores",
    "read_trials",
    "write_scores",
]
