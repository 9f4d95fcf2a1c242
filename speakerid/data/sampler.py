"""Batch samplers for training: shuffled batches and speaker-balanced P x K batches.

Both samplers are *global-batch* samplers: for a given ``(seed, epoch)`` they build the same
sequence of global batches whatever the number of processes, and rank ``r`` of ``W`` takes
the ``r``-th contiguous slice of each one. ``batch_size`` (and ``P``) are per rank, so the
global batch holds ``batch_size * world_size`` samples (``P * world_size`` speakers). A
``torchrun --nproc_per_node=2`` run with per-rank batch 16 therefore sees exactly the global
batches of a one-process run with batch 32, which is what lets DDP reproduce single-process
training step for step.

Each yielded batch is a list of :class:`SampleKey` ``(epoch, batch, pos, index)``: ``index``
is the dataset item, ``pos`` the sample's position in the epoch's global order. The dataset
seeds every random choice of that sample from ``(seed, epoch, pos)``; using the position, not
the utterance index, keeps two draws of one utterance in an epoch (P x K sampling with
replacement) different crops, and keeps data identical across world sizes and resumes.

Resume mid-epoch with ``set_epoch(epoch, start_batch=n)`` (skips the ``n`` global batches
already trained on) or with ``load_state_dict(state_dict(batches_done=n))``. The sampler
cannot count for you: a DataLoader prefetches batches ahead of the training step.
"""

from __future__ import annotations

import logging
from typing import Iterator, NamedTuple, Sequence

import torch

logger = logging.getLogger(__name__)


class SamplerError(ValueError):
    """Sampler arguments that cannot produce a batch (too few utterances or speakers)."""


class SampleKey(NamedTuple):
    """One sample of an epoch: dataset ``index``; ``pos`` = position in the epoch's global order."""

    epoch: int
    batch: int
    pos: int
    index: int


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A CPU generator determined by ``(seed, epoch, stream)`` only (see :func:`derive_seed`)."""
    return torch.Generator().manual_seed(derive_seed(seed, epoch, stream))


def derive_seed(*parts: int) -> int:
    """Mix integers into one 63-bit seed (SplitMix64 steps), stable across runs and platforms.

    Why not ``seed + epoch``: nearby sums collide (seed 1 epoch 2 == seed 2 epoch 1) and
    torch's Mersenne Twister seeded with close integers gives correlated first draws.
    """
    mask = (1 << 64) - 1
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & mask)) & mask
        h = (h + 0x9E3779B97F4A7C15) & mask
        z = h
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        h = z ^ (z >> 31)
    return h & ((1 << 63) - 1)


class _GlobalBatchSampler:
    """Shared machinery: epochs, rank slicing, resume; subclasses build the global batches."""

    def __init__(self, per_rank_batch: int, seed: int, rank: int, world_size: int) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise SamplerError(f"rank {rank} is not in [0, world_size={world_size})")
        if per_rank_batch < 1:
            raise SamplerError(f"per-rank batch size must be >= 1, got {per_rank_batch}")
        self.per_rank_batch = per_rank_batch
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0

    @property
    def global_batch_size(self) -> int:
        return self.per_rank_batch * self.world_size

    @property
    def num_batches(self) -> int:
        """Global batches in a full epoch (each rank yields this many batches)."""
        raise NotImplementedError

    def _global_batches(self, epoch: int) -> list[list[int]]:
        raise NotImplementedError

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch; ``start_batch`` global batches of it are skipped (mid-epoch resume)."""
        if not 0 <= start_batch <= self.num_batches:
            raise SamplerError(f"start_batch {start_batch} is not in [0, {self.num_batches}]")
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def state_dict(self, batches_done: int = 0) -> dict[str, int]:
        """Where to resume: ``batches_done`` = batches trained on since ``set_epoch``."""
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "start_batch": self.start_batch + int(batches_done),
            "global_batch_size": self.global_batch_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at ``state``; the world size may differ as long as the global batch is the same."""
        if int(state["global_batch_size"]) != self.global_batch_size:
            raise SamplerError(
                f"cannot resume: saved global batch size {state['global_batch_size']} != {self.global_batch_size} "
                "(keep per-rank batch * world size constant)"
            )
        if int(state["seed"]) != self.seed:
            logger.warning("resuming sampler with seed %d (saved with %d): batches will differ", self.seed, state["seed"])
        self.set_epoch(int(state["epoch"]), int(state["start_batch"]))

    def __len__(self) -> int:
        """Batches this rank will still yield in the current epoch (after ``start_batch``)."""
        return self.num_batches - self.start_batch

    def __iter__(self) -> Iterator[list[SampleKey]]:
        epoch, b = self.epoch, self.per_rank_batch
        lo, hi = self.rank * b, (self.rank + 1) * b
        g = self.global_batch_size
        batches = self._global_batches(epoch)
        for batch_idx in range(self.start_batch, len(batches)):
            items = batches[batch_idx][lo:hi]
            yield [SampleKey(epoch, batch_idx, batch_idx * g + lo + j, idx) for j, idx in enumerate(items)]


class ShuffleBatchSampler(_GlobalBatchSampler):
    """Uniformly shuffled batches of ``n`` items, a fresh permutation per ``(seed, epoch)``.

    ``batch_size`` is per rank. With ``drop_last`` (default) the last incomplete global batch
    is dropped; otherwise it is filled from the start of the permutation (as
    ``DistributedSampler`` pads) so that every rank yields the same number of full batches.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        super().__init__(batch_size, seed, rank, world_size)
        if n < 1:
            raise SamplerError("cannot sample batches from an empty dataset")
        if drop_last and n < self.global_batch_size:
            raise SamplerError(
                f"{n} utterances are fewer than one global batch of {self.global_batch_size} "
                f"({batch_size} x {world_size} ranks); lower the batch size"
            )
        self.n = n
        self.drop_last = drop_last

    @property
    def num_batches(self) -> int:
        g = self.global_batch_size
        return self.n // g if self.drop_last else -(-self.n // g)

    def _global_batches(self, epoch: int) -> list[list[int]]:
        perm = torch.randperm(self.n, generator=epoch_generator(self.seed, epoch)).tolist()
        g = self.global_batch_size
        total = self.num_batches * g
        while len(perm) < total:  # drop_last=False: wrap around to fill the last batch
            perm += perm[: total - len(perm)]
        return [perm[i * g : (i + 1) * g] for i in range(self.num_batches)]


