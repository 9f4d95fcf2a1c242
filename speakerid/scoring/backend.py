"""Scoring backends: how an enrolment and a test embedding become one raw score.

One interface for every path that scores: trial lists (``speakerid score``,
:mod:`speakerid.scoring.trial_scores`), the speaker DB's verify / identify (:mod:`speakerid.enroll.rules`)
and calibration (a ``calibration.json`` names the backend its map was fitted on). A backend
scores pairs of rows of two matrices of length-normalised embeddings; the registry
:data:`BACKENDS` maps a name to its class, and a class builds itself from
:class:`BackendResources` (the cohort, the experiment dir or explicit files), so adding a
backend is one class and one registry entry (docs/ARCHITECTURE.md, "Where to add").

- ``cosine``: the dot product of unit vectors.
- ``snorm`` / ``asnorm``: the cosine, S-normalised / adaptive-S-normalised against a cohort
  (:mod:`speakerid.scoring.norm`: Kenny 2010; Cumani et al. 2011).
- ``csls``: the cosine less the mean of each side's ``top_k`` highest cohort scores (AS-norm's
  adaptive means without its division; Conneau et al. 2018's CSLS, halved).
- ``plda``: the log-likelihood ratio of a two-covariance PLDA model (:mod:`speakerid.scoring.plda`;
  Ioffe 2006), trained by ``speakerid train-plda`` and kept in the experiment dir as ``plda.npz``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from speakerid.scoring.norm import DEFAULT_TOP_K, normalise_scores

__all__ = ["BACKENDS", "BackendError", "BackendResources", "ScoringBackend", "build_backend", "rowwise_dot", "unit_vectors"]

DEFAULT_CHUNK = 1 << 16  # pairs per chunk: 2 x 65536 x D float32 gathered rows (64 MiB at D=256)


class BackendError(ValueError):
    """A backend cannot be built: unknown name, or a resource it needs is missing or bad."""


@dataclass
class BackendResources:
    """What a backend may build itself from: a cohort ``[C, D]`` (unit rows), the experiment dir
    holding the model's files, and explicit file paths by name (``{"plda.npz": path}``) that
    take precedence over the experiment dir's."""

    cohort: np.ndarray | None = None
    exp_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    top_k: int = DEFAULT_TOP_K
    source: str = "<model>"

    def file(self, name: str) -> Path | None:
        """The path of ``name`` (explicit, else in the experiment dir) when it exists, else None."""
        path = self.files.get(name) or (self.exp_dir / name if self.exp_dir is not None else None)
        return Path(path) if path is not None and Path(path).is_file() else None


def unit_vectors(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit length (same dtype; an all-zero row stays zero): the length
    normalisation every backend's inputs have had."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def rowwise_dot(a: np.ndarray, b: np.ndarray, a_index: np.ndarray, b_index: np.ndarray,
                chunk_size: int = DEFAULT_CHUNK) -> np.ndarray:
    """``sum(a[a_index[i]] * b[b_index[i]])`` for every i, float64, in chunks of pairs."""
    n = np.asarray(a_index).size
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, chunk_size):
        sl = slice(start, start + chunk_size)
        out[sl] = np.einsum("ij,ij->i", a[a_index[sl]], b[b_index[sl]])
    return out


class ScoringBackend(ABC):
    """Raw scores of pairs of length-normalised embeddings; higher means more likely the same speaker."""

    name: ClassVar[str]
    needs: ClassVar[str] = ""  # what :meth:`create` needs, for messages ("a cohort", "plda.npz")
    uses_cohort: ClassVar[bool] = False  # True: built from BackendResources.cohort

    @classmethod
    def available(cls, res: BackendResources) -> bool:
        """True when ``res`` holds what this backend needs."""
        return True

    @classmethod
    @abstractmethod
    def create(cls, res: BackendResources) -> "ScoringBackend":
        """The backend built from ``res`` (a :class:`BackendError` naming what is missing)."""

    @abstractmethod
    def score_pairs(self, enroll: np.ndarray, test: np.ndarray, e_index: np.ndarray, t_index: np.ndarray) -> np.ndarray:
        """Scores (float64) of ``enroll[e_index[i]]`` vs ``test[t_index[i]]``: ``enroll [Ue, D]`` and
        ``test [Ut, D]`` are the unit-length UNIQUE embeddings, the indices pick each pair."""

    def score(self, enroll: np.ndarray, test: np.ndarray) -> np.ndarray:
        """Scores (float64) of row-paired embeddings, ``enroll[i]`` vs ``test[i]`` (``[N, D]`` or ``[D]``
        each, made unit length here)."""
        e = unit_vectors(np.atleast_2d(np.asarray(enroll, dtype=np.float32)))
        t = unit_vectors(np.atleast_2d(np.asarray(test, dtype=np.float32)))
        if e.shape != t.shape:
            raise ValueError(f"enroll embeddings {e.shape} and test embeddings {t.shape} must pair row by row")
        rows = np.arange(e.shape[0])
        return self.score_pairs(e, t, rows, rows)


