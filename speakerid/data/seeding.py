"""Seeding rules of the training data: every random choice is a function of (seed, epoch, position, stream).

Streams keep the uses independent: ``STREAM_CHUNK + v`` for the chunk/augmentation chain of
view ``v`` (and its dither), ``STREAM_SPECAUG + v`` for SpecAugment, ``STREAM_BATCH`` for the
per-batch MixUp draw. Because nothing depends on the worker or rank that makes a sample, the
data are the same for any number of DataLoader workers or DDP processes.
"""

from __future__ import annotations

import torch

from speakerid.data.sampler import derive_seed

STREAM_CHUNK = 0  # view 0 (view v uses STREAM_CHUNK + v)
STREAM_SPECAUG = 100
STREAM_BATCH = 200


def sample_generator(seed: int, epoch: int, pos: int, stream: int = STREAM_CHUNK) -> torch.Generator:
    """The CPU generator of sample ``pos`` of ``epoch`` (one independent ``stream`` per use)."""
    return torch.Generator().manual_seed(derive_seed(seed, epoch, pos, stream))


def batch_generator(seed: int, epoch: int, which: int) -> torch.Generator:
    """The generator of global batch ``which`` of ``epoch`` (same on every rank)."""
    return torch.Generator().manual_seed(derive_seed(seed, epoch, which, STREAM_BATCH))