class PKBatchSampler(_GlobalBatchSampler):
    """Speaker-balanced batches: ``P`` speakers x ``K`` utterances per rank (pair-based losses).

    ``utt2label[i]`` is the speaker label of dataset item ``i``. A global batch holds
    ``P * world_size`` distinct speakers, laid out speaker by speaker, so that each rank's
    contiguous slice is exactly ``P`` whole speakers with ``K`` utterances each.

    Speakers are drawn uniformly: they are visited in a fresh random order, cycle after
    cycle, so every speaker appears once before any appears again (a speaker is never twice
    in one batch). Each speaker's utterances are drawn without replacement from a shuffled
    cycle of its own (every utterance is used before any repeats); a speaker with fewer than
    ``K`` utterances gets ``K`` drawn with replacement. An epoch is ``num_utts // (P*W*K)``
    global batches unless ``batches_per_epoch`` is given.
    """

    def __init__(
        self,
        utt2label: Sequence[int],
        P: int,
        K: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        batches_per_epoch: int | None = None,
    ) -> None:
        if P < 1 or K < 1:
            raise SamplerError(f"P and K must be >= 1, got P={P}, K={K}")
        super().__init__(P * K, seed, rank, world_size)
        self.P, self.K = P, K
        by_label: dict[int, list[int]] = {}
        for i, label in enumerate(utt2label):
            by_label.setdefault(int(label), []).append(i)
        self.labels = sorted(by_label)
        self.utts_of = [by_label[lab] for lab in self.labels]
        self.num_utts = len(utt2label)
        p_global = P * world_size
        if len(self.labels) < p_global:
            raise SamplerError(
                f"{len(self.labels)} speakers are fewer than the {p_global} speakers of one global batch "
                f"(P={P} x {world_size} ranks); lower P"
            )
        self._num_batches = (
            int(batches_per_epoch) if batches_per_epoch is not None else max(1, self.num_utts // (p_global * K))
        )
        if self._num_batches < 1:
            raise SamplerError(f"batches_per_epoch must be >= 1, got {batches_per_epoch}")

    @property
    def num_batches(self) -> int:
        return self._num_batches

    def _speaker_stream(self, g: torch.Generator) -> Iterator[int]:
        while True:
            yield from torch.randperm(len(self.labels), generator=g).tolist()

    def _global_batches(self, epoch: int) -> list[list[int]]:
        g = epoch_generator(self.seed, epoch)
        p_global = self.P * self.world_size
        stream = self._speaker_stream(g)
        pending: list[int] = []  # speakers deferred because they were already in the batch
        queues: dict[int, list[int]] = {}  # per speaker: remaining shuffled utterances of its cycle
        batches = []
        for _ in range(self._num_batches):
            chosen: list[int] = []
            while len(chosen) < p_global:
                spk = pending.pop(0) if pending and pending[0] not in chosen else next(stream)
                if spk in chosen:  # at a cycle boundary: keep it for the next batch
                    pending.append(spk)
                    continue
                chosen.append(spk)
            batch: list[int] = []
            for spk in chosen:
                batch.extend(self._draw(spk, queues, g))
            batches.append(batch)
        return batches

    def _draw(self, spk: int, queues: dict[int, list[int]], g: torch.Generator) -> list[int]:
        utts = self.utts_of[spk]
        if len(utts) < self.K:
            return [utts[j] for j in torch.randint(len(utts), (self.K,), generator=g).tolist()]
        queue = queues.setdefault(spk, [])
        out: list[int] = []
        while len(out) < self.K:
            if not queue:
                queue.extend(utts[j] for j in torch.randperm(len(utts), generator=g).tolist())
            cand = queue.pop()
            if cand in out:  # new cycle began mid-draw: avoid a duplicate within the speaker's K
                queue.insert(0, cand)
                continue
            out.append(cand)
        return out
