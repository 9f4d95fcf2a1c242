"""Score normalisation against a cohort: S-norm and adaptive S-norm (AS-norm).

S-norm (symmetric normalisation; Kenny 2010, "Bayesian speaker verification with heavy-tailed
priors", Odyssey) and its adaptive variant AS-norm (Cumani et al. 2011, "Comparison of speaker
recognition approaches for real applications", Interspeech; "AS-Norm1" in Matejka et al. 2017,
"Analysis of score normalization in multilingual speaker recognition", Interspeech, eq. 3):

    s' = 1/2 * ( (s - mu_e) / sigma_e  +  (s - mu_t) / sigma_t )

where mu_e, sigma_e are the mean and standard deviation (ddof=0) of the scores of the enroll
embedding against the cohort, and mu_t, sigma_t the same for the test embedding. S-norm uses
the whole cohort; AS-norm only the ``top_k`` highest cohort scores of each side.

CSLS (cross-domain similarity local scaling; Conneau et al. 2018, "Word translation without
parallel data", ICLR, section 2.3: ``CSLS(x, y) = 2 cos(x, y) - r(x) - r(y)``, r the mean cosine
to the k nearest neighbours) keeps AS-norm's adaptive means and drops its division:

    s' = s - 1/2 * (mu_e + mu_t)        (half of CSLS; mu over the ``top_k`` highest cohort scores)

It removes the part of a score that says how much each side resembles everybody (a channel or
a short clip raises every score of a file) without rescaling by sigma, which top-k scores of a
small cohort estimate poorly: on the default model's dev split it lowered the pooled EER without
raising minDCF, where AS-norm raised it (``benchmarks/results_scoring.md``).

Vectorised over the whole trial list: the statistics are computed ONCE per unique enroll /
test embedding (cohort scores in row chunks of at most ~64 MiB, top-k by ``np.partition``,
the values-only twin of ``np.argpartition``: the indices are never needed), then gathered per
trial. Nothing here loops over trials.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["NORM_METHODS", "DEFAULT_TOP_K", "cohort_statistics", "normalise_scores"]

logger = logging.getLogger(__name__)

NORM_METHODS = ("none", "snorm", "asnorm", "csls")
DEFAULT_TOP_K = 300
_CHUNK_BYTES = 64 * 2**20


def cohort_statistics(
    emb: np.ndarray, cohort: np.ndarray, top_k: int | None = None, chunk_rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (float64, ddof=0) of each row's cosine scores against the cohort.

    ``emb`` [U, D] and ``cohort`` [C, D] must already be length-normalised (dot = cosine).
    ``top_k`` None (or >= C) uses all C cohort scores; otherwise the top_k highest.
    """
    n_cohort = cohort.shape[0]
    if emb.ndim != 2 or cohort.ndim != 2 or emb.shape[1] != cohort.shape[1]:
        raise ValueError(f"embedding dimension {emb.shape} does not match cohort {cohort.shape}")
    k = n_cohort if top_k is None else min(int(top_k), n_cohort)
    if k < 2:
        raise ValueError(f"top_k must be >= 2 (a std of one score is 0), got {top_k}")
    rows = chunk_rows or max(1, _CHUNK_BYTES // (4 * n_cohort))
    mean = np.empty(emb.shape[0], dtype=np.float64)
    std = np.empty(emb.shape[0], dtype=np.float64)
    cohort_t = np.ascontiguousarray(cohort.T)
    for start in range(0, emb.shape[0], rows):
        block = emb[start : start + rows] @ cohort_t  # [rows, C] float32
        if k < n_cohort:
            block = np.partition(block, n_cohort - k, axis=1)[:, n_cohort - k :]
        mean[start : start + rows] = block.mean(axis=1, dtype=np.float64)
        std[start : start + rows] = block.std(axis=1, dtype=np.float64)
    flat = std <= 0
    if flat.any():
        raise ValueError(
            f"{int(flat.sum())} embedding(s) have identical scores against all {k} cohort "
            "scores used (zero spread); use a larger or more varied cohort"
        )
    return mean, std


def normalise_scores(
    scores: np.ndarray,
    enroll_emb: np.ndarray,
    test_emb: np.ndarray,
    enroll_index: np.ndarray,
    test_index: np.ndarray,
    cohort: np.ndarray,
    method: str = "asnorm",
    top_k: int = DEFAULT_TOP_K,
) -> np.ndarray:
    """S-norm / AS-norm / CSLS of trial ``scores`` (float64 result; "none" returns them as float64).

    ``enroll_emb`` [Ue, D] / ``test_emb`` [Ut, D] are the length-normalised UNIQUE embeddings;
    trial i compares ``enroll_emb[enroll_index[i]]`` with ``test_emb[test_index[i]]``.
    """
    if method not in NORM_METHODS:
        raise ValueError(f"unknown score normalisation {method!r}; choose from {', '.join(NORM_METHODS)}")
    scores = np.asarray(scores, dtype=np.float64)
    if method == "none":
        return scores
    k = None if method == "snorm" else int(top_k)
    if k is not None and k > cohort.shape[0]:
        logger.warning("top-k %d > cohort size %d: %s uses the whole cohort", k, cohort.shape[0], method)
    mu_e, sd_e = cohort_statistics(enroll_emb, cohort, k)
    mu_t, sd_t = cohort_statistics(test_emb, cohort, k)
    if method == "csls":
        return scores - 0.5 * (mu_e[enroll_index] + mu_t[test_index])
    out = (scores - mu_e[enroll_index]) / sd_e[enroll_index]
    out += (scores - mu_t[test_index]) / sd_t[test_index]
    out *= 0.5
    return out
