#!/usr/bin/env python3
"""How much speech a test clip needs: dev EER when the test side holds only D seconds of speech.

    python benchmarks/bench_min_speech.py --model campplus --data recipes/pretrained/data/speech/dev \
        --enroll-embeddings recipes/pretrained/exp/campplus_fp16/emb_dev --out benchmarks/results_min_speech.md

Dev trials of the corpora with long clips (RAVDESS, Common Voice Persian, speechocean762) whose
test clip holds at least ``max(--seconds)`` of speech after :func:`speakerid.features.vad.trim_silence`
(at most ``--max-tests`` test clips, the first by id); the test side is cut to its first D seconds
of speech, the enrolment side is the whole clip (``--enroll-embeddings``, ``speakerid extract``
output of the same model). Cosine EER per D, pooled and per corpus; the same trials for every D.
Since cosine is symmetric, the figures also say what one enrolment clip of D seconds gives.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speakerid.audio import load_audio  # noqa: E402
from speakerid.data.datadir import read_data_dir  # noqa: E402
from speakerid.inference import SegmentPolicy, embed_waves, load_experiment
from speakerid.experiment import resolve_model_source
from speakerid.scoring.embeddings import load_embeddings, lookup_ids  # noqa: E402
from speakerid.scoring.metrics import compute_eer  # noqa: E402
from speakerid.scoring.trials import read_trials  # noqa: E402
from speakerid.features.vad import trim_silence  # noqa: E402

CORPORA = ("ravdess", "cvfa", "speechocean762")


def unit_vectors(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="campplus")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--enroll-embeddings", type=Path, required=True)
    p.add_argument("--seconds", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0])
    p.add_argument("--max-tests", type=int, default=300)
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    t0 = time.time()
    torch.set_num_threads(1)
    data = read_data_dir(a.data)
    trials = [t for t in read_trials(a.data / "trials") if t[0].split("_", 1)[0] in CORPORA]
    extractor, _ = load_experiment(resolve_model_source(a.model))
    sr = int(extractor.sample_rate)
    need = max(a.seconds)
    speech: dict[str, torch.Tensor] = {}
    for utt in sorted({t[1] for t in trials}):
        if len(speech) >= a.max_tests:
            break
        s = trim_silence(load_audio(data.wav[utt], sr)[0], sr)
        if s.numel() >= need * sr:
            speech[utt] = s
    trials = [t for t in trials if t[1] in speech]
    lab = np.array([bool(t[2]) for t in trials])
    corpus = np.array([t[0].split("_", 1)[0] for t in trials])
    ids, emb = load_embeddings(a.enroll_embeddings)
    enroll = unit_vectors(emb)[lookup_ids(ids, np.array([t[0] for t in trials]))]
    tests = sorted(speech)
    rows = []
    for d in a.seconds:
        with torch.no_grad():
            e = embed_waves(extractor, [speech[u][: int(d * sr)] for u in tests], SegmentPolicy()).numpy()
        e = unit_vectors(e)[lookup_ids(tests, np.array([t[1] for t in trials]))]
        s = np.einsum("ij,ij->i", enroll, e)
        rows.append((d, compute_eer(s, lab)[0], {c: compute_eer(s[corpus == c], lab[corpus == c])[0]
                                                 for c in CORPORA if (corpus == c).any()}))
    names = list(rows[0][2])
    lines = [f"Test side cut to D s of speech; {len(trials)} trials ({int(lab.sum())} target), {len(tests)} test clips "
             f"with >= {need:g} s of speech; model {a.model}, cosine, 1 thread.", "",
             "| D (s) | pooled EER | " + " | ".join(names) + " |", "|" + "---|" * (2 + len(names))]
    lines += [f"| {d:g} | {eer * 100:.2f}% | " + " | ".join(f"{per[c] * 100:.2f}%" for c in names) + " |" for d, eer, per in rows]
    text = "\n".join(lines) + f"\n\n_{time.time() - t0:.0f} s wall._\n"
    print(text)
    if a.out:
        cmd = " ".join(sys.argv[1:] if argv is None else argv)
        a.out.write_text(f"# `python benchmarks/{Path(__file__).name} {cmd}`\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
