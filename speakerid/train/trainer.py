"""Training loop: config -> model + loss -> (DDP) training -> checkpoints -> averaged ``model.pt``.

``train(cfg, data_dir, exp_dir)`` runs in one process or in every process of a
``torchrun`` job (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment; gloo on CPU,
NCCL on GPU). Design choices, and why:

* ``cfg.data.batch_size`` (and P x K for the PK sampler) is the GLOBAL batch. The samplers
  cut every global batch into ``world_size`` slices, and everything that couples the
  samples of a batch is made global, so an N-process run takes exactly the steps of the
  single-process run (up to float summation order; ``tests/test_train.py`` checks 1e-5):
  - BatchNorm: batch statistics are all-reduced over ranks (torch's ``SyncBatchNorm`` on
    GPU; on CPU, where it is unsupported, :class:`speakerid.distributed.GlobalBatchNorm`).
  - Pair-based losses (Circle, triplet, ..., with XBM) see the global batch: embeddings are
    all-gathered WITH gradient (``torch.distributed.nn.functional.all_gather``), every rank
    computes the same global loss ``L``. The backward of all_gather sums the gradient that
    each rank sends to a slice, so rank r gets ``W * dL/dE_r``; DDP then averages over
    the ``W`` ranks and every parameter gets ``sum_r dL/dE_r dE_r/dθ = dL/dθ`` -- the
    single-process gradient, with the per-rank loss simply equal to the global loss.
  - Classification losses (AAM, Circle proxy) and MoCo's InfoNCE are means of per-sample
    terms: each rank averages its slice, and DDP's mean of the per-rank means is the global
    mean (MoCoLoss gathers the keys of all ranks into its queue). The encoder and the loss
    head are one module, :class:`SpeakerNet`, wrapped in one DDP.
* Determinism: data items are a function of (seed, epoch, index) (``ChunkDataset``), the samplers of (seed, epoch), and the global RNG and the
  batch-augmentation generator are reseeded from (seed, epoch, rank) at every epoch. A
  checkpoint is written at the end of each epoch, so ``--resume`` restarts at an epoch
  boundary and reproduces the uninterrupted run.
* The loss is computed in float32 outside autocast (bf16/fp16 only in the encoder): the
  scale factors of Circle Loss (gamma=256) and AAM (s=32) overflow fp16 logits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from speakerid.checkpoint import (
    average_checkpoints,
    checkpoint_path,
    get_rng_state,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    set_rng_state,
)
from speakerid.config import TrainConfig, config_to_dict, save_config
from speakerid.data.training import ShardEpochs, TrainError, build_train_data
from speakerid.train.dev_eval import DevSet
from speakerid.distributed import (
    DistInfo,
    GlobalBatchNorm,
    apply_thread_policy,
    convert_global_batchnorm,
    setup_distributed,
    teardown,
)
from speakerid.fileio import atomic_path
from speakerid.experiment import write_dev_eval, write_speakers
from speakerid.models import build_encoder
from speakerid.train.schedule import LRSchedule, margin_at, set_lr
from speakerid.train.log import History, plot_curves, train_logging
from speakerid.train.warm_start import imprint_classifier, load_init_encoder, speaker_means
from speakerid.train.model import SpeakerNet, build_head, build_optimizer

logger = logging.getLogger(__name__)

__all__ = ["SpeakerNet", "build_head", "build_optimizer", "DistInfo", "GlobalBatchNorm", "History", "Trainer", "TrainError", "train", "plot_curves"]

CHECKPOINT_FORMAT = 1


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


# --------------------------------------------------------------------------- trainer
class Trainer:
    """One training run in this process (one rank of it under torchrun); see :func:`train`."""

    def __init__(
        self,
        cfg: TrainConfig,
        data_dir: Path,
        exp_dir: Path,
        info: DistInfo,
        resume: bool = False,
        init_from: str | os.PathLike | None = None,
    ) -> None:
        self.cfg, self.data_dir, self.exp_dir, self.info = cfg, data_dir, exp_dir, info
        if list_checkpoints(exp_dir) and not resume:
            raise TrainError(f"{exp_dir}: already holds checkpoints; pass --resume to continue it, or use a new --exp")
        if bool(cfg.dev_data) != bool(cfg.dev_trials):
            raise TrainError("dev_data and dev_trials go together: give both or neither")
        # The loss decides the data: two views for MoCo, PK batches for pair losses.
        from speakerid.losses import LOSSES

        if cfg.loss.name not in LOSSES:
            raise TrainError(f"loss.name: unknown loss {cfg.loss.name!r}; known: {sorted(LOSSES)}")
        loss_cls = LOSSES[cfg.loss.name]
        two_views = bool(getattr(loss_cls, "needs_two_views", False))
        pair_based = bool(getattr(loss_cls, "is_pair_based", False))
        self.dataset, self.sampler, self.collate = build_train_data(cfg, data_dir, info, two_views, pair_based)
        self.speakers = [s for s, _ in sorted(self.dataset.speaker_to_label.items(), key=lambda kv: kv[1])]
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank and in every run
        self.encoder = build_encoder(cfg)
        fine_tune = init_from is not None and not (resume and list_checkpoints(exp_dir))
        if fine_tune:
            load_init_encoder(self.encoder, cfg, init_from)
        embed_dim = int(getattr(self.encoder, "embed_dim", cfg.model.kwargs.get("embed_dim", 192)))
        self.head = build_head(cfg, embed_dim, self.dataset.num_classes)
        if fine_tune and getattr(self.head, "has_classifier", False):
            imprint_classifier(self.head, speaker_means(self.encoder.to(info.device), cfg, self.dataset))
            logger.info("classifier weights imprinted from the initial encoder's speaker means")
        self.encoder = convert_global_batchnorm(self.encoder, info)
        self.net = SpeakerNet(self.encoder, self.head, info).to(info.device)
        self.key_encoder = self._build_key_encoder() if two_views else None
        self.model: nn.Module = self.net
        if info.distributed:
            self.model = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[info.local_rank] if info.device.type == "cuda" else None
            )
        self.optimizer = build_optimizer(cfg, self.net.parameters())
        full = self.sampler.num_batches
        self.steps_per_epoch = min(full, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch > 0 else full
        self.schedule = LRSchedule.from_config(cfg.optim, self.steps_per_epoch, cfg.epochs)
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler(info.device.type, enabled=self.amp_dtype == torch.float16)
        self.start_epoch, self.global_step, self.history = 0, 0, History()
        if resume:
            self._resume()
        self.dev = DevSet(cfg, info) if cfg.dev_data else None
        self.writer = None

    # ------------------------------------------------------------------ setup helpers
    def _build_key_encoder(self) -> nn.Module:
        from speakerid.losses.moco import MomentumEncoder

        momentum = getattr(self.head, "momentum", None)
        return MomentumEncoder(self.encoder, momentum=momentum) if momentum is not None else MomentumEncoder(self.encoder)

    def _amp_dtype(self) -> torch.dtype | None:
        if self.cfg.amp == "none":
            return None
        if self.info.device.type != "cuda":
            logger.warning("amp=%s needs a GPU; training in float32 on %s", self.cfg.amp, self.info.device)
            return None
        return torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16

    def _resume(self) -> None:
        ckpts = list_checkpoints(self.exp_dir)
        if not ckpts:
            logger.warning("--resume: %s has no checkpoint yet; starting from scratch", self.exp_dir)
            return
        path = ckpts[-1]
        ckpt = load_checkpoint(path)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise TrainError(f"{path}: not a speakerid training checkpoint (format {ckpt.get('format')!r})")
        if ckpt["speakers"] != self.speakers:
            raise TrainError(f"{path}: was trained on other speakers than {self.data_dir}; cannot resume")
        if ckpt.get("steps_per_epoch") != self.steps_per_epoch:
            raise TrainError(f"{path}: {ckpt.get('steps_per_epoch')} steps per epoch, this config gives {self.steps_per_epoch}")
        self.encoder.load_state_dict(ckpt["model"])
        self.head.load_state_dict(ckpt["head"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.sampler.load_state_dict(ckpt["sampler"])
        if self.key_encoder is not None:
            self.key_encoder.load_state_dict(ckpt["key_encoder"])
        set_rng_state(ckpt["rng"])
        self.start_epoch = int(ckpt["epoch"])
        self.global_step = int(ckpt["global_step"])
        self.history = History(**ckpt["history"])
        logger.info("resumed from %s (epoch %d done, step %d)", path, self.start_epoch, self.global_step)

    # ------------------------------------------------------------------ the loop
    def run(self) -> Path:
        cfg, info = self.cfg, self.info
        if info.is_main:
            self.exp_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.exp_dir / "config.yaml")
            write_speakers(self.exp_dir, self.speakers)
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.exp_dir / "tb"))
            n_params = sum(p.numel() for p in self.encoder.parameters())
            logger.info(
                "training %s (%.2fM params) with %s on %d utts / %d classes; %d process(es) on %s; %d steps/epoch",
                cfg.model.name, n_params / 1e6, cfg.loss.name, len(self.dataset), self.dataset.num_classes,
                info.world_size, info.device, self.steps_per_epoch,
            )
        try:
            for epoch in range(self.start_epoch, cfg.epochs):
                loss = self._train_epoch(epoch)
                self._end_epoch(epoch, loss)
            self._finalize()
        finally:
            if self.writer is not None:
                self.writer.close()
        return self.exp_dir

    def _train_epoch(self, epoch: int) -> float:
        from tqdm import tqdm

        from speakerid.data.batch import worker_init_fn

        cfg, info = self.cfg, self.info
        self.model.train()
        self.sampler.set_epoch(epoch)
        seed = _epoch_seed(cfg.seed, epoch, info.rank)
        torch.manual_seed(seed)  # dropout etc.: a function of (seed, epoch, rank), so resume is exact
        batching = (
            {"batch_size": self.sampler.per_rank_batch, "drop_last": True}
            if isinstance(self.sampler, ShardEpochs)
            else {"batch_sampler": self.sampler}
        )
        loader = torch.utils.data.DataLoader(
            self.dataset,
            **batching,
            num_workers=cfg.data.num_workers,
            collate_fn=self.collate,
            worker_init_fn=worker_init_fn,
            pin_memory=info.device.type == "cuda",
        )
        total, count = torch.zeros((), dtype=torch.float64), 0
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not info.is_main, leave=False, mininterval=1.0)
        for step_in_epoch, batch in enumerate(loader):
            if step_in_epoch >= self.steps_per_epoch:
                break
            loss = self._train_step(batch, epoch, step_in_epoch)
            total += loss
            count += 1
            self.global_step += 1
            bar.update(1)
            if info.is_main and (step_in_epoch + 1) % max(1, cfg.log_every) == 0:
                lr = self.optimizer.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}")
                self.writer.add_scalar("train/loss", loss, self.global_step)
                self.writer.add_scalar("train/lr", lr, self.global_step)
                if getattr(self.head, "has_margin", False):
                    self.writer.add_scalar("train/margin", self._margin(epoch, step_in_epoch), self.global_step)
                logger.debug("epoch %d step %d/%d loss %.4f lr %.4g", epoch + 1, step_in_epoch + 1, self.steps_per_epoch, loss, lr)
        bar.close()
        if count < self.steps_per_epoch:
            raise TrainError(f"epoch {epoch + 1}: the sampler gave {count} batches, expected {self.steps_per_epoch}")
        mean = total / count
        if info.distributed:
            dist.all_reduce(mean)
            mean /= info.world_size
        return float(mean)

    def _margin(self, epoch: int, step_in_epoch: int) -> float:
        return margin_at(self.cfg.margin, epoch, step_in_epoch, self.steps_per_epoch)

    def _train_step(self, batch: dict[str, Any], epoch: int, step_in_epoch: int) -> float:
        cfg, dev = self.cfg, self.info.device
        lr = self.schedule(self.global_step)
        set_lr(self.optimizer, lr)
        if getattr(self.head, "has_margin", False) and cfg.margin.enabled:
            self.head.set_margin(self._margin(epoch, step_in_epoch))
        feats = batch["feats"].to(dev, non_blocking=True)
        labels = batch["labels"].to(dev, non_blocking=True)
        lam = float(batch.get("lam", 1.0))
        labels_b = batch["labels_b"].to(dev, non_blocking=True) if lam < 1.0 else None  # None: batch not mixed
        autocast = (
            torch.autocast(device_type=dev.type, dtype=self.amp_dtype) if self.amp_dtype is not None else contextlib.nullcontext()
        )
        with autocast:
            keys = None
            if self.key_encoder is not None:
                keys = self.key_encoder(batch["feats_k"].to(dev, non_blocking=True))
            loss = self.model(feats, labels, labels_b, lam, keys)
        if not torch.isfinite(loss):
            raise TrainError(f"loss is {loss.item()} at epoch {epoch + 1} step {step_in_epoch + 1}; lower optim.lr or check the data")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.key_encoder is not None:
            self.key_encoder.update(self.encoder)
        return float(loss.detach())

    def _end_epoch(self, epoch: int, loss: float) -> None:
        info, h = self.info, self.history
        h.epoch.append(epoch + 1)
        h.loss.append(loss)
        h.lr.append(float(self.optimizer.param_groups[0]["lr"]))
        line = f"epoch {epoch + 1}/{self.cfg.epochs}: loss {loss:.4f} lr {h.lr[-1]:.4g}"
        if self.dev is not None:
            result = self.dev.evaluate(self.encoder)
            h.dev_eer.append(result["eer"])
            h.dev_min_dcf.append(result["min_dcf_0.01"])
            line += f" dev EER {100 * result['eer']:.2f}% minDCF0.01 {result['min_dcf_0.01']:.3f}"
        if not info.is_main:
            return
        logger.info(line)
        self.writer.add_scalar("epoch/loss", loss, epoch + 1)
        self.writer.add_scalar("epoch/lr", h.lr[-1], epoch + 1)
        if self.dev is not None:
            self.writer.add_scalar("dev/eer", h.dev_eer[-1], epoch + 1)
            self.writer.add_scalar("dev/min_dcf_0.01", h.dev_min_dcf[-1], epoch + 1)
        self.writer.flush()
        state = {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch + 1,
            "global_step": self.global_step,
            "steps_per_epoch": self.steps_per_epoch,
            "model": self.encoder.state_dict(),
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": get_rng_state(),
            "history": dataclasses.asdict(h),
            "speakers": list(self.speakers),
            "config": config_to_dict(self.cfg),
        }
        if self.key_encoder is not None:
            state["key_encoder"] = self.key_encoder.state_dict()
        save_checkpoint(checkpoint_path(self.exp_dir, epoch + 1), state)
        # Keep enough checkpoints for the final weight averaging.
        prune_checkpoints(self.exp_dir, max(self.cfg.keep_checkpoints, self.cfg.average_last))

    def _finalize(self) -> None:
        """``model.pt`` = mean of the last K checkpoints' encoders; dev_eval.json; curves PNG."""
        info = self.info
        if info.is_main:
            last = list_checkpoints(self.exp_dir)[-max(1, self.cfg.average_last) :]
            averaged = average_checkpoints(last)
            with atomic_path(self.exp_dir / "model.pt", suffix=".pt") as tmp:
                torch.save(averaged, tmp)
            logger.info("wrote %s (average of %s)", self.exp_dir / "model.pt", ", ".join(p.name for p in last))
        if info.distributed:
            dist.barrier()
        if self.dev is not None:
            self.encoder.load_state_dict(load_checkpoint(self.exp_dir / "model.pt"))
            result = self.dev.evaluate(self.encoder)
            if info.is_main:
                write_dev_eval(self.exp_dir, result)
                logger.info("final model: dev EER %.2f%% minDCF0.01 %.3f", 100 * result["eer"], result["min_dcf_0.01"])
        if info.is_main:
            plot_curves(self.history, self.exp_dir / "training_curves.png")


