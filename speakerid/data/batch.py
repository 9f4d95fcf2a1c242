"""The batch step of training: stacking items (:func:`collate`) and :class:`BatchAugment`
(waveform fbank, SpecAugment, MixUp), deterministic per sample and batch."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from speakerid.augment.spec import check_mixup
from speakerid.config import AugmentConfig, FeatureConfig
from speakerid.features.kaldi import fbank_from_config

from speakerid.data.seeding import STREAM_SPECAUG, STREAM_CHUNK, batch_generator, sample_generator


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack dataset items into a batch dict.

    Keys: ``feats [B, frames, bins]`` (or ``wave [B, samples]``), ``labels [B]`` long,
    ``utts`` list of str, ``keys [B, 3]`` long (epoch, global batch, pos) and, with two
    views, ``feats_k``/``wave_k`` and ``labels_k``.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    batch: dict[str, Any] = {
        "utts": [it["utt"] for it in items],
        "labels": torch.tensor([it["label"] for it in items], dtype=torch.long),
        "keys": torch.tensor([it["key"] for it in items], dtype=torch.long),
    }
    for name in ("feats", "wave", "feats_k", "wave_k"):
        if name in items[0]:
            batch[name] = torch.stack([it[name] for it in items])
    if "label_k" in items[0]:
        batch["labels_k"] = torch.tensor([it["label_k"] for it in items], dtype=torch.long)
    return batch


class BatchAugment:
    """The batch step: [fbank of waveforms] -> SpecAugment -> MixUp, deterministic per sample/batch.

    ``__call__(batch) -> batch`` works in place on the batch's device and adds
    ``labels_a`` (= ``labels``), ``labels_b`` and ``lam`` (float; ``labels_b = labels`` and
    ``lam = 1.0`` when the batch is not mixed) for losses that take MixUp labels.

    Randomness: SpecAugment of sample ``pos`` uses a generator seeded from
    ``(seed, epoch, pos)``, so it is identical under any world size; whether to mix and
    ``lam`` come from ``(seed, epoch, global batch)``, so all DDP ranks mix with the same
    ``lam``; the MixUp partners are drawn within each rank's batch (a DDP rank cannot see the
    other ranks' samples), so only MixUp depends on the world size.
    """

    def __init__(self, augment_cfg: AugmentConfig, feature_cfg: FeatureConfig, seed: int, train: bool = True) -> None:
        check_mixup(augment_cfg, False)
        self.cfg = augment_cfg
        self.feature_cfg = feature_cfg
        self.seed = int(seed)
        self.train = train
        self.specaug = None
        if train and augment_cfg.specaug.enabled:
            from speakerid.augment.spec import SpecAugment

            self.specaug = SpecAugment.from_config(augment_cfg.specaug)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        keys = batch["keys"].tolist()
        mix = self.cfg.mixup
        mix_now = False
        g_batch = None
        if self.train and mix.enabled:
            g_batch = self._batch_generator(keys)
            mix_now = bool(torch.rand((), generator=g_batch).item() < mix.prob)
        labels = batch["labels"]
        labels_b, lam = labels, 1.0
        if "wave" in batch:
            if mix_now and mix.domain == "waveform":
                batch["wave"], labels, labels_b, lam = self._mixup(batch["wave"], labels, g_batch)
            batch["feats"] = self._fbank(batch.pop("wave"), keys)
        if "wave_k" in batch:
            batch["feats_k"] = self._fbank(batch.pop("wave_k"), keys, view=1)
        if self.specaug is not None:
            for name, stream in (("feats", STREAM_SPECAUG), ("feats_k", STREAM_SPECAUG + 1)):
                if name in batch:
                    batch[name] = self._specaugment(batch[name], keys, stream)
        if mix_now and mix.domain == "features":
            batch["feats"], labels, labels_b, lam = self._mixup(batch["feats"], labels, g_batch)
        batch["labels"] = labels
        batch["labels_a"] = labels
        batch["labels_b"] = labels_b
        batch["lam"] = float(lam)
        return batch

    def _batch_generator(self, keys: list[list[int]]) -> torch.Generator:
        epoch, batch_index, pos = keys[0]
        # Global batch index when the sampler gave one (same on every rank), else the first position.
        which = batch_index if batch_index >= 0 else 1_000_000_007 + pos
        return batch_generator(self.seed, epoch, which)

    def _mixup(self, x: Tensor, labels: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor, float]:
        from speakerid.augment.spec import mixup

        mixed, la, lb, lam = mixup(x, labels, self.cfg.mixup.alpha, g)
        return mixed, la, lb, float(lam)

    def _specaugment(self, feats: Tensor, keys: list[list[int]], stream: int) -> Tensor:
        # One generator per sample (not per batch): the masks of a sample then do not depend on
        # which other samples share its batch, i.e. on the DDP world size.
        out = [
            self.specaug(feats[i : i + 1], sample_generator(self.seed, e, pos, stream))
            for i, (e, _, pos) in enumerate(keys)
        ]
        return torch.cat(out, dim=0)

    def _fbank(self, wave: Tensor, keys: list[list[int]], view: int = 0) -> Tensor:
        cfg = self.feature_cfg
        dither = cfg.dither if self.train else 0.0
        if dither:
            # Per-sample dither noise (as fbank adds it: per waveform sample, int16 units), so it too
            # is independent of the batch composition. Drawn on CPU: generators are device-bound.
            noise = torch.stack(
                [torch.randn(wave.size(1), generator=sample_generator(self.seed, e, pos, STREAM_CHUNK + 10 + view))
                 for e, _, pos in keys]
            )
            wave = wave + (dither / 32768.0) * noise.to(device=wave.device, dtype=wave.dtype)
        return fbank_from_config(wave, cfg)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one torch thread per worker (workers are the parallelism).

    Data do not depend on it: every random choice is seeded per sample.
    """
    torch.set_num_threads(1)
