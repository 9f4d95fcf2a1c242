"""How a test embedding is scored against a speaker's enrolment embeddings: the score rules.

``mean``: cosine with the unit mean of the references; ``max``: the best reference; ``topk``:
the mean of the ``k`` best. Every pair is scored by cosine and, when the decision uses another
scoring backend (:mod:`speakerid.scoring.backend`: AS-norm with the model's cohort, the top
:data:`COHORT_TOP_K` cohort scores per side unless the cohort names its own; CSLS; PLDA), by that backend too; the rule then applies to
each kind of score. Vectorised over all trials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from speakerid.enroll.records import SpeakerDBError
from speakerid.scoring.backend import ScoringBackend, rowwise_dot, unit_vectors
from speakerid.scoring.norm import DEFAULT_TOP_K

SCORE_RULES = ("mean", "max", "topk")
DEFAULT_SCORE_RULE = "mean"
DEFAULT_SCORE_TOP_K = 2
COHORT_TOP_K = DEFAULT_TOP_K  # a model's cohort.npz may name its own (its ``top_k``)


@dataclass
class Scores:
    """Raw scores of trials (float64 arrays or floats): ``cosine`` always, and ``backend`` of the
    scoring backend ``kind`` when that is not cosine."""

    cosine: np.ndarray
    kind: str = "cosine"
    backend: np.ndarray | None = None

    def of(self, kind: str) -> np.ndarray:
        if kind == "cosine":
            return self.cosine
        if kind != self.kind or self.backend is None:
            raise SpeakerDBError(f"no {kind} scores were computed (scored with {self.kind})")
        return self.backend

    @property
    def asnorm(self) -> np.ndarray | None:
        """The AS-norm scores when the backend is AS-norm, else None (the field speaker DB results report)."""
        return self.backend if self.kind == "asnorm" else None


def score_pairs(refs: Sequence[np.ndarray], tests: np.ndarray, spk_idx: np.ndarray, test_idx: np.ndarray,
                rule: str, k: int, backend: "ScoringBackend | None" = None) -> Scores:
    """Trial ``i`` scores speaker ``refs[spk_idx[i]]`` (``[N_s, D]`` unit rows) against ``tests[test_idx[i]]``.

    ``mean``: one vector per speaker (unit mean of the references); ``max`` / ``topk``: every
    reference is scored (and AS-normalised), then the best one / the mean of the ``k`` best."""
    if rule not in SCORE_RULES:
        raise SpeakerDBError(f"unknown score rule {rule!r}; choose from {', '.join(SCORE_RULES)}")
    spk_idx, test_idx = np.asarray(spk_idx, dtype=np.int64), np.asarray(test_idx, dtype=np.int64)
    if rule == "mean":
        vecs = unit_vectors(np.stack([r.mean(axis=0) for r in refs]))
        counts = np.ones(len(refs), dtype=np.int64)
    else:
        vecs = np.concatenate(refs)
        counts = np.array([r.shape[0] for r in refs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    per_trial = counts[spk_idx]
    pair_trial = np.repeat(np.arange(spk_idx.size), per_trial)
    pair_vec = offsets[spk_idx][pair_trial] + (np.arange(pair_trial.size) - np.repeat(np.cumsum(per_trial) - per_trial, per_trial))
    pair_test = test_idx[pair_trial]
    tests32 = np.asarray(tests, dtype=np.float32)
    vecs64, tests64 = vecs.astype(np.float64), tests32.astype(np.float64)
    cos = rowwise_dot(vecs64, tests64, pair_vec, pair_test)
    if backend is None or backend.name == "cosine":
        return Scores(_reduce(cos, per_trial, rule, k))
    other = backend.score_pairs(vecs64, tests64, pair_vec, pair_test)
    return Scores(_reduce(cos, per_trial, rule, k), backend.name, _reduce(other, per_trial, rule, k))


def _reduce(pair_scores: np.ndarray, per_trial: np.ndarray, rule: str, k: int) -> np.ndarray:
    """Per trial: the scores of its contiguous group of pairs -> one score by ``rule``."""
    if rule == "mean":
        return pair_scores
    width = int(per_trial.max())
    table = np.full((per_trial.size, width), -np.inf)
    col = np.arange(pair_scores.size) - np.repeat(np.cumsum(per_trial) - per_trial, per_trial)
    table[np.repeat(np.arange(per_trial.size), per_trial), col] = pair_scores
    table = -np.sort(-table, axis=1)
    if rule == "max":
        return table[:, 0]
    take = np.minimum(per_trial, k)
    mask = np.arange(width)[None, :] < take[:, None]
    return np.where(mask, table, 0.0).sum(axis=1) / take
