"""A 1x1 ("pointwise") 1-D convolution computed as one batched matrix product.

``PointwiseConv1d`` is ``nn.Conv1d(in_ch, out_ch, 1)`` with the same parameters and state-dict keys
(weight ``(out, in, 1)``, bias ``(out,)``), so checkpoints load unchanged, but its forward is
``baddbmm(bias, W, x)`` over the batch instead of the convolution kernels: at batch 1 torch takes
its slow (im2col) convolution path for 1x1 filters and parallelises it badly, while the matrix
product goes straight to BLAS. benchmarks/results_layers.md (``python benchmarks/bench_layers.py``):
512 -> 512 channels, 200 frames, 2 threads: batch 1 1.25 ms -> 0.97 ms (1.29x), batch 32 1.26x;
1536 -> 1536 0.99-1.07x; one thread 1.02-1.19x (two runs: 1.0-1.35x).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PointwiseConv1d"]


class PointwiseConv1d(nn.Conv1d):
    """``nn.Conv1d(in_channels, out_channels, kernel_size=1)`` as ``bias + W @ x`` per utterance."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.size(0)
        w = self.weight.squeeze(-1).expand(batch, -1, -1)
        bias = self.bias  # a local, so TorchScript can refine the Optional
        if bias is None:
            return torch.bmm(w, x)
        return torch.baddbmm(bias.unsqueeze(-1).expand(batch, -1, -1), w, x)
