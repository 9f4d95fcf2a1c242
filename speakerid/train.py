"""Training loop: config -> model + loss -> (DDP) training -> checkpoints -> averaged ``model.pt``.

``train(cfg, data_dir, exp_dir)`` runs in one process or in every process of a
``torchrun`` job (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment; gloo on CPU,
NCCL on GPU). Design choices, and why:

* ``cfg.data.batch_size`` (and P x K for the PK sampler) is the GLOBAL batch. The samplers
  cut every global batch into ``world_size`` slices, and everything that couples the
  samples of a batch is made global, so an N-process run takes exactly the steps of the
  single-process run (up to float summation order; ``tests/test_train.py`` checks 1e-5):
  - BatchNorm: batch statistics are all-reduced over ranks (torch's ``SyncBatchNorm`` on
    GPU; on CPU, where it is unsupported, :class:`GlobalBatchNorm` below).
  - Pair-based losses (Circle, triplet, ..., with XBM) see the global batch: embeddings are
    all-gathered WITH gradient (``torch.distributed.nn.functional.all_gather``), every rank
    computes the same global loss ``L``. The backward of all_gather sums the gradient that
    each rank sends to a slice, so rank r gets ``W * dL/dE_r``; DDP then averages over
    the ``W`` ranks and every parameter gets ``sum_r dL/dE_r dE_r/dθ = dL/dθ`` -- the
    single-process gradient, with the per-rank loss simply equal to the global loss.
  - Classification losses (AAM, Circle proxy) and MoCo's InfoNCE are means of per-sample
    terms: each rank averages its slice, and DDP's mean of the per-rank means is the global
    mean (MoCoLoss gathers the keys of all ranks into its queue itself). The encoder and the loss head (with its
    per-class weights) are one module, :class:`SpeakerNet`, wrapped in one DDP.
* Determinism: data items are a function of (seed, epoch, index) (data engineer's
  ``ChunkDataset``), the samplers of (seed, epoch), and the global RNG and the
  batch-augmentation generator are reseeded from (seed, epoch, rank) at every epoch. A
  checkpoint is written at the end of each epoch, so ``--resume`` restarts at an epoch
  boundary and reproduces the uninterrupted run.
* The loss is computed in float32 outside autocast (bf16/fp16 only in the encoder): the
  scale factors of Circle Loss (gamma=256) and AAM (s=32) overflow fp16 logits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

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
    load_encoder_weights,
    prune_checkpoints,
    save_checkpoint,
    set_rng_state,
)
from speakerid.config import TrainConfig, config_to_dict, save_config
from speakerid.fileio import atomic_path, write_text_atomic
from speakerid.models import build_encoder
from speakerid.schedule import LRSchedule, margin_at, set_lr

logger = logging.getLogger(__name__)

# The autograd collectives below are "deprecated" in favour of private
# torch.distributed._functional_collectives, whose reduce-scatter backward gloo lacks.
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.", category=FutureWarning)

CHECKPOINT_FORMAT = 1


class TrainError(ValueError):
    """A training setting is inconsistent with the data, the model or the process layout."""


# --------------------------------------------------------------------------- distributed
@dataclass
class DistInfo:
    """Process layout of this run; ``group`` is a dedicated group for autograd collectives."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False
    group: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed() -> DistInfo:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK; init NCCL (GPU) or gloo (CPU) when > 1 process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if world <= 1:
        return DistInfo(device=device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    # A separate group keeps the forward/backward collectives of GlobalBatchNorm and the
    # embedding all-gather from interleaving with DDP's asynchronous gradient all-reduce.
    group = dist.new_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, owns, group)


