"""Reductions of per-element losses, kept apart from the loss formulas (pytorch-metric-learning's
model: a loss yields per-element terms and a mask of the terms that exist, a reducer averages).

Both reducers work on dense tensors with a boolean mask of the valid elements and never leave the
device (no host sync, no boolean indexing): an empty selection gives a zero that is still connected
to the graph, so ``backward`` works on a batch without a single valid pair or triplet.
"""

from __future__ import annotations

import torch

__all__ = ["mean_over", "mean_nonzero", "masked_logsumexp", "neg_fill"]


def mean_over(losses: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``losses`` over the elements where ``mask`` is True (pml's ``MeanReducer``); 0 if none."""
    total = torch.where(mask, losses, torch.zeros((), dtype=losses.dtype, device=losses.device)).sum()
    return total / mask.sum().clamp(min=1).to(losses.dtype)


def mean_nonzero(losses: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``losses`` over the masked elements that are > 0 (pml's ``AvgNonZeroReducer``); 0 if none."""
    return mean_over(losses, mask & (losses > 0))


def neg_fill(dtype: torch.dtype) -> float:
    """A finite stand-in for -inf in masked log-sum-exps: ``exp`` of it underflows to exactly 0 next
    to any real term, a row of nothing but it stays finite (no NaN gradient), and two of them add up
    without overflowing."""
    return -torch.finfo(dtype).max / 4


def masked_logsumexp(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row-wise log-sum-exp of ``x[B, R]`` over ``mask``; 0 for a row with an empty mask (as pml's
    ``lmu.logsumexp(keep_mask=...)``), with a finite (zero) gradient there."""
    lse = torch.logsumexp(x.masked_fill(~mask, neg_fill(x.dtype)), dim=1)
    return torch.where(mask.any(dim=1), lse, torch.zeros_like(lse))
