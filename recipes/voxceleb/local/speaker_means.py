#!/usr/bin/env python3
"""Speaker-mean embeddings of a data dir: the AS-norm cohort of the VoxCeleb recipe.

Each utterance embedding is length-normalised, the unit vectors of a speaker are averaged,
and the mean is written with the speaker id as its id (``.npz`` or ``.scp`` by extension).
As WeSpeaker's cohort of VoxCeleb2-dev speaker means (Matejka et al., Interspeech 2017,
"Analysis of score normalization in multilingual speaker recognition", for AS-norm).

usage: python local/speaker_means.py DATA_DIR EMBEDDINGS OUT
  e.g. python local/speaker_means.py data/vox2_dev exp/resnet34/emb_vox2_dev exp/resnet34/cohort.npz
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from speakerid.data.datadir import read_data_dir
from speakerid.scoring.embeddings import load_embeddings, save_embeddings
from speakerid.scoring.trials import normalise_id


def speaker_means(utt2spk: dict[str, str], ids: list[str], emb: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(speakers, mean of the unit-length embeddings of each speaker's utterances)."""
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    spk_of = {normalise_id(u): s for u, s in utt2spk.items()}
    missing = [i for i in ids if i not in spk_of]
    if missing:
        raise ValueError(f"{len(missing)} embedding id(s) have no speaker in utt2spk, e.g. {missing[:3]}")
    speakers = sorted(set(spk_of[i] for i in ids))
    index = {s: k for k, s in enumerate(speakers)}
    rows = np.array([index[spk_of[i]] for i in ids])
    sums = np.zeros((len(speakers), emb.shape[1]), dtype=np.float64)
    np.add.at(sums, rows, unit)
    counts = np.bincount(rows, minlength=len(speakers))[:, None]
    return speakers, (sums / counts).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("embeddings")
    p.add_argument("out")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        ids, emb = load_embeddings(a.embeddings)
        speakers, means = speaker_means(read_data_dir(a.data_dir).utt2spk, ids, emb)
        save_embeddings(a.out, speakers, means)
    except (ValueError, OSError) as e:
        print(f"speaker_means.py: error: {e}", file=sys.stderr)
        return 2
    print(f"{len(speakers)} speaker means of {len(ids)} embeddings -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