def gather_with_grad(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate ``x`` of all ranks (rank order = global batch order), gradient flowing back."""
    if not info.distributed:
        return x
    import torch.distributed.nn.functional as dist_nn

    return torch.cat(dist_nn.all_gather(x.contiguous(), group=info.group), dim=0)


def gather_no_grad(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.distributed:
        return x
    parts = [torch.empty_like(x) for _ in range(info.world_size)]
    dist.all_gather(parts, x.contiguous(), group=info.group)
    return torch.cat(parts, dim=0)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch over all ranks.

    torch's ``SyncBatchNorm`` refuses CPU tensors; this one all-reduces (sum, sum of squares,
    count) in float64 with ``torch.distributed.nn.functional.all_reduce``, whose backward
    all-reduces the gradient, so the result matches single-process BatchNorm on the global
    batch (Ioffe & Szegedy 2015, Alg. 1). Same parameters/buffers as the module it replaces.
    """

    group: Any = None

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size(self.group) > 1):
            return super().forward(x)
        import torch.distributed.nn.functional as dist_nn

        dims = [0] + list(range(2, x.dim()))
        xd = x.double()
        count = torch.tensor([x.numel() / x.size(1)], dtype=torch.float64, device=x.device)
        stats = torch.cat([xd.sum(dims), (xd * xd).sum(dims), count])
        stats = dist_nn.all_reduce(stats, group=self.group)
        c = x.size(1)
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0.0)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = ((xd - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)).to(x.dtype)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1).clamp_min(1.0))
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        return y


def convert_global_batchnorm(module: nn.Module, info: DistInfo) -> nn.Module:
    """Make every BatchNorm use global-batch statistics under DDP (no-op in one process)."""
    if not info.distributed:
        return module
    if info.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group=info.group)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        out.group = info.group
        out.load_state_dict(module.state_dict())
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_global_batchnorm(child, info))
    return out


