"""How a test embedding is scored against a speaker's enrolment embeddings: the score rules.

``mean``: cosine with the unit mean of the references; ``max``: the best reference; ``topk``:
the mean of the ``k`` best. With an AS-norm cohort each scored vector is also AS-normalised
(:func:`speakerid.scoring.norm.normalise_scores`, the top :data:`COHORT_TOP_K` cohort scores
per side), then the rule applies to the normalised scores. Vectorised over all trials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from speakerid.enroll_db import SpeakerDBError

SCORE_RULES = ("mean", "max", "topk")
DEFAULT_SCORE_RULE = "mean"
DEFAULT_SCORE_TOP_K = 2
COHORT_TOP_K = 300


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class Scores:
    """Raw scores of trials: ``cosine`` and, with a cohort, ``asnorm`` (float64 arrays or floats)."""

    cosine: np.ndarray
    asnorm: np.ndarray | None = None

    def of(self, kind: str) -> np.ndarray:
        return self.asnorm if kind == "asnorm" else self.cosine


def score_pairs(refs: Sequence[np.ndarray], tests: np.ndarray, spk_idx: np.ndarray, test_idx: np.ndarray,
                rule: str, k: int, cohort: np.ndarray | None) -> Scores:
    """Trial ``i`` scores speaker ``refs[spk_idx[i]]`` (``[N_s, D]`` unit rows) against ``tests[test_idx[i]]``.

    ``mean``: one vector per speaker (unit mean of the references); ``max`` / ``topk``: every
    reference is scored (and AS-normalised), then the best one / the mean of the ``k`` best."""
    from speakerid.scoring.norm import normalise_scores

    if rule not in SCORE_RULES:
        raise SpeakerDBError(f"unknown score rule {rule!r}; choose from {', '.join(SCORE_RULES)}")
    spk_idx, test_idx = np.asarray(spk_idx, dtype=np.int64), np.asarray(test_idx, dtype=np.int64)
    if rule == "mean":
        vecs = _unit(np.stack([r.mean(axis=0) for r in refs]))
        counts = np.ones(len(refs), dtype=np.int64)
    else:
        vecs = np.concatenate(refs)
        counts = np.array([r.shape[0] for r in refs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    per_trial = counts[spk_idx]
    pair_trial = np.repeat(np.arange(spk_idx.size), per_trial)
    pair_vec = offsets[spk_idx][pair_trial] + (np.arange(pair_trial.size) - np.repeat(np.cumsum(per_trial) - per_trial, per_trial))
    pair_test = test_idx[pair_trial]
    vecs32, tests32 = vecs.astype(np.float32), np.asarray(tests, dtype=np.float32)
    cos = np.einsum("ij,ij->i", vecs.astype(np.float64)[pair_vec], tests32.astype(np.float64)[pair_test])
    asn = None
    if cohort is not None:
        asn = normalise_scores(cos, vecs32, tests32, pair_vec, pair_test, cohort, "asnorm", min(COHORT_TOP_K, cohort.shape[0]))
    return Scores(*(None if x is None else _reduce(x, per_trial, rule, k) for x in (cos, asn)))


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
