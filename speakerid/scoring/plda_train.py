"""``speakerid train-plda``: an embeddings file with speaker labels -> ``plda.npz`` in an experiment dir.

The embeddings (utterance ids, e.g. ``speakerid extract`` of a training data dir) are length-
normalised first, as every scoring backend's inputs are (:mod:`speakerid.scoring.backend`); the
labels come from a Kaldi ``utt2spk``. Speakers with one utterance still inform the PLDA through
their means (:mod:`speakerid.scoring.plda`). The file then serves ``--scoring plda`` of
``speakerid score`` (``--plda FILE``) and, inside a model dir, of ``enroll`` / ``verify`` /
``identify``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from speakerid.limits import shorten
from speakerid.scoring.backend import unit_vectors
from speakerid.scoring.embeddings import load_embeddings, lookup_ids
from speakerid.scoring.plda import DEFAULT_ITERS, PLDA

logger = logging.getLogger(__name__)


def read_utt2spk(path: str | os.PathLike) -> dict[str, str]:
    """``utt spk`` lines -> {utt: spk}; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read utt2spk ({getattr(e, 'strerror', None) or e})") from None
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: expected 'utterance speaker', got {shorten(line, 120)!r}")
        out[parts[0]] = parts[1]
    if not out:
        raise ValueError(f"{path}: no 'utterance speaker' lines")
    return out


def train_plda(embeddings: str | os.PathLike, utt2spk: str | os.PathLike, out: str | os.PathLike,
               lda_dim: int | None = None, iters: int = DEFAULT_ITERS) -> dict:
    """Fit PLDA on the embeddings of every utterance ``utt2spk`` lists and write ``out`` (atomically).

    Returns a summary: utterances, speakers, speakers with 2+ utterances, dimensions."""
    ids, emb = load_embeddings(embeddings)
    labels = read_utt2spk(utt2spk)
    utts = np.array(sorted(labels))
    rows = lookup_ids(np.asarray(ids), utts, str(embeddings))  # every labelled utterance must have an embedding
    x = unit_vectors(np.asarray(emb, dtype=np.float64)[rows])
    spk = np.array([labels[u] for u in utts])
    try:
        plda = PLDA.fit(x, spk, lda_dim=lda_dim, iters=iters)
    except ValueError as e:
        raise ValueError(f"{embeddings}: {e}") from None
    plda.save(out)
    counts = np.unique(spk, return_counts=True)[1]
    summary = {"utterances": int(x.shape[0]), "speakers": int(counts.size), "speakers_2plus": int((counts >= 2).sum()),
               "dim": int(x.shape[1]), "plda_dim": plda.plda_dim, "out": str(out)}
    logger.info("%s: PLDA of %d utterances, %d speakers (%d with 2+), dimension %d -> %d", out, summary["utterances"],
                summary["speakers"], summary["speakers_2plus"], summary["dim"], summary["plda_dim"])
    return summary
