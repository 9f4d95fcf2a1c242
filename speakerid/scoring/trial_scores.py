"""Scoring of a trial list by a scoring backend (cosine, S-/AS-norm, PLDA), optionally after mean subtraction.

Vectorised: trial ids are mapped to the UNIQUE enroll/test ids with ``np.unique``, those to
embedding rows with a sort + ``np.searchsorted`` (:func:`lookup_ids`); the unique embeddings are
mean-subtracted and length-normalised once, and the backend (:mod:`speakerid.scoring.backend`)
scores the trials from them in chunks (bounded memory, no Python loop per trial).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speakerid.limits import shorten
from speakerid.scoring.embeddings import MissingIdsError, load_embeddings, lookup_ids, missing_ids
from speakerid.scoring.backend import BACKENDS, BackendResources, build_backend, unit_vectors
from speakerid.scoring.norm import DEFAULT_TOP_K
from speakerid.scoring.trials import ScoreList, TrialList, read_trial_list, write_scores

__all__ = ["EmbeddingTable", "factorise", "length_normalise", "score_trials", "score_files", "scoring_name"]

logger = logging.getLogger(__name__)

OLD_NORM_NAMES = {"none": "cosine"}  # ``--norm none`` (the option's spelling before scoring backends)


@dataclass(frozen=True)
class EmbeddingTable:
    """Embeddings with their ids (numpy str array) and where they came from (for errors)."""

    ids: np.ndarray
    emb: np.ndarray
    source: str = "<memory>"

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EmbeddingTable":
        ids, emb = load_embeddings(path)
        return cls(np.asarray(ids), emb, str(path))

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Embeddings of ``ids`` (raises MissingIdsError naming the missing ones)."""
        return self.emb[lookup_ids(self.ids, ids, self.source)]


def length_normalise(emb: np.ndarray, mean: np.ndarray | None = None, source: str = "embeddings") -> np.ndarray:
    """``(emb - mean) / ||emb - mean||`` row-wise, float32 (a new array); zero rows are an error naming ``source``."""
    x = np.array(emb, dtype=np.float32, copy=True)
    if mean is not None:
        x -= np.asarray(mean, dtype=np.float32)
    zero = np.linalg.norm(x, axis=1) == 0
    if zero.any():
        raise ValueError(f"{source}: {int(zero.sum())} embedding(s) have zero length (after mean subtraction)")
    return unit_vectors(x)


def scoring_name(name: str) -> str:
    """A scoring backend's name (``"none"``, the old ``--norm`` spelling, means ``"cosine"``); unknown names are errors."""
    name = OLD_NORM_NAMES.get(name, name)
    if name not in BACKENDS:
        raise ValueError(f"unknown scoring backend {name!r}; choose from {', '.join(BACKENDS)}")
    return name


