"""CAM++ speaker encoder.

Wang, Zheng, Chen, Cheng & Chen, "CAM++: A Fast and Efficient Network for Speaker Verification
Using Context-Aware Masking", Interspeech 2023 (arXiv:2303.00332):

- front convolution module (FCM, Sec. 2.1): a 2-D ResNet head (3x3 conv, two stages of two basic
  blocks that stride over frequency only, one more frequency-stride conv) whose
  ``(channels, freq / 8)`` output is flattened into 1-D channels;
- a TDNN layer (kernel 5, stride 2 over time) and a densely connected TDNN backbone (D-TDNN, Yu &
  Li 2020): three blocks of 12 / 24 / 16 layers, growth rate 32, bottleneck 4 x 32, kernel 3,
  dilation 1 / 2 / 2, each block followed by a transition layer that halves the channels;
- context-aware masking (CAM, Sec. 2.2, Eqs. 2-5) in every D-TDNN layer: the output of the local
  conv ``F(X)`` is multiplied by ``M = sigmoid(W_2 relu(W_1 (e_g + e_s) + b_1) + b_2)``, with
  ``e_g`` the utterance mean (global context) and ``e_s`` the mean over the 100-frame segment each
  frame lies in (segment context, Eq. 4);
- statistics pooling (:class:`.pooling.TSTP`) and a dense layer with a non-affine BatchNorm to
  the 512-d embedding.

3D-Speaker's own layout (``speakerlab/models/campplus/DTDNN.py``, whose checkpoints
``speakerid import --from 3dspeaker`` reads) has the same module tree and state-dict names; it
differs only in the statistics pooling, ``x.std(unbiased=True)`` with no epsilon under the root,
where WeSpeaker adds 1e-7 to the variance: ``stats_eps=0.0`` gives 3D-Speaker's computation.

BN-ReLU precedes each conv inside the D-TDNN layers (pre-activation, as DenseNet). The module
tree and state-dict names are WeSpeaker's ``CAMPPlus`` (``wespeaker/models/campplus.py``, itself
from 3D-Speaker), so WeSpeaker checkpoints load as they are (tests/test_wespeaker_parity.py).
7.18M parameters at feat_dim=80, embed_dim=512 (the paper's 7.2M).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .pooling import TSTP

__all__ = ["CAMPPlus", "segment_context_maps"]


def _bn_relu(channels: int, affine: bool = True, relu: bool = True) -> nn.Sequential:
    """BatchNorm1d (+ ReLU) as a Sequential with WeSpeaker's child names ``batchnorm`` / ``relu``."""
    layers = nn.Sequential()
    layers.add_module("batchnorm", nn.BatchNorm1d(channels, affine=affine))
    if relu:
        layers.add_module("relu", nn.ReLU())
    return layers


