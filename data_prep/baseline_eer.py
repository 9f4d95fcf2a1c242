#!/usr/bin/env python3
"""Untrained baseline on a data dir: cosine of mean log-mel fbank vectors, EER on trials.

A sanity check of how hard a corpus is before any training (e.g. that the synthetic corpus is
not separable from its long-term spectrum alone). The embedding of an utterance is the mean
over frames of Kaldi fbank (``torchaudio.compliance.kaldi.fbank``, 80 bins, 16 kHz, waveform
scaled by 32768), scored by cosine as it is; a variant centred by the mean of the scored
utterances is reported too (on small dev sets it is usually worse: the mean is itself
speaker-dependent, and the raw log-energies make the plain cosine robust to level).
``--train DIR`` adds a supervised linear baseline: LDA
(scikit-learn) fitted on the train dir's speakers, then cosine: if it is much better than
the untrained one, speaker identity is there to be learned.

EER: the crossing of miss and false-alarm rates, linearly interpolated (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: find data_prep.common

from data_prep.common import PrepError, make_parser, run_main, setup_logging  # noqa: E402
from speakerid.data.datadir import read_data_dir  # noqa: E402
from speakerid.scoring.trials import read_trials  # noqa: E402

log = logging.getLogger("data_prep.baseline_eer")

EXAMPLE = "python data_prep/baseline_eer.py data/synth/dev --train data/synth/train"


def mean_fbank(path: str, sample_rate: int = 16000) -> np.ndarray:
    """Mean over frames of 80-bin Kaldi fbank of one file (resampled to ``sample_rate``)."""
    import torchaudio

    from speakerid.audio import load_audio

    wave, _ = load_audio(path, sample_rate)
    feats = torchaudio.compliance.kaldi.fbank(
        wave[None] * 32768.0, num_mel_bins=80, sample_frequency=sample_rate, dither=0.0
    )
    return feats.mean(dim=0).numpy()


def embed_dir(data_dir: Path, utts: list[str] | None = None) -> tuple[list[str], np.ndarray, list[str]]:
    """(ids, mean-fbank matrix, speaker per id) of a data dir."""
    import torch

    torch.set_num_threads(1)
    dd = read_data_dir(data_dir)
    ids = utts if utts is not None else dd.utts
    emb = np.stack([mean_fbank(dd.wav[u]) for u in tqdm(ids, desc=f"fbank {data_dir.name}", leave=False)])
    return ids, emb, [dd.utt2spk[u] for u in ids]


def trial_eer(ids: list[str], emb: np.ndarray, trials: list[tuple[str, str, bool]], labels: np.ndarray) -> float:
    """EER of cosine scores of ``trials`` (the library's scorer and metric, as docs/ARCHITECTURE.md defines them)."""
    from speakerid.scoring.trial_scores import EmbeddingTable, score_trials
    from speakerid.scoring.metrics import compute_eer

    table = EmbeddingTable(np.asarray(ids), emb, "baseline embeddings")
    scores = score_trials(np.array([e for e, _, _ in trials]), np.array([t for _, t, _ in trials]), table)
    return compute_eer(scores, labels)[0]


def all_pairs(ids: list[str], speakers: list[str]) -> list[tuple[str, str, bool]]:
    return [(ids[i], ids[j], speakers[i] == speakers[j]) for i in range(len(ids)) for j in range(i + 1, len(ids))]


def baseline(data_dir: Path, trials_path: Path | None = None, train_dir: Path | None = None) -> dict[str, float]:
    """EER of the untrained mean-fbank cosine baseline (and of LDA when ``train_dir``)."""
    dd = read_data_dir(data_dir)
    if trials_path is None and (data_dir / "trials").is_file():
        trials_path = data_dir / "trials"
    if trials_path is not None:
        trials = [(e, t, bool(lab)) for e, t, lab in read_trials(trials_path) if lab is not None]
        needed = sorted({u for e, t, _ in trials for u in (e, t)})
        missing = [u for u in needed if u not in dd.wav]
        if missing:
            raise PrepError(f"{trials_path}: {len(missing)} trial ids are not in {data_dir}/wav.scp, e.g. {missing[0]}")
    else:
        needed = dd.utts
        trials = all_pairs(needed, [dd.utt2spk[u] for u in needed])
    ids, emb, _ = embed_dir(data_dir, needed)
    labels = np.array([lab for _, _, lab in trials], dtype=int)
    centred = emb - emb.mean(axis=0)
    out = {
        "trials": float(len(trials)),
        "eer_raw": trial_eer(ids, emb, trials, labels),
        "eer_centred": trial_eer(ids, centred, trials, labels),
    }
    if train_dir is not None:
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        _, train_emb, train_spk = embed_dir(train_dir)
        mu = train_emb.mean(axis=0)
        lda = LinearDiscriminantAnalysis(n_components=min(len(set(train_spk)) - 1, train_emb.shape[1]))
        lda.fit(train_emb - mu, train_spk)
        projected = lda.transform(emb - mu)
        out["eer_lda"] = trial_eer(ids, projected, trials, labels)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(
        "baseline_eer.py",
        "EER of an untrained baseline (mean log-mel fbank, cosine) on a data dir's trials "
        "(or all pairs), optionally with an LDA fitted on a train dir.",
        EXAMPLE,
    )
    parser.add_argument("data_dir", type=Path, help="data dir to score (its trials file, or all pairs)")
    parser.add_argument("--trials", type=Path, default=None, help="trial list (default <data_dir>/trials)")
    parser.add_argument("--train", type=Path, default=None, help="train data dir for the LDA baseline")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    args: argparse.Namespace = parser.parse_args(argv)
    setup_logging(args.verbose)
    res = baseline(args.data_dir, args.trials, args.train)
    line = (
        f"{int(res['trials'])} trials: mean-fbank cosine EER {100 * res['eer_raw']:.2f}% "
        f"(centred: {100 * res['eer_centred']:.2f}%)"
    )
    if "eer_lda" in res:
        line += f"; LDA on {args.train}: EER {100 * res['eer_lda']:.2f}%"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
