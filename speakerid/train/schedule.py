"""Per-step learning-rate schedule and per-epoch margin schedule of the trainer.

Learning rate: linear warm-up from ~0 to ``lr`` over ``warmup_epochs``, then a decay to
``final_lr`` over the remaining steps, either exponential (WeSpeaker's
``ExponentialDecrease``: ``lr * (final_lr / lr) ** t``) or cosine
(Loshchilov & Hutter 2017, SGDR, Eq. 5 without restarts:
``final_lr + (lr - final_lr) * (1 + cos(pi t)) / 2``), with ``t`` in [0, 1] the fraction of
the post-warm-up steps done. The schedule is a pure function of the global step, so
resuming needs only the step count.

Margin: for margin losses (AAM-softmax, Circle Loss with a scheduled margin), the margin
stays at ``initial`` until ``increase_start_epoch``, rises linearly (per step) to ``final``
at ``fix_start_epoch`` and stays there -- WeSpeaker's margin warm-up, which keeps the
early, still-random embeddings from being pushed by a large margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from speakerid.config import MarginScheduleConfig, OptimConfig


class ScheduleError(ValueError):
    """An optimiser or margin schedule setting is out of range."""


@dataclass(frozen=True)
class LRSchedule:
    """Warm-up + exponential/cosine decay, evaluated per optimiser step."""

    lr: float
    final_lr: float
    warmup_steps: int
    total_steps: int
    kind: str = "exponential"

    def __post_init__(self) -> None:
        if self.kind not in ("exponential", "cosine"):
            raise ScheduleError(f"optim.scheduler: expected 'exponential' or 'cosine', got {self.kind!r}")
        if self.lr <= 0 or self.final_lr <= 0:
            raise ScheduleError(f"optim.lr and optim.final_lr must be > 0, got {self.lr} and {self.final_lr}")
        if self.total_steps < 1 or self.warmup_steps < 0:
            raise ScheduleError(f"schedule needs total_steps >= 1 and warmup_steps >= 0, got {self.total_steps}, {self.warmup_steps}")

    @classmethod
    def from_config(cls, cfg: OptimConfig, steps_per_epoch: int, epochs: int) -> "LRSchedule":
        total = max(1, steps_per_epoch * epochs)
        warmup = min(total - 1, int(round(cfg.warmup_epochs * steps_per_epoch)))
        return cls(cfg.lr, cfg.final_lr, max(0, warmup), total, cfg.scheduler)

    def __call__(self, step: int) -> float:
        """Learning rate for optimiser step ``step`` (0-based)."""
        if step < self.warmup_steps:
            # (step + 1) so that the very first update is not a wasted lr=0 step.
            return self.lr * (step + 1) / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps - 1)
        t = min(1.0, (step - self.warmup_steps) / decay_steps)
        if self.kind == "exponential":
            return self.lr * (self.final_lr / self.lr) ** t
        return self.final_lr + (self.lr - self.final_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def margin_at(cfg: MarginScheduleConfig, epoch: int, step_in_epoch: int, steps_per_epoch: int) -> float:
    """Margin for a step: ``initial`` -> linear rise over [increase_start, fix_start) epochs -> ``final``.

    ``epoch`` is 0-based here; the config's epochs count from 0 as well (``increase_start_epoch=1``
    means the margin starts rising after the first epoch), as in WeSpeaker's MarginScheduler.
    """
    if not cfg.enabled:
        return cfg.final
    if cfg.fix_start_epoch < cfg.increase_start_epoch:
        raise ScheduleError(
            f"margin: fix_start_epoch ({cfg.fix_start_epoch}) < increase_start_epoch ({cfg.increase_start_epoch})"
        )
    position = epoch + step_in_epoch / max(1, steps_per_epoch)
    if position < cfg.increase_start_epoch:
        return cfg.initial
    if position >= cfg.fix_start_epoch:
        return cfg.final
    span = cfg.fix_start_epoch - cfg.increase_start_epoch
    return cfg.initial + (cfg.final - cfg.initial) * (position - cfg.increase_start_epoch) / span
