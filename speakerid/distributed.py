"""Process layout and collectives for training and extraction, and the thread policy.

* :func:`setup_distributed` reads torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and
  starts NCCL (GPU) or gloo (CPU) when there is more than one process.
* :func:`gather_with_grad` / :func:`gather_no_grad` / :func:`all_gather_rows`: the
  all-gathers of the trainer (pair losses see the global batch) and of MoCo's queue.
* :class:`GlobalBatchNorm`: BatchNorm over the global batch on CPU (``SyncBatchNorm`` is
  GPU-only).
* Thread policy (:func:`thread_count`, :func:`apply_thread_policy`): by default a process
  uses as many torch threads as the CPUs it may run on (``os.sched_getaffinity``) divided by
  the processes that share them (its worker processes, the torchrun ranks of the node), at
  least one; ``--threads N`` or ``SPEAKERID_THREADS=N`` override it (``SPEAKERID_THREADS=torch``:
  torch's defaults). Oversubscribed torch threads wait for cores other processes hold; this
  keeps the total at the core count, and ``import speakerid`` makes idle OpenMP threads sleep
  rather than spin (``OMP_WAIT_POLICY=PASSIVE`` unless set).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

logger = logging.getLogger(__name__)

# The autograd collectives below are "deprecated" in favour of private
# torch.distributed._functional_collectives, whose reduce-scatter backward gloo lacks.
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.", category=FutureWarning)

THREADS_ENV = "SPEAKERID_THREADS"


# --------------------------------------------------------------------------- threads
def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_count(threads: int | None = None, workers: int = 0) -> int:
    """Torch threads for this process: ``threads``, else ``$SPEAKERID_THREADS``, else the policy.

    The policy: available CPUs // (this process + ``workers`` busy worker processes + the other
    torchrun ranks on this node), at least 1.
    """
    if threads is None:
        env = os.environ.get(THREADS_ENV, "").strip()
        if env == "torch":  # torch's own defaults, untouched
            return torch.get_num_threads()
        if env:
            try:
                threads = int(env)
            except ValueError:
                raise ValueError(f"{THREADS_ENV}: expected a positive integer, got {env!r}") from None
            if threads < 1:
                raise ValueError(f"{THREADS_ENV}: expected a positive integer, got {env!r}")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads: expected a positive integer, got {threads}")
        return int(threads)
    local_world = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, available_cpus() // (local_world * (1 + max(0, int(workers)))))


def apply_thread_policy(threads: int | None = None, workers: int = 0) -> int:
    """Set torch's intra-op (and, once, inter-op) threads by :func:`thread_count`; returns the count."""
    n = thread_count(threads, workers)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # only settable before the first parallel work; keep what is there
        pass
    logger.debug("torch threads: %d (cpus %d, workers %d)", n, available_cpus(), workers)
    return n


# --------------------------------------------------------------------------- process groups
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
        # Long timeout: extraction's barrier waits for the slowest rank's whole share.
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=12))
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
    """Concatenate ``x`` of all ranks (no gradient)."""
    if not info.distributed:
        return x
    return all_gather_rows(x, info.group)


def all_gather_rows(x: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Concatenate ``x`` of all ranks of ``group`` in rank order (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return x
    world = dist.get_world_size(group)
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim=0)


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def teardown(info: DistInfo) -> None:
    """Destroy the process group when this process created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


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
