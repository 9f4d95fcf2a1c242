"""Draws from an explicit ``torch.Generator`` (on its device): every augmentation op takes the
generator of its caller, so a chunk's augmentation is a function of (seed, epoch, index) and
not of the worker or process that made it (see :mod:`speakerid.data.seeding`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def draw_uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One draw of U[low, high) from ``generator``."""
    u = torch.rand((), generator=generator, device=generator.device).item()
    return low + (high - low) * u


def draw_randint(generator: torch.Generator, low: int, high: int) -> int:
    """One draw of U{low, ..., high - 1} from ``generator``."""
    return int(torch.randint(low, high, (), generator=generator, device=generator.device).item())


def draw_bernoulli(generator: torch.Generator, prob: float) -> bool:
    return prob >= 1.0 or (prob > 0.0 and draw_uniform(generator, 0.0, 1.0) < prob)


def draw_rand(shape: Sequence[int], generator: torch.Generator, device: torch.device) -> Tensor:
    """U[0, 1) of ``shape`` drawn on the generator's device, then moved to ``device``."""
    return torch.rand(tuple(shape), generator=generator, device=generator.device).to(device)