def train(
    cfg: TrainConfig,
    data_dir: str | os.PathLike,
    exp_dir: str | os.PathLike,
    resume: bool = False,
    init_from: str | os.PathLike | None = None,
    threads: int | None = None,
) -> Path:
    """Train an encoder on ``data_dir``; everything goes to ``exp_dir`` (see docs/ARCHITECTURE.md, "Data formats").

    Run it in one process, or under ``torchrun --nproc_per_node=N -m speakerid train ...``
    (every rank calls this). ``resume``: continue from the newest checkpoint of ``exp_dir``.
    ``init_from`` (``--init``): an experiment dir (trained or imported), a packaged model name,
    a ``model.pt`` or a checkpoint whose ENCODER weights start the training (fine-tuning): the
    config's model and front end must match the source's; a classifier head (AAM, Circle proxy)
    starts from the initial encoder's speaker means, see :mod:`speakerid.train.warm_start`.
    ``threads``: torch threads (default: :func:`speakerid.distributed.thread_count`).
    """
    data_dir, exp_dir = Path(data_dir), Path(exp_dir)
    apply_thread_policy(threads, workers=cfg.data.num_workers)
    info = setup_distributed()
    start = time.time()
    try:
        with train_logging(exp_dir, info.is_main):
            out = Trainer(cfg, data_dir, exp_dir, info, resume=resume, init_from=init_from).run()
            if info.is_main:
                logger.info("training done in %.1f min: %s", (time.time() - start) / 60, exp_dir)
            return out
    finally:
        teardown(info)