class BasicResBlock(nn.Module):
    """ResNet basic block (He et al. 2016) striding over frequency only: ``stride=(s, 1)``."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class FCM(nn.Module):
    """Front convolution module (paper Sec. 2.1): ``(B, F, T) -> (B, channels * F / 8, T)``."""

    def __init__(self, feat_dim: int = 80, m_channels: int = 32, num_blocks: tuple[int, int] = (2, 2)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, m_channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m_channels)
        self.layer1 = nn.Sequential(
            *[BasicResBlock(m_channels, m_channels, 2 if i == 0 else 1) for i in range(num_blocks[0])]
        )
        self.layer2 = nn.Sequential(
            *[BasicResBlock(m_channels, m_channels, 2 if i == 0 else 1) for i in range(num_blocks[1])]
        )
        self.conv2 = nn.Conv2d(m_channels, m_channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(m_channels)
        self.out_channels = m_channels * (feat_dim // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        out = self.layer2(self.layer1(out))
        out = F.relu(self.bn2(self.conv2(out)))
        return out.flatten(1, 2)


class TDNNLayer(nn.Module):
    """Conv1d (no bias) -> BN -> ReLU, "same" padding."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        pad = (kernel_size - 1) // 2 * dilation
        self.linear = nn.Conv1d(in_ch, out_ch, kernel_size, stride=stride, padding=pad, dilation=dilation, bias=False)
        self.nonlinear = _bn_relu(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


def segment_context_maps(x: torch.Tensor, seg_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two matrices that turn CAM's per-frame context (Eq. 4) into per-segment work.

    For ``x [B, C, frames]`` cut into ``n_seg = ceil(frames / seg_len)`` segments (the last one
    shorter, as the ``avg_pool1d(ceil_mode=True)`` of 3D-Speaker's code):

    - ``pool [frames, n_seg]``: ``x @ pool`` is ``e_g + e_s`` of each segment (utterance mean plus
      the segment's own mean);
    - ``spread [n_seg, frames]`` (one-hot): ``m @ spread`` gives each frame its segment's column.

    ``e_g + e_s`` is constant within a segment, so the mask ``sigmoid(W_2 relu(W_1 (e_g + e_s)))``
    (Eqs. 2-5) needs computing once per segment, not per frame: a 3 s clip has 150 frames at the
    D-TDNN's rate and 2 segments. Built from tensor arithmetic on ``x``'s length, so a traced /
    exported graph keeps a dynamic frame axis. One pair serves every layer of a dense block (all
    see the same frames).
    """
    frames = torch.arange(x.shape[-1], device=x.device)
    starts = torch.arange(0, x.shape[-1], seg_len, device=x.device)
    offset = frames.unsqueeze(1) - starts.unsqueeze(0)
    onehot = ((offset >= 0) & (offset < seg_len)).to(x.dtype)  # [frames, n_seg]
    pool = onehot / onehot.sum(0, keepdim=True) + 1.0 / x.shape[-1]
    return pool, onehot.transpose(0, 1)


class CAMLayer(nn.Module):
    """Context-aware masking (paper Eqs. 2-5): local conv output times a mask from global + segment means.

    The mask is computed per segment and spread to the frames (:func:`segment_context_maps`):
    the same values as computing it at every frame, with ``W_1`` / ``W_2`` run on ``n_seg``
    columns instead of ``frames``.
    """

    def __init__(self, bn_channels: int, out_channels: int, kernel_size: int, dilation: int, reduction: int = 2, seg_len: int = 100) -> None:
        super().__init__()
        pad = (kernel_size - 1) // 2 * dilation
        self.linear_local = nn.Conv1d(bn_channels, out_channels, kernel_size, padding=pad, dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(bn_channels, bn_channels // reduction, 1)
        self.linear2 = nn.Conv1d(bn_channels // reduction, out_channels, 1)
        self.seg_len = seg_len

    def forward(self, x: torch.Tensor, maps: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``maps``: :func:`segment_context_maps` of ``x`` (built here when not given)."""
        pool, spread = segment_context_maps(x, self.seg_len) if maps is None else maps
        y = self.linear_local(x)
        context = x @ pool  # [B, C, n_seg]: e_g + e_s per segment
        mask = torch.sigmoid(self.linear2(F.relu(self.linear1(context))))
        return y * (mask @ spread)


class CAMDenseTDNNLayer(nn.Module):
    """D-TDNN layer: BN-ReLU -> 1x1 bottleneck -> BN-ReLU -> CAM layer (growth-rate outputs)."""

    def __init__(self, in_channels: int, out_channels: int, bn_channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.nonlinear1 = _bn_relu(in_channels)
        self.linear1 = nn.Conv1d(in_channels, bn_channels, 1, bias=False)
        self.nonlinear2 = _bn_relu(bn_channels)
        self.cam_layer = CAMLayer(bn_channels, out_channels, kernel_size, dilation)

    def forward(self, x: torch.Tensor, maps: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))), maps)


class CAMDenseTDNNBlock(nn.Module):
    """Dense block: each layer's output is concatenated to its input (Huang et al. 2017)."""

    def __init__(self, num_layers: int, in_channels: int, growth: int, bn_channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = CAMDenseTDNNLayer(in_channels + i * growth, growth, bn_channels, kernel_size, dilation)
            self.add_module(f"tdnnd{i + 1}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = segment_context_maps(x, self.tdnnd1.cam_layer.seg_len)  # every layer sees these frames
        for layer in self.children():
            x = torch.cat([x, layer(x, maps)], dim=1)
        return x


class TransitLayer(nn.Module):
    """BN-ReLU -> 1x1 conv (no bias) halving the channels between dense blocks."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.nonlinear = _bn_relu(in_channels)
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class DenseLayer(nn.Module):
    """Embedding layer: 1x1 conv (no bias) on the pooled statistics, then a non-affine BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.nonlinear = _bn_relu(out_channels, affine=False, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


class CAMPPlus(nn.Module):
    """CAM++: ``forward(feats[B, frames, feat_dim]) -> [B, embed_dim]``.

    Args:
        feat_dim: fbank bins (a multiple of 8). embed_dim: 512 in the paper.
        growth_rate, bn_size, init_channels: D-TDNN growth (32), bottleneck factor (4), TDNN width (128).
        pooling: "TSTP" (the paper's statistics pooling).
        stats_eps: added to the variance under the square root of the pooled std: 1e-7 as
            WeSpeaker, 0.0 as 3D-Speaker.
    """

    BLOCKS: tuple[tuple[int, int, int], ...] = ((12, 3, 1), (24, 3, 2), (16, 3, 2))  # layers, kernel, dilation

    def __init__(
        self,
        feat_dim: int = 80,
        embed_dim: int = 512,
        growth_rate: int = 32,
        bn_size: int = 4,
        init_channels: int = 128,
        pooling: str = "TSTP",
        stats_eps: float = 1e-7,
    ) -> None:
        super().__init__()
        if pooling.upper() != "TSTP":
            raise ValueError(f"campplus supports pooling 'TSTP' only, got {pooling!r}")
        if feat_dim % 8:
            raise ValueError(f"campplus feat_dim must be a multiple of 8, got {feat_dim}")
        if not stats_eps >= 0.0:
            raise ValueError(f"campplus stats_eps must be >= 0, got {stats_eps}")
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        self.head = FCM(feat_dim)
        self.xvector = nn.Sequential()
        self.xvector.add_module("tdnn", TDNNLayer(self.head.out_channels, init_channels, 5, stride=2))
        channels = init_channels
        for i, (num_layers, kernel, dilation) in enumerate(self.BLOCKS):
            block = CAMDenseTDNNBlock(num_layers, channels, growth_rate, bn_size * growth_rate, kernel, dilation)
            self.xvector.add_module(f"block{i + 1}", block)
            channels += num_layers * growth_rate
            self.xvector.add_module(f"transit{i + 1}", TransitLayer(channels, channels // 2))
            channels //= 2
        self.xvector.add_module("out_nonlinear", _bn_relu(channels))
        self.xvector.add_module("stats", TSTP(channels, eps=stats_eps))
        self.xvector.add_module("dense", DenseLayer(2 * channels, embed_dim))
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.xvector(self.head(feats.transpose(1, 2)))