class CosineBackend(ScoringBackend):
    name = "cosine"

    @classmethod
    def create(cls, res: BackendResources) -> "CosineBackend":
        return cls()

    def score_pairs(self, enroll, test, e_index, t_index):
        return rowwise_dot(enroll, test, e_index, t_index)


class SNormBackend(ScoringBackend):
    """Cosine, then S-norm against the whole cohort."""

    name = "snorm"
    needs = "a cohort of embeddings"
    uses_cohort = True
    adaptive: ClassVar[bool] = False  # True: the top_k highest cohort scores per side, not all
    top_k: int | None = None

    def __init__(self, cohort: np.ndarray, top_k: int | None = None) -> None:
        self.cohort = np.asarray(cohort, dtype=np.float32)
        self.top_k = top_k

    @classmethod
    def available(cls, res):
        return res.cohort is not None

    @classmethod
    def create(cls, res):
        if res.cohort is None:
            raise BackendError(f"{res.source}: {cls.name} scoring needs {cls.needs} (cohort.npz or --cohort)")
        return cls(res.cohort, min(int(res.top_k), res.cohort.shape[0]) if cls.adaptive else None)

    def score_pairs(self, enroll, test, e_index, t_index):
        cos = rowwise_dot(enroll, test, e_index, t_index)
        return normalise_scores(cos, np.asarray(enroll, np.float32), np.asarray(test, np.float32), e_index, t_index,
                                self.cohort, self.name, self.top_k or self.cohort.shape[0])


class ASNormBackend(SNormBackend):
    """Cosine, then AS-norm against the ``top_k`` highest cohort scores of each side."""

    name = "asnorm"
    adaptive = True


class CSLSBackend(SNormBackend):
    """Cosine less half the sum of each side's mean ``top_k`` cohort score (CSLS / 2)."""

    name = "csls"
    adaptive = True


class PLDABackend(ScoringBackend):
    """The PLDA log-likelihood ratio (:class:`speakerid.scoring.plda.PLDA`, from ``plda.npz``)."""

    name = "plda"
    needs = "plda.npz (speakerid train-plda)"
    FILE = "plda.npz"

    def __init__(self, plda) -> None:
        self.plda = plda

    @classmethod
    def available(cls, res):
        return res.file(cls.FILE) is not None

    @classmethod
    def create(cls, res):
        from speakerid.scoring.plda import PLDA

        path = res.file(cls.FILE)
        if path is None:
            raise BackendError(f"{res.source}: plda scoring needs {cls.needs}: no {cls.FILE} there")
        try:
            return cls(PLDA.load(path))
        except ValueError as e:
            raise BackendError(str(e)) from None

    def score_pairs(self, enroll, test, e_index, t_index):
        return self.plda.score_pairs(enroll, test, np.asarray(e_index), np.asarray(t_index))


BACKENDS: dict[str, type[ScoringBackend]] = {
    b.name: b for b in (CosineBackend, SNormBackend, ASNormBackend, CSLSBackend, PLDABackend)
}


def build_backend(name: str, res: BackendResources) -> ScoringBackend:
    """The backend ``name`` of :data:`BACKENDS` built from ``res``."""
    if name not in BACKENDS:
        raise BackendError(f"unknown scoring backend {name!r}; choose from {', '.join(BACKENDS)}")
    return BACKENDS[name].create(res)


def default_backend_name(calibrated: str | None, has_cohort: bool) -> str:
    """The backend a model scores with when nothing names one: the one its calibration was fitted on
    (``calibrated``), else AS-norm with a cohort, else cosine."""
    if calibrated is not None:
        return calibrated
    return "asnorm" if has_cohort else "cosine"