# --------------------------------------------------------------------------- model + loss
class SpeakerNet(nn.Module):
    """Encoder + loss head as ONE module (so DDP synchronises the classifier weights too).

    ``forward`` returns the training loss. Pair-based losses get the embeddings of the
    global batch (see the module docstring for why the gradient is then exact).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, info: DistInfo) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.info = info
        self.global_batch = bool(getattr(head, "is_pair_based", False))

    def forward(
        self,
        feats: torch.Tensor,
        labels: torch.Tensor,
        labels_b: torch.Tensor | None = None,
        lam: float = 1.0,
        keys: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self.encoder(feats)
        with torch.autocast(device_type=emb.device.type, enabled=False):
            emb = emb.float()
            if getattr(self.head, "needs_two_views", False):
                # InfoNCE is a mean of per-sample terms given the queue, so the local loss needs no
                # gather; MoCoLoss itself gathers the keys of all ranks for its queue (rank order).
                if keys is None:
                    raise TrainError("the MoCo loss needs key embeddings from the momentum encoder")
                return self.head(emb, keys.float())
            if self.global_batch:
                emb = gather_with_grad(emb, self.info)
                labels = gather_no_grad(labels, self.info)
                labels_b = None if labels_b is None else gather_no_grad(labels_b, self.info)
            if labels_b is None:
                return self.head(emb, labels)
            return self.head(emb, labels, labels_b=labels_b, lam=lam)


def build_head(cfg: TrainConfig, embed_dim: int, num_classes: int) -> nn.Module:
    """The loss, with a cross-batch memory (XBM, Wang et al. 2020) around pair losses when asked."""
    from speakerid.losses import build_loss

    return build_loss(
        cfg.loss.name, embed_dim, num_classes, xbm_size=cfg.loss.xbm_size, xbm_start_step=cfg.loss.xbm_start_step,
        **cfg.loss.kwargs,
    )


def build_optimizer(cfg: TrainConfig, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    o = cfg.optim
    params = [p for p in params if p.requires_grad]
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0, weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    raise TrainError(f"optim.name: expected 'sgd', 'adam' or 'adamw', got {o.name!r}")


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


# --------------------------------------------------------------------------- data
def build_train_data(cfg: TrainConfig, data_dir: Path, info: DistInfo, two_views: bool, pair_based: bool):
    """Dataset + batch sampler for this rank (the data engineer's classes)."""
    from speakerid.data.dataset import BatchAugment, ChunkDataset
    from speakerid.data.sampler import PKBatchSampler, ShuffleBatchSampler

    collate = _Collate(BatchAugment(cfg.augment, cfg.features, cfg.seed, train=True))
    if cfg.data.shards:
        return (*_shard_data(cfg, info, two_views), collate)
    dataset = ChunkDataset(
        data_dir,
        cfg.features,
        cfg.augment,
        cfg.data.chunk_frames,
        cfg.seed,
        use_cached_features=cfg.data.use_cached_features,
        two_views=two_views,
    )
    if cfg.data.sampler == "pk":
        global_batch = cfg.data.speakers_per_batch * cfg.data.utts_per_speaker
    elif cfg.data.sampler == "shuffle":
        global_batch = cfg.data.batch_size
        if pair_based:
            logger.warning("data.sampler=shuffle with a pair-based loss: batches may hold few positive pairs; 'pk' is usual")
    else:
        raise TrainError(f"data.sampler: expected 'shuffle' or 'pk', got {cfg.data.sampler!r}")
    # The config holds GLOBAL sizes (same training whatever the process count); the samplers
    # take per-rank sizes and give rank r the r-th slice of each global batch.
    if cfg.data.sampler == "pk":
        if cfg.data.speakers_per_batch % info.world_size:
            raise TrainError(
                f"data.speakers_per_batch={cfg.data.speakers_per_batch} is not divisible by the {info.world_size} processes"
            )
        sampler = PKBatchSampler(
            dataset.utt_labels, cfg.data.speakers_per_batch // info.world_size, cfg.data.utts_per_speaker, cfg.seed,
            rank=info.rank, world_size=info.world_size,
        )
    else:
        if global_batch % info.world_size:
            raise TrainError(f"data.batch_size={global_batch} is not divisible by the {info.world_size} processes")
        sampler = ShuffleBatchSampler(len(dataset), global_batch // info.world_size, cfg.seed, rank=info.rank, world_size=info.world_size)
    return dataset, sampler, collate


def _shard_data(cfg: TrainConfig, info: DistInfo, two_views: bool) -> tuple[Any, "_ShardEpochs"]:
    """Streaming webdataset shards (``data.shards``): shuffled batches only.

    The stream is reproducible for a given (seed, world size, num_workers), so ``--resume``
    is exact, but unlike the data-dir path it changes with the number of processes.
    """
    from speakerid.data.shards import ShardDataset

    if cfg.data.sampler != "shuffle":
        raise TrainError("data.shards streams samples: only data.sampler=shuffle is possible (no P x K batches)")
    if cfg.data.batch_size % info.world_size:
        raise TrainError(f"data.batch_size={cfg.data.batch_size} is not divisible by the {info.world_size} processes")
    dataset = ShardDataset(
        cfg.data.shards, cfg.features, cfg.augment, cfg.data.chunk_frames, cfg.seed,
        rank=info.rank, world_size=info.world_size, two_views=two_views,
    )
    return dataset, _ShardEpochs(dataset, cfg.data.batch_size // info.world_size)


class _ShardEpochs:
    """The sampler interface the trainer uses (epochs, batch count, state) for a shard stream."""

    def __init__(self, dataset: Any, per_rank_batch: int) -> None:
        self.dataset, self.per_rank_batch = dataset, per_rank_batch
        self.num_batches = len(dataset) // per_rank_batch
        if self.num_batches < 1:
            raise TrainError(f"data.shards: {len(dataset)} samples per process are fewer than one batch of {per_rank_batch}")

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.dataset.epoch)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.set_epoch(int(state["epoch"]))


class _Collate:
    """Stack items, then the batch step (waveform fbank, SpecAugment, MixUp) -- in the workers.

    ``BatchAugment`` seeds itself from each sample's (seed, epoch, pos), so it needs no
    generator from here and gives the same batch in any worker and after a resume.
    """

    def __init__(self, batch_augment: Any) -> None:
        self.batch_augment = batch_augment

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        from speakerid.data.dataset import collate

        return self.batch_augment(collate(items))


# --------------------------------------------------------------------------- dev evaluation
class DevSet:
    """Dev utterances (whole, eval-mode fbank, no dither), computed once, and their trials.

    Each rank embeds a strided share of the utterances; the embeddings are gathered, and
    the trials are cosine-scored (Dehak et al. 2011) by the scoring module, for EER and
    minDCF at P_target=0.01 from one sort.
    """

    def __init__(self, cfg: TrainConfig, info: DistInfo) -> None:
        from speakerid.audio import load_audio
        from speakerid.data.datadir import read_data_dir
        from speakerid.features import Fbank
        from speakerid.scoring.embeddings import missing_ids
        from speakerid.scoring.trials import read_trial_list

        data = read_data_dir(cfg.dev_data)
        self.trials = read_trial_list(cfg.dev_trials)
        if not len(self.trials):
            raise TrainError(f"{cfg.dev_trials}: no trials")
        if self.trials.labels is None:
            raise TrainError(f"{cfg.dev_trials}: trials without a target/nontarget label")
        needed = np.union1d(self.trials.enroll, self.trials.test)
        missing = missing_ids(list(data.wav), needed).tolist()
        if missing:
            raise TrainError(f"{cfg.dev_trials}: {len(missing)} trial id(s) not in {cfg.dev_data}/wav.scp, e.g. {missing[:3]}")
        self.utts: list[str] = needed.tolist()
        self.info = info
        front = Fbank.from_config(cfg.features, train=False)
        self.feats: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for utt in self.utts[info.rank :: info.world_size]:
                wave, _ = load_audio(data.wav[utt], cfg.features.sample_rate)
                self.feats[utt] = front(wave.unsqueeze(0))[0]

    @torch.no_grad()
    def evaluate(self, encoder: nn.Module) -> dict[str, float]:
        """EER, its threshold and minDCF(0.01) of ``encoder`` (put back in its previous mode)."""
        from speakerid.scoring.cosine import EmbeddingTable, score_trials
        from speakerid.scoring.metrics import compute_metrics

        was_training = encoder.training
        encoder.eval()
        local = {u: encoder(f.unsqueeze(0).to(self.info.device)).float()[0].cpu() for u, f in self.feats.items()}
        encoder.train(was_training)
        if self.info.distributed:
            parts: list[Any] = [None] * self.info.world_size
            dist.all_gather_object(parts, local)
            for p in parts:
                local.update(p)
        table = EmbeddingTable(np.asarray(self.utts), torch.stack([local[u] for u in self.utts]).numpy(), "dev embeddings")
        scores = score_trials(self.trials.enroll, self.trials.test, table)  # length-normalises
        m = compute_metrics(scores, self.trials.labels, p_targets=(0.01,))
        return {"eer": float(m.eer), "threshold": float(m.eer_threshold), "min_dcf_0.01": float(m.min_dcf[0.01][0])}


# --------------------------------------------------------------------------- trainer
@dataclass
class History:
    """Per-epoch curves; stored in every checkpoint so that a resumed run plots all epochs."""

    epoch: list[int] = dataclasses.field(default_factory=list)
    loss: list[float] = dataclasses.field(default_factory=list)
    lr: list[float] = dataclasses.field(default_factory=list)
    dev_eer: list[float] = dataclasses.field(default_factory=list)
    dev_min_dcf: list[float] = dataclasses.field(default_factory=list)


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
        if cfg.amp not in ("none", "bf16", "fp16"):
            raise TrainError(f"amp: expected 'none', 'bf16' or 'fp16', got {cfg.amp!r}")
        if cfg.epochs < 1:
            raise TrainError(f"epochs: must be >= 1, got {cfg.epochs}")
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
        if init_from is not None:
            self._init_encoder(init_from)
        embed_dim = int(getattr(self.encoder, "embed_dim", cfg.model.kwargs.get("embed_dim", 192)))
        self.head = build_head(cfg, embed_dim, self.dataset.num_classes)
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
    def _init_encoder(self, source: str | os.PathLike) -> None:
        """Fine-tuning: encoder weights from another experiment; the loss head starts fresh."""
        state = load_encoder_weights(source)
        try:
            self.encoder.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).splitlines()[0]
            raise TrainError(f"{source}: encoder weights do not fit model {self.cfg.model.name!r} {self.cfg.model.kwargs}: {first}") from None
        logger.info("encoder initialised from %s (loss head rebuilt)", source)

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
            write_text_atomic(self.exp_dir / "speakers.txt", "".join(f"{s}\n" for s in self.speakers))
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

        from speakerid.data.dataset import worker_init_fn

        cfg, info = self.cfg, self.info
        self.model.train()
        self.sampler.set_epoch(epoch)
        seed = _epoch_seed(cfg.seed, epoch, info.rank)
        torch.manual_seed(seed)  # dropout etc.: a function of (seed, epoch, rank), so resume is exact
        batching = (
            {"batch_size": self.sampler.per_rank_batch, "drop_last": True}
            if isinstance(self.sampler, _ShardEpochs)
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
                write_text_atomic(self.exp_dir / "dev_eval.json", json.dumps(result, indent=2) + "\n")
                logger.info("final model: dev EER %.2f%% minDCF0.01 %.3f", 100 * result["eer"], result["min_dcf_0.01"])
        if info.is_main:
            plot_curves(self.history, self.exp_dir / "training_curves.png")


def plot_curves(history: History, path: Path) -> None:
    """Loss, learning rate and dev EER per epoch in one PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("training loss", history.loss), ("learning rate", history.lr)]
    if history.dev_eer:
        panels.append(("dev EER (%)", [100 * e for e in history.dev_eer]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (title, values) in zip(axes[0], panels):
        ax.plot(history.epoch[: len(values)], values, marker="o")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][1].set_yscale("log")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


@contextlib.contextmanager
def _train_logging(exp_dir: Path, info: DistInfo) -> Iterator[None]:
    """Rank 0 logs INFO to the console and ``exp/train.log``; other ranks only warnings."""
    root = logging.getLogger("speakerid")
    old_level = root.level
    handler = None
    if info.is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(exp_dir / "train.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
        root.addHandler(handler)
        if root.getEffectiveLevel() > logging.INFO:
            root.setLevel(logging.INFO)
    else:
        root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(old_level)
        if handler is not None:
            root.removeHandler(handler)
            handler.close()


def train(
    cfg: TrainConfig,
    data_dir: str | os.PathLike,
    exp_dir: str | os.PathLike,
    resume: bool = False,
    init_from: str | os.PathLike | None = None,
) -> Path:
    """Train an encoder on ``data_dir``; everything goes to ``exp_dir`` (see DESIGN.md).

    Run it in one process, or under ``torchrun --nproc_per_node=N -m speakerid train ...``
    (every rank calls this). ``resume``: continue from the newest checkpoint of ``exp_dir``.
    ``init_from``: an experiment dir, ``model.pt`` or checkpoint whose ENCODER weights start
    the training (fine-tuning; the loss head, e.g. the speaker classifier, is rebuilt).
    """
    data_dir, exp_dir = Path(data_dir), Path(exp_dir)
    info = setup_distributed()
    start = time.time()
    try:
        with _train_logging(exp_dir, info):
            out = Trainer(cfg, data_dir, exp_dir, info, resume=resume, init_from=init_from).run()
            if info.is_main:
                logger.info("training done in %.1f min: %s", (time.time() - start) / 60, exp_dir)
            return out
    finally:
        if info.owns_group and dist.is_initialized():
            dist.destroy_process_group()
