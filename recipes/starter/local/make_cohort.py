#!/usr/bin/env python3
"""AS-norm cohort of speaker-mean embeddings of the training speakers.

    python recipes/starter/local/make_cohort.py exp/starter/emb_train data/speech_trim/train/utt2spk exp/starter/cohort.npz

Each row is the length-normalised mean of a training speaker's length-normalised utterance
embeddings; at most ``--max-speakers`` speakers (those with the most utterances first, ties by
id), so the shipped file stays small. Written as ``.npz`` with ``ids`` and ``embeddings``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from speakerid.data.datadir import read_kv  # noqa: E402
from speakerid.scoring.embeddings import load_embeddings, save_embeddings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("embeddings", type=Path)
    p.add_argument("utt2spk", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--max-speakers", type=int, default=400)
    a = p.parse_args(argv)
    ids, emb = load_embeddings(a.embeddings)
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    utt2spk = read_kv(a.utt2spk)
    rows: dict[str, list[int]] = {}
    for i, u in enumerate(ids):
        if u in utt2spk:
            rows.setdefault(utt2spk[u], []).append(i)
    speakers = sorted(rows, key=lambda s: (-len(rows[s]), s))[: a.max_speakers]
    speakers.sort()
    means = np.stack([emb[rows[s]].mean(axis=0) for s in speakers])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    save_embeddings(a.out, speakers, means.astype(np.float32))
    print(f"{a.out}: {len(speakers)} speaker means of {sum(len(rows[s]) for s in speakers)} utterances")
    return 0


if __name__ == "__main__":
    sys.exit(main())
