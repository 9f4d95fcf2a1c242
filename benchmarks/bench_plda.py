#!/usr/bin/env python3
"""PLDA against cosine and AS-norm on the speaker-disjoint dev split, per corpus and pooled, in one run.

PLDA (``speakerid.scoring.plda``: centring, optional LDA, length normalisation to sqrt(d),
two-covariance model by Kaldi's EM, 10 iterations) is trained on the embeddings of the TRAIN
split of the same model; cosine and AS-norm (top 300) are ``benchmarks/bench_starter.py``'s
``score``. EER and minDCF (P_target 0.01) per corpus and pooled, one PLDA column per LDA dim.

Reproduce (from the repo root; the dev / train split, dev embeddings and cohort are the pretrained
recipe's: ``bash recipes/pretrained/run.sh --stage 0 --stop-stage 3``, of which only the starter and
campplus_fp16 dev embeddings and the cohort are read here)::

    D=recipes/pretrained
    OMP_NUM_THREADS=1 python -m speakerid extract --model campplus --data $D/data/speech/train \
        --out /tmp/plda/campplus_train --format npz --threads 1 --no-progress
    OMP_NUM_THREADS=1 python -m speakerid extract --model starter --data $D/data/speech/train \
        --out /tmp/plda/starter_train --format npz --threads 1 --no-progress
    python benchmarks/bench_plda.py --data $D/data/speech/dev --train-data $D/data/speech/train \
        --system starter=$D/exp/starter/emb_dev --train starter=/tmp/plda/starter_train \
        --cohort starter=speakerid/pretrained/starter/cohort.npz \
        --system campplus_fp16=$D/exp/campplus_fp16/emb_dev --train campplus_fp16=/tmp/plda/campplus_train \
        --cohort campplus_fp16=$D/exp/campplus_fp16/cohort_candidate.npz \
        --lda-dims none,128,64 --multi-only --out benchmarks/results_plda.md

(``--model campplus`` is the packaged default, CAM++ fp16: the same model.pt as
``exp/campplus_fp16``.) Every system is scored on the same trials.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_starter import dev_trials, load_systems, score  # noqa: E402

from speakerid.data.datadir import read_data_dir  # noqa: E402
from speakerid.scoring.embeddings import load_embeddings, lookup_ids  # noqa: E402
from speakerid.scoring.metrics import compute_metrics  # noqa: E402
from speakerid.scoring.plda import DEFAULT_ITERS, PLDA  # noqa: E402


def plda_scores(model: PLDA, ids: list[str], emb: np.ndarray, trials: list) -> np.ndarray:
    """PLDA LLRs of the trials: every dev utterance transformed once, one [U, U] LLR matrix, gathered."""
    e = lookup_ids(ids, np.array([t[0] for t in trials]))
    t = lookup_ids(ids, np.array([t[1] for t in trials]))
    used = np.union1d(e, t)
    pos = np.searchsorted(used, [e, t])
    u = model.transform(emb[used])
    return model.llr(u, u)[pos[0], pos[1]]


def metrics(s: np.ndarray, lab: np.ndarray, corpus: np.ndarray) -> dict:
    out = {}
    for c in ["pooled", *sorted(set(corpus))]:
        m = slice(None) if c == "pooled" else corpus == c
        met = compute_metrics(s[m], lab[m], p_targets=(0.01,))
        out[c] = {"eer": met.eer, "min_dcf_0.01": met.min_dcf[0.01][0],
                  "n_target": int(lab[m].sum()), "n_nontarget": int((~lab[m]).sum())}
    return out


def train_model(train_emb: str, utt2spk: dict[str, str], lda_dim: int | None, iters: int, multi_only: bool) -> PLDA:
    """PLDA on a system's train-split embeddings (``multi_only``: speakers with 2+ utterances only)."""
    ids, emb = load_embeddings(train_emb)
    missing = [i for i in ids if i not in utt2spk]
    if missing:
        raise SystemExit(f"{train_emb}: {len(missing)} utterance(s) not in the train utt2spk, e.g. {missing[0]}")
    labels = np.array([utt2spk[i] for i in ids])
    if multi_only:
        _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        keep = counts[inverse.ravel()] >= 2
        emb, labels = emb[keep], labels[keep]
    return PLDA.fit(emb, labels, lda_dim=lda_dim, iters=iters)


