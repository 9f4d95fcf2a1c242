#!/usr/bin/env python3
"""Speaker-disjoint train/dev split of ../shared/data/speech for the starter model.

Whole speakers are held out of every corpus (prefix of the speaker id before ``_``). Only the
corpora whose licences allow a shipped model (``--train-corpora``: CC0 / CC BY / MIT) give
training speakers; the research-only corpora (``--eval-corpora``, RAVDESS and FSDD) are dev
only, all their speakers. Dev trials are balanced and made per corpus (non-target pairs stay
within one corpus, since across corpora the channel alone gives the answer away), at most
``--trials-per-corpus`` each, deterministic from ``--seed``.

    python recipes/starter/local/make_split.py /work/shared/data/speech data/speech --seed 0

Writes OUT/train (data dir) and OUT/dev (data dir + ``trials`` in Kaldi form), and prints the
speaker / utterance / trial counts per corpus (also written to OUT/split_summary.txt).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from data_prep.common import SkipReport, make_trials, staged_dir, write_trials_kaldi  # noqa: E402
from data_prep.folder import scan_folder  # noqa: E402
from speakerid.data.datadir import write_data_dir  # noqa: E402

TRAIN_CORPORA = "libri,cvfa,speechocean762,speechcommands,dspspeech20"
EVAL_CORPORA = "ravdess,fsdd"


def corpus_of(speaker: str) -> str:
    """The corpus a speaker id belongs to: its prefix before the first ``_``."""
    return speaker.split("_", 1)[0]


def split_corpus(speakers: list[str], spk2utt: dict[str, list[str]], fraction: float, min_dev: int, seed: int, corpus: str) -> tuple[list[str], list[str]]:
    """(train, dev) speakers of one corpus; dev drawn among speakers with >= 2 utterances."""
    candidates = sorted(s for s in speakers if len(spk2utt[s]) >= 2)
    n_dev = min(len(candidates), max(min_dev, round(fraction * len(candidates)))) if candidates else 0
    rng = np.random.default_rng([seed, sum(map(ord, corpus))])
    dev = sorted(candidates[i] for i in rng.permutation(len(candidates))[:n_dev])
    return sorted(set(speakers) - set(dev)), dev


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="folder-per-speaker tree (speech/<corpus>_<id>/<utt>.flac)")
    p.add_argument("out", type=Path)
    p.add_argument("--train-corpora", default=TRAIN_CORPORA, help=f"corpora that may train (default {TRAIN_CORPORA})")
    p.add_argument("--eval-corpora", default=EVAL_CORPORA, help=f"dev-only corpora, all speakers (default {EVAL_CORPORA})")
    p.add_argument("--dev-fraction", type=float, default=0.15, help="held-out fraction of a training corpus's speakers")
    p.add_argument("--min-dev-speakers", type=int, default=6, help="at least this many dev speakers per corpus")
    p.add_argument("--trials-per-corpus", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace a non-empty output")
    a = p.parse_args(argv)
    train_c = [c for c in a.train_corpora.split(",") if c]
    eval_c = [c for c in a.eval_corpora.split(",") if c]
    if set(train_c) & set(eval_c):
        p.error("a corpus cannot be both --train-corpora and --eval-corpora")
    skipped = SkipReport()
    wav, utt2spk, utt2dur, _ = scan_folder(a.root, [".wav", ".flac", ".mp3"], skipped)
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    by_corpus: dict[str, list[str]] = {}
    for spk in sorted(spk2utt):
        by_corpus.setdefault(corpus_of(spk), []).append(spk)
    train_spk: list[str] = []
    dev_spk: list[str] = []
    trials: list = []
    lines = ["corpus           role   train_spk train_utt dev_spk dev_utt trials(target/non)"]
    for corpus in sorted(by_corpus):
        speakers = by_corpus[corpus]
        if corpus in eval_c:
            tr, dv = [], speakers
        elif corpus in train_c:
            tr, dv = split_corpus(speakers, spk2utt, a.dev_fraction, a.min_dev_speakers, a.seed, corpus)
        else:
            continue
        n_target = n_non = 0
        if len(dv) >= 2:
            t, stats = make_trials({s: spk2utt[s] for s in dv}, a.trials_per_corpus, a.seed)
            trials += t
            n_target, n_non = stats.target, stats.nontarget
        train_spk += tr
        dev_spk += dv
        role = "dev" if corpus in eval_c else "train"
        lines.append(
            f"{corpus:16s} {role:6s} {len(tr):9d} {sum(len(spk2utt[s]) for s in tr):9d} {len(dv):7d}"
            f" {sum(len(spk2utt[s]) for s in dv):7d} {n_target}/{n_non}"
        )
    with staged_dir(a.out, a.force, inputs=[a.root]) as stage:
        for name, speakers in (("train", train_spk), ("dev", dev_spk)):
            keep = {u for s in speakers for u in spk2utt[s]}
            write_data_dir(
                stage / name,
                {u: wav[u] for u in sorted(keep)},
                {u: utt2spk[u] for u in sorted(keep)},
                {u: utt2dur[u] for u in sorted(keep)},
            )
        write_trials_kaldi(stage / "dev" / "trials", trials)
        (stage / "split_summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
