#!/usr/bin/env python3
"""End-to-end check of the training data pipeline: one augmented batch and a picture of it.

Builds (or takes with ``--data``) a data dir of real speech, draws one batch of 32 two-second
chunks (200 frames) through ``ChunkDataset`` -> ``collate`` -> ``BatchAugment`` with additive
noise, reverb, SpecAugment and MixUp all on, prints what the batch holds, and writes a PNG of
one augmented log-mel spectrogram beside the clean chunk it came from (same crop, no
augmentation, no dither).

To make every effect visible in the one picture, the augmentations are applied with
probability 1 here (training configs use ~0.6), and MixUp's lambda ~ Beta(1, 1) (uniform;
training configs use alpha 0.2, mostly lambda near 0 or 1). Noise SNR is drawn in 0-15 dB.

    python recipes/mini/local/show_augmentation.py --out exp/aug.png
    python recipes/mini/local/show_augmentation.py --data data/train --noise-list data/noise.list \\
        --rir-list data/rir.list --out exp/aug.png
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import torch

from speakerid.config import AugmentConfig, FeatureConfig
from speakerid.data.datadir import write_data_dir
from speakerid.data.batch import BatchAugment, collate
from speakerid.data.dataset import ChunkDataset
from speakerid.data.sampler import ShuffleBatchSampler
from speakerid.fileio import atomic_path, write_text_atomic

logger = logging.getLogger("show_augmentation")

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"
BATCH = 32
CHUNK_FRAMES = 200
AUDIO_EXT = (".flac", ".wav")


def build_data_dir(speech: Path, out: Path) -> Path:
    """A data dir of 32 utterances: 2 from each RAVDESS actor (3-5 s, 16 kHz, 16 speakers)."""
    wav, utt2spk = {}, {}
    for spk_dir in sorted(speech.glob("ravdess_*")):
        files = sorted(p for p in spk_dir.iterdir() if p.suffix in AUDIO_EXT)[:2]
        for f in files:
            utt = f"{spk_dir.name}/{f.stem}"
            wav[utt], utt2spk[utt] = str(f), spk_dir.name
    if len(wav) < BATCH:
        raise SystemExit(f"{speech}: found {len(wav)} RAVDESS utterances, need {BATCH}; pass --data")
    write_data_dir(out, wav, utt2spk)
    return out


def build_list(folder: Path, out: Path, category: str | None) -> Path:
    """Noise list (``<path> <category>``) or RIR list (``<path>``) of every audio file in ``folder``."""
    files = sorted(p for p in folder.iterdir() if p.suffix in AUDIO_EXT)
    if not files:
        raise SystemExit(f"{folder}: no audio files")
    write_text_atomic(out, "".join(f"{p} {category}\n" if category else f"{p}\n" for p in files))
    return out


def augment_config(noise_list: Path, rir_list: Path) -> AugmentConfig:
    aug = AugmentConfig()
    aug.noise = dataclasses.replace(aug.noise, enabled=True, prob=1.0, noise_list=str(noise_list))
    aug.reverb = dataclasses.replace(aug.reverb, enabled=True, prob=1.0, rir_list=str(rir_list))
    aug.specaug = dataclasses.replace(aug.specaug, enabled=True, prob=1.0, freq_masks=2, time_masks=2)
    aug.mixup = dataclasses.replace(aug.mixup, enabled=True, prob=1.0, alpha=1.0, on="features")
    return aug


def plot(panels: list[tuple[str, torch.Tensor]], suptitle: str, out: Path) -> None:
    """Log-mel panels side by side on one colour scale (that of the first, clean, panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), sharey=True, layout="constrained")
    lo, hi = float(panels[0][1].min()), float(panels[0][1].max())
    for ax, (name, feats) in zip(axes, panels):
        im = ax.imshow(feats.T.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("frame (10 ms)")
    axes[0].set_ylabel("mel bin")
    fig.colorbar(im, ax=axes, shrink=0.9, label="log-mel after CMN")
    fig.suptitle(suptitle, fontsize=10)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="data dir with >= 32 utterances (default: built from shared RAVDESS speech)")
    ap.add_argument("--noise-list", type=Path, help="'<path> <category>' lines (default: built from shared/data/noise)")
    ap.add_argument("--rir-list", type=Path, help="one RIR path per line (default: built from shared/data/rir)")
    ap.add_argument("--out", type=Path, required=True, help="output PNG")
    ap.add_argument("--work", type=Path, help="where built data dir/lists go (default: beside --out)")
    ap.add_argument("--shared", type=Path, default=SHARED, help=f"shared data folder (default {SHARED})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--index", type=int, default=0, help="which sample of the batch to plot")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    work = args.work or args.out.parent / "show_augmentation"
    data = args.data or build_data_dir(args.shared / "speech", work / "data")
    noise_list = args.noise_list or build_list(args.shared / "noise", work / "noise.list", "noise")
    rir_list = args.rir_list or build_list(args.shared / "rir", work / "rir.list", None)

    features = FeatureConfig()
    aug = augment_config(noise_list, rir_list)
    train_ds = ChunkDataset(data, features, aug, CHUNK_FRAMES, seed=args.seed)
    clean_ds = ChunkDataset(data, features, AugmentConfig(), CHUNK_FRAMES, seed=args.seed, train=False)
    sampler = ShuffleBatchSampler(len(train_ds), BATCH, seed=args.seed)
    keys = next(iter(sampler))
    batch = collate([train_ds[k] for k in keys])
    wave_augmented = batch["feats"].clone()  # noise + reverb + dither, before the batch step
    batch = BatchAugment(aug, features, seed=args.seed)(batch)

    i = args.index
    print(f"batch feats {tuple(batch['feats'].shape)}  utts {len(batch['utts'])}  lam {batch['lam']:.3f}")
    print(f"labels   {batch['labels'].tolist()}")
    print(f"labels_b {batch['labels_b'].tolist()}")
    clean = clean_ds[keys[i]]["feats"]  # same (seed, epoch, pos): the same crop, unaugmented
    panels = [
        ("clean chunk (no augmentation, no dither)", clean),
        ("+ noise + reverb (chunk level)", wave_augmented[i]),
        (f"+ SpecAugment + MixUp (lam={batch['lam']:.2f}, other label {int(batch['labels_b'][i])})", batch["feats"][i]),
    ]
    plot(panels, f"{batch['utts'][i]}  ({BATCH} x {CHUNK_FRAMES}-frame chunks, seed {args.seed})", args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