def factorise(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique ids, index of each id in them) - like ``np.unique(ids, return_inverse=True)``.

    Hash-based ``np.unique_values`` (numpy >= 2) plus a ``searchsorted`` of the trial ids in
    the few thousand unique ones avoids argsorting a million strings (about 1.5x faster here,
    and no sorted copy of the id array).
    """
    ids = np.asarray(ids)
    unique_values = getattr(np, "unique_values", None)
    if unique_values is None:  # numpy < 2
        uniq, inverse = np.unique(ids, return_inverse=True)
        return uniq, inverse.ravel()
    uniq = np.sort(unique_values(ids))
    return uniq, np.searchsorted(uniq, ids)


def _check_ids(enroll: np.ndarray, enroll_table: EmbeddingTable, test: np.ndarray, test_table: EmbeddingTable) -> None:
    """One error listing ALL trial ids without an embedding (enroll and test together)."""
    parts = []
    if enroll_table is test_table:
        groups = [(np.union1d(enroll, test), test_table)]
    else:
        groups = [(enroll, enroll_table), (test, test_table)]
    total = 0
    for wanted, table in groups:
        missing = missing_ids(table.ids, wanted)
        if missing.size:
            total += missing.size
            parts.append(f"{table.source}: no embedding for {missing.size} of {wanted.size} id(s), e.g. "
                         + shorten(", ".join(missing[:5].tolist()), 240))
    if parts:
        raise MissingIdsError(f"{total} trial id(s) have no embedding: " + "; ".join(parts))


def score_trials(
    enroll_ids: np.ndarray,
    test_ids: np.ndarray,
    embeddings: EmbeddingTable,
    enroll_embeddings: EmbeddingTable | None = None,
    cohort: np.ndarray | None = None,
    scoring: str = "cosine",
    top_k: int = DEFAULT_TOP_K,
    mean: np.ndarray | None = None,
    plda: str | os.PathLike | None = None,
) -> np.ndarray:
    """Scores (float64) of the trials ``enroll_ids[i]`` vs ``test_ids[i]`` by the backend ``scoring``.

    Enroll ids are looked up in ``enroll_embeddings`` (default: ``embeddings``), test ids in
    ``embeddings``. ``mean`` is subtracted from every embedding (enroll, test and cohort)
    before length normalisation. ``snorm``/``asnorm`` need ``cohort`` [C, D] raw embeddings
    (``top_k`` applies to AS-norm); ``plda`` needs the ``plda.npz`` file of ``speakerid train-plda``.
    """
    scoring = scoring_name(scoring)
    enroll_table = enroll_embeddings or embeddings
    uniq_e, e_index = factorise(enroll_ids)
    uniq_t, t_index = factorise(test_ids)
    _check_ids(uniq_e, enroll_table, uniq_t, embeddings)
    e_emb = length_normalise(enroll_table.rows(uniq_e), mean, enroll_table.source)
    t_emb = length_normalise(embeddings.rows(uniq_t), mean, embeddings.source)
    if e_emb.shape[1] != t_emb.shape[1]:
        raise ValueError(
            f"enroll embeddings ({enroll_table.source}) have dimension {e_emb.shape[1]}, "
            f"test embeddings ({embeddings.source}) {t_emb.shape[1]}"
        )
    cohort_n = None if cohort is None else length_normalise(cohort, mean, "cohort")
    if cohort_n is not None and cohort_n.shape[1] != e_emb.shape[1]:
        raise ValueError(f"cohort embeddings have dimension {cohort_n.shape[1]}, trials {e_emb.shape[1]}")
    files = {} if plda is None else {"plda.npz": Path(plda)}
    backend = build_backend(scoring, BackendResources(cohort=cohort_n, files=files, top_k=top_k, source="--" + scoring))
    logger.info("scoring %d trials (%s): %d enroll x %d test embeddings", e_index.size, scoring, uniq_e.size, uniq_t.size)
    return backend.score_pairs(e_emb, t_emb, e_index, t_index)


def score_files(
    trials: str | os.PathLike,
    embeddings: str | os.PathLike,
    output: str | os.PathLike,
    enroll_embeddings: str | os.PathLike | None = None,
    cohort: str | os.PathLike | None = None,
    scoring: str = "cosine",
    top_k: int = DEFAULT_TOP_K,
    subtract_mean: str | os.PathLike | None = None,
    plda: str | os.PathLike | None = None,
) -> ScoreList:
    """The ``speakerid score`` command: trial list + embedding files -> score file (atomic).

    ``subtract_mean`` is an embedding file whose mean vector (e.g. of training embeddings) is
    subtracted from all embeddings. The score file keeps the trial order and, for labelled
    lists, the label column.
    """
    scoring = scoring_name(scoring)
    if cohort is not None and not BACKENDS[scoring].uses_cohort:
        logger.warning("a cohort was given but scoring is %s: the cohort is not used", scoring)
    trial_list: TrialList = read_trial_list(trials)
    table = EmbeddingTable.load(embeddings)
    enroll_table = EmbeddingTable.load(enroll_embeddings) if enroll_embeddings else None
    mean = None
    if subtract_mean is not None:
        _, mean_src = load_embeddings(subtract_mean)
        mean = mean_src.mean(axis=0, dtype=np.float64).astype(np.float32)
    cohort_emb = load_embeddings(cohort)[1] if (cohort is not None and BACKENDS[scoring].uses_cohort) else None
    scores = score_trials(trial_list.enroll, trial_list.test, table, enroll_table, cohort_emb, scoring, top_k, mean, plda)
    write_scores(output, trial_list.enroll, trial_list.test, scores, trial_list.labels)
    logger.info("%s: %d scores written (scoring=%s)", Path(output), scores.size, scoring)
    return ScoreList(trial_list.enroll, trial_list.test, scores, trial_list.labels, str(output))
