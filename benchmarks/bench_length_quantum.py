#!/usr/bin/env python3
"""Does the segment policy's 10-frame length quantum matter? Dev EER per corpus, embedding
change and extraction time with the quantum (10 frames: at most 99 ms of trailing audio
dropped, equal-length batches) against exact lengths (1 frame: only the sub-frame remainder
Kaldi's fbank drops anyway, batches only of equal frame counts), in one run.

    python benchmarks/bench_length_quantum.py --data recipes/pretrained/data/speech/dev \
        --model campplus --out benchmarks/results_length_quantum.md

(``--data``: the speaker-disjoint dev split that ``bash recipes/pretrained/run.sh --stage 2
--stop-stage 2`` writes; ``--max-utts N`` takes the first N utterances per corpus.) Each policy
embeds every utterance of ``--data`` through :func:`speakerid.inference.embed_waves` (the rule every
path uses) in batches of 16 after sorting by duration, as ``speakerid extract`` does. Audio is read
once, before timing. Threads: torch's default (the machine's cores).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_starter import dev_trials, score  # noqa: E402

from speakerid.audio import load_audio  # noqa: E402
from speakerid.data.datadir import read_data_dir  # noqa: E402
from speakerid.inference import embed_waves, load_model  # noqa: E402
from speakerid.scoring.metrics import compute_metrics  # noqa: E402


def embed_all(model, waves, quantum: int, rounds: int) -> tuple[np.ndarray, float]:
    """(embeddings [N, D] in input order, median seconds of ``rounds`` passes)."""
    policy = dataclasses.replace(model.policy, length_quantum_frames=quantum)
    order = np.argsort([-w.numel() for w in waves], kind="stable")
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        emb = embed_waves(model.extractor, [waves[i] for i in order], policy, batch_size=16).numpy()
        times.append(time.perf_counter() - t0)
    out = np.empty_like(emb)
    out[order] = emb
    return out, float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="dev data dir (wav.scp, trials)")
    p.add_argument("--model", default="campplus", help="model source (default: the packaged campplus)")
    p.add_argument("--max-utts", type=int, default=0, help="first N utterances per corpus (0: all)")
    p.add_argument("--rounds", type=int, default=1, help="timed passes per policy (median)")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    trials, lab, corpus = dev_trials(a.data)
    wav = dict(read_data_dir(a.data).wav)
    ids = sorted(wav)
    if a.max_utts:
        per: dict[str, int] = {}
        keep = []
        for u in ids:
            c = u.split("_", 1)[0]
            per[c] = per.get(c, 0) + 1
            if per[c] <= a.max_utts:
                keep.append(u)
        ids = keep
        kept = set(ids)
        m = np.array([e in kept and t in kept for e, t, _ in trials])
        trials, lab, corpus = [t for t, k in zip(trials, m) if k], lab[m], corpus[m]
    model = load_model(a.model)
    waves = [load_audio(wav[u], model.sample_rate)[0] for u in ids]
    seconds = np.array([w.numel() / model.sample_rate for w in waves])
    embed_waves(model.extractor, waves[:16], model.policy, batch_size=16)  # warm-up, untimed
    rows = {}
    embs = {}
    for q in (10, 1):
        emb, took = embed_all(model, waves, q, a.rounds)
        embs[q] = emb
        s = score(ids, emb, trials, None)
        rows[q] = {"time": took, "corpora": {}}
        for c in ["pooled", *sorted(set(corpus))]:
            msk = np.ones_like(lab) if c == "pooled" else corpus == c
            if lab[msk].all() or not lab[msk].any():
                continue  # a corpus cut by --max-utts to one class of trials
            met = compute_metrics(s[msk], lab[msk], p_targets=(0.01,))
            rows[q]["corpora"][c] = (met.eer, met.min_dcf[0.01][0], int(lab[msk].sum()), int((~lab[msk]).sum()))
    u10 = embs[10] / np.linalg.norm(embs[10], axis=1, keepdims=True)
    u1 = embs[1] / np.linalg.norm(embs[1], axis=1, keepdims=True)
    change = 1.0 - np.einsum("ij,ij->i", u10, u1)
    short = seconds <= 1.0
    lines = [f"# Segment length quantum: 10 frames vs exact ({a.model}, {len(ids)} utterances of {a.data}, "
             f"{len(trials)} trials)", "",
             f"Command: `python benchmarks/bench_length_quantum.py --data {a.data} --model {a.model}"
             + (f" --max-utts {a.max_utts}" if a.max_utts else "") + "`", "",
             "| corpus | trials (tgt/non) | EER q=10 | EER exact | minDCF0.01 q=10 | minDCF0.01 exact |", "|---|---|---|---|---|---|"]
    for c, (e10, d10, nt, nn) in rows[10]["corpora"].items():
        e1, d1 = rows[1]["corpora"][c][:2]
        lines.append(f"| {c} | {nt}/{nn} | {e10*100:.2f}% | {e1*100:.2f}% | {d10:.3f} | {d1:.3f} |")
    lines += ["", f"1 - cosine(q=10 embedding, exact embedding): median {np.median(change):.2e}, max {change.max():.2e}; "
              f"clips <= 1 s ({int(short.sum())}): median {np.median(change[short]) if short.any() else float('nan'):.2e}",
              f"Embedding time (batch 16, sorted by length): q=10 {rows[10]['time']:.1f} s, exact {rows[1]['time']:.1f} s "
              f"(exact / q=10 = {rows[1]['time'] / rows[10]['time']:.2f}x)", ""]
    text = "\n".join(lines)
    print(text)
    if a.out:
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
