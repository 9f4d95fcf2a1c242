"""The records of the speaker DB: its errors, what it answers about a speaker, and the batch of
enrolment rows a write transaction adds (:mod:`speakerid.enroll.store` writes them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


class SpeakerDBError(ValueError):
    """The speaker DB cannot answer: missing/corrupt file, no threshold, bad speaker name, ..."""


class UnknownSpeakerError(SpeakerDBError):
    """The speaker is not enrolled in the DB."""


@dataclass
class SpeakerInfo:
    name: str
    num_utts: int
    created: float
    updated: float
    fingerprint: str

    def to_dict(self) -> dict:
        return {"speaker": self.name, "num_utts": self.num_utts, "created": self.created,
                "updated": self.updated, "fingerprint": self.fingerprint}


@dataclass
class SpeakerRefs:
    """A speaker's stored enrolment embeddings ``refs [N, D]`` (unit length, float64)."""

    name: str
    fingerprint: str
    refs: np.ndarray


@dataclass
class Batch:
    """Enrolment embeddings to add in one transaction: row ``i`` (``emb[i]``, unit length, file
    ``paths[i]``) belongs to speaker ``names[owner[i]]``."""

    names: list[str]
    owner: np.ndarray
    paths: list[str]
    emb: np.ndarray

    @classmethod
    def of_rows(cls, speakers: Sequence[str], paths: Sequence[str], emb: np.ndarray) -> "Batch":
        index: dict[str, int] = {}
        owner = np.fromiter((index.setdefault(s, len(index)) for s in speakers), dtype=np.int64, count=len(speakers))
        return cls(list(index), owner, list(paths), emb)

    def speaker_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """(float64 sums ``[S, D]`` of each speaker's rows, row counts ``[S]``)."""
        counts = np.bincount(self.owner, minlength=len(self.names))
        if counts.size == self.owner.size and (self.owner == np.arange(self.owner.size)).all():
            return self.emb.astype(np.float64), counts
        order = np.argsort(self.owner, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return np.add.reduceat(self.emb[order].astype(np.float64), starts, axis=0), counts


def unit_means(sums: np.ndarray, counts: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """float32 unit mean vectors of float64 sums (NaN rows where a sum is zero or not finite)."""
    out = np.empty(sums.shape, dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        for start in range(0, sums.shape[0], chunk):
            mean = sums[start : start + chunk] / np.asarray(counts[start : start + chunk], dtype=np.float64)[:, None]
            norms = np.linalg.norm(mean, axis=1, keepdims=True)
            out[start : start + chunk] = np.where(norms > 0, mean / norms, np.nan)
    return out


@dataclass
class IndexChange:
    """What a write transaction did to the speakers, for the index: unit mean vectors of the
    added or updated rowids, and the removed rowids."""

    rowids: np.ndarray
    vectors: np.ndarray
    removed: np.ndarray
    was_empty: bool
