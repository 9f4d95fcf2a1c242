"""Training data for one rank: dataset, batch sampler (or shard epochs) and the batch collate.

The config holds GLOBAL batch sizes; the samplers give rank r the r-th slice of every global
batch, so the training is the same whatever the process count (data-dir path). The shard
path streams webdataset shards (shuffled batches only).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speakerid.config import TrainConfig

if TYPE_CHECKING:
    from speakerid.distributed import DistInfo

logger = logging.getLogger(__name__)


class TrainError(ValueError):
    """A training setting is inconsistent with the data, the model or the process layout."""


def build_train_data(cfg: TrainConfig, data_dir: Path, info: "DistInfo", two_views: bool, pair_based: bool):
    """Dataset, batch sampler and collate function for this rank."""
    from speakerid.data.batch import BatchAugment
    from speakerid.data.dataset import ChunkDataset
    from speakerid.data.sampler import PKBatchSampler, ShuffleBatchSampler

    collate = BatchCollate(BatchAugment(cfg.augment, cfg.features, cfg.seed, train=True))
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


def _shard_data(cfg: TrainConfig, info: "DistInfo", two_views: bool) -> tuple[Any, "ShardEpochs"]:
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
    return dataset, ShardEpochs(dataset, cfg.data.batch_size // info.world_size)


class ShardEpochs:
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


class BatchCollate:
    """Stack items, then the batch step (waveform fbank, SpecAugment, MixUp) -- in the workers.

    ``BatchAugment`` seeds itself from each sample's (seed, epoch, pos), so it needs no
    generator from here and gives the same batch in any worker and after a resume.
    """

    def __init__(self, batch_augment: Any) -> None:
        self.batch_augment = batch_augment

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        from speakerid.data.batch import collate

        return self.batch_augment(collate(items))