def table(results: dict[str, dict[str, dict]]) -> str:
    lines = []
    for system, columns in results.items():
        names = list(columns)
        corpora = list(next(iter(columns.values())))
        lines += [f"### {system}", "", "EER / minDCF (P_target 0.01):", "",
                  "| corpus | trials (tgt/non) | " + " | ".join(names) + " |", "|" + "---|" * (2 + len(names))]
        for c in corpora:
            r0 = columns[names[0]][c]
            cells = [f"{columns[n][c]['eer'] * 100:.2f}% / {columns[n][c]['min_dcf_0.01']:.3f}" for n in names]
            lines.append(f"| {c} | {r0['n_target']}/{r0['n_nontarget']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="dev data dir with trials")
    p.add_argument("--train-data", type=Path, required=True, help="train data dir (utt2spk: the PLDA labels)")
    p.add_argument("--system", action="append", default=[], metavar="NAME=EMB", help="dev embeddings of a system")
    p.add_argument("--train", action="append", default=[], metavar="NAME=EMB", help="train-split embeddings of a system")
    p.add_argument("--cohort", action="append", default=[], metavar="NAME=NPZ", help="AS-norm cohort of a system")
    p.add_argument("--lda-dims", default="none,128", help="comma-separated LDA dims for PLDA ('none': no LDA)")
    p.add_argument("--iters", type=int, default=DEFAULT_ITERS, help="PLDA EM iterations")
    p.add_argument("--multi-only", action="store_true",
                   help="also PLDA trained on the speakers with 2+ utterances only (extra columns)")
    p.add_argument("--out", type=Path, help="markdown table (and the .json beside it)")
    a = p.parse_args(argv)
    t0 = time.time()
    trials, lab, corpus = dev_trials(a.data)
    systems = load_systems(a.system, a.data, Path("/nonexistent"), False)
    train = dict(spec.split("=", 1) for spec in a.train)
    cohorts = dict(spec.split("=", 1) for spec in a.cohort)
    utt2spk = dict(read_data_dir(a.train_data).utt2spk)
    lda_dims = [None if d.strip().lower() == "none" else int(d) for d in a.lda_dims.split(",")]
    results: dict[str, dict[str, dict]] = {}
    notes = []
    for name, (ids, emb) in systems.items():
        cols = results.setdefault(name, {})
        cols["cosine"] = metrics(score(ids, emb, trials, None), lab, corpus)
        if name in cohorts:
            cols["asnorm"] = metrics(score(ids, emb, trials, load_embeddings(cohorts[name])[1]), lab, corpus)
        if name not in train:
            continue
        for d in lda_dims:
            for multi_only in (False, True) if a.multi_only else (False,):
                t1 = time.time()
                model = train_model(train[name], utt2spk, d, a.iters, multi_only)
                label = f"plda (lda {d or 'none'}{', 2+ only' if multi_only else ''})"
                cols[label] = metrics(plda_scores(model, ids, emb, trials), lab, corpus)
                i = model.info
                notes.append(f"- {name}, {label} (dim {emb.shape[1]} -> {model.plda_dim}): trained on "
                             f"{i['n_utterances']} utterances of {i['n_speakers']} speakers, {i['n_speakers_multi']} "
                             f"speakers ({i['n_utterances_multi']} utterances) with 2+ utterances; {i['iters']} EM "
                             f"iterations; {time.time() - t1:.1f} s to train and score")
    text = table(results)
    text += ("\nPLDA: centring on the train-split mean, optional LDA, length normalisation to sqrt(d), "
             "two-covariance PLDA (Kaldi EM), Kaldi's length normalisation in the PLDA space, LLR scores; "
             "one-utterance speakers enter the EM through their means only (inform B + W), or are left out "
             "(\"2+ only\").\n\n")
    text += "\n".join(notes) + "\n"
    text += f"\n_{len(trials)} trials of {a.data}; {time.time() - t0:.0f} s wall._\n"
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        cmd = " ".join(sys.argv[1:] if argv is None else argv)
        a.out.write_text(f"# `python benchmarks/{Path(__file__).name} {cmd}`\n\n{text}")
        a.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
