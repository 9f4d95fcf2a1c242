"""Temporal pooling layers: frame-level features ``(batch, channels, frames)`` -> ``(batch, out_dim)``.

Pooling works on channel-first tensors because the encoders produce them that way (1-D convs in
ECAPA-TDNN / CAM++; ResNet flattens ``(channels, freq)`` into channels before pooling).

Standard deviations use the unbiased (Bessel-corrected) variance ``1/(T-1) sum_t (h_t - mu)^2``,
as WeSpeaker's ``torch.var`` does, so WeSpeaker checkpoints give the same embeddings here (the
population variance differs by ``T/(T-1)``, 0.5% at 200 frames, which moved a ResNet34
embedding by 1e-3 relative). For a single frame (T = 1, e.g. a ResNet input of <= 8 frames) the
correction is dropped (variance 0, finite embedding) where ``torch.var`` returns NaN.
``unbiased=False`` selects the population variance everywhere.
"""

from __future__ import annotations

import torch
from torch import nn

from .pointwise import PointwiseConv1d

__all__ = ["TSTP", "ASTP", "POOLINGS", "build_pooling", "frame_var_mean"]


def frame_var_mean(x: torch.Tensor, unbiased: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(variance, mean) over the last (time) axis, keepdim; Bessel-corrected when ``unbiased``
    and more than one frame (see the module docstring)."""
    # Two passes (mean, then the mean square of the deviations) rather than torch.var_mean, whose
    # reduction over the last axis costs ~4-8 ns an element on CPU: one utterance, 2 threads,
    # (1, 1536, 200) 1.58 ms vs 0.27 ms, (1, 512, 300) 0.72 ms vs 0.18 ms. At batch 32 the passes'
    # temporaries exceed glibc's mmap threshold and are page-faulted in on each call: 0.82-0.90x
    # there (~1 % of an ECAPA forward). No branch on the size, so traced / exported graphs with
    # dynamic axes stay exact. Same values within 1e-7 relative; benchmarks/bench_layers.py ->
    # benchmarks/results_layers.md.
    frames = x.size(-1)
    mean = x.mean(dim=-1, keepdim=True)
    dev = x - mean
    var = (dev * dev).mean(dim=-1, keepdim=True)
    if unbiased and frames > 1:
        var = var * (frames / (frames - 1.0))
    return var, mean


class TSTP(nn.Module):
    """Temporal statistics pooling (x-vector; Snyder et al., ICASSP 2018, Sec. 2.2).

    Concatenates the mean and standard deviation over time:
    ``[mu, sigma]`` with ``mu = 1/T sum_t h_t``, ``sigma = sqrt(1/(T-1) sum_t (h_t - mu)^2 + eps)``
    (``1/T`` with ``unbiased=False``). Output dimension ``2 * in_dim``; no parameters.
    """

    def __init__(self, in_dim: int, eps: float = 1e-7, unbiased: bool = True) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = 2 * in_dim
        self.eps = eps
        self.unbiased = unbiased

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = frame_var_mean(x, self.unbiased)
        return torch.cat([mean.squeeze(-1), torch.sqrt(var.squeeze(-1) + self.eps)], dim=1)


class ASTP(nn.Module):
    """Attentive statistics pooling, channel- and context-dependent (ECAPA-TDNN).

    Desplanques et al., "ECAPA-TDNN", Interspeech 2020, Sec. 2.3, Eqs. (1)-(4) (after Okabe et al.
    2018). Per frame t and channel c the attention score is
    ``e_{t,c} = v_c^T f(W [h_t; mu; sigma] + b) + k_c`` (Eq. 1 with the global context of Sec. 2.3
    when ``global_context=True``: mean and std of the whole utterance appended to every frame),
    ``alpha_{t,c} = softmax_t(e_{t,c})`` (Eq. 2), and the pooled statistics are the attention-weighted
    mean ``mu~_c = sum_t alpha_{t,c} h_{t,c}`` (Eq. 3) and std
    ``sigma~_c = sqrt(sum_t alpha_{t,c} h_{t,c}^2 - mu~_c^2)`` (Eq. 4). ``f`` is tanh (ReLU trains
    worse here, as WeSpeaker notes). W and v are 1x1 convolutions (:class:`.pointwise.PointwiseConv1d`) so no transposes are needed.
    The context std is Bessel-corrected (``unbiased``, as WeSpeaker); the weighted std is not.
    Output dimension ``2 * in_dim``.
    """

    def __init__(
        self,
        in_dim: int,
        bottleneck_dim: int = 128,
        global_context: bool = True,
        eps: float = 1e-7,
        unbiased: bool = True,
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = 2 * in_dim
        self.global_context = global_context
        self.eps = eps
        self.unbiased = unbiased
        att_in = 3 * in_dim if global_context else in_dim
        self.linear1 = PointwiseConv1d(att_in, bottleneck_dim)  # W, b
        self.linear2 = PointwiseConv1d(bottleneck_dim, in_dim)  # v, k

    def attention_hidden(self, x: torch.Tensor) -> torch.Tensor:
        """``W [h_t; mu; sigma] + b`` for every frame (Eq. 1 before ``f``).

        The context columns of W multiply vectors that are the same at every frame, so they are
        applied once per utterance and added as a bias, not to a (3C, T) concatenation: a third of
        the multiply-adds, no copy, same result (same parameters, so checkpoints load unchanged).
        """
        if not self.global_context:
            return self.linear1(x)
        var, mean = frame_var_mean(x, self.unbiased)
        std = torch.sqrt(var + self.eps)
        w_frame, w_mean, w_std = self.linear1.weight.squeeze(-1).split(self.in_dim, dim=1)
        context = mean.squeeze(-1) @ w_mean.T + std.squeeze(-1) @ w_std.T  # (B, D)
        bias = self.linear1.bias
        if bias is not None:
            context = context + bias
        batch = x.size(0)
        return torch.baddbmm(context.unsqueeze(-1), w_frame.expand(batch, -1, -1), x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.softmax(self.linear2(torch.tanh(self.attention_hidden(x))), dim=2)
        ax = alpha * x
        mean_w = torch.sum(ax, dim=2)
        var_w = torch.sum(ax * x, dim=2) - mean_w * mean_w
        std_w = torch.sqrt(var_w.clamp(min=self.eps))
        return torch.cat([mean_w, std_w], dim=1)


POOLINGS: dict[str, type] = {"TSTP": TSTP, "ASTP": ASTP}


def build_pooling(name: str, in_dim: int, **kwargs) -> nn.Module:
    """Build a pooling layer by name ("TSTP" or "ASTP", case-insensitive)."""
    key = name.upper()
    if key not in POOLINGS:
        raise ValueError(f"unknown pooling {name!r}; choose one of {sorted(POOLINGS)}")
    return POOLINGS[key](in_dim, **kwargs)


def embedding_head(in_dim: int, embed_dim: int, two_emb_layer: bool) -> tuple[nn.Module, nn.Module, nn.Module]:
    """WeSpeaker's embedding layers after pooling: ``seg_1`` (linear), then, with ``two_emb_layer``,
    ``seg_bn_1`` (BatchNorm without affine) and ``seg_2`` (linear); identities otherwise.
    Returned as three modules so that each model keeps WeSpeaker's state-dict names."""
    seg_1 = nn.Linear(in_dim, embed_dim)
    if two_emb_layer:
        return seg_1, nn.BatchNorm1d(embed_dim, affine=False), nn.Linear(embed_dim, embed_dim)
    return seg_1, nn.Identity(), nn.Identity()
