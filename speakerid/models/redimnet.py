"""ReDimNet speaker encoder (B0-B6).

Yakovlev, Makarov, Ivanov, Kopylov & Shirokov, "Reshape Dimensions Network for Speaker
Recognition", Interspeech 2024 (arXiv:2407.18223). The network keeps one 1-D representation
``(B, C * F, T)`` and, per stage, *reshapes* it into a 2-D map ``(B, C_s, F_s, T)`` for 2-D blocks
(residual or ConvNeXt-like; frequency halved / thirded by a strided conv) and back to 1-D for a
time-context block (depthwise convs of kernels 7-59 plus a Transformer layer, Sec. 2.2). Every
stage reads a learned softmax mix of *all* previous stage outputs (Sec. 2.3, the "weighted sum
of previous outputs" that replaces plain residuals across stages), and the last mix goes to
attentive statistics pooling (:class:`.pooling.ASTP`, global context) and a linear embedding.

Configurations B0-B6 are WeSpeaker's (``wespeaker/models/redimnet.py``, the authors' models).
State-dict names are WeSpeaker's except that the stages live in a ``ModuleList`` (so TorchScript
can loop over them): ``backbone.stage{i}.*`` is ``backbone.stages.{i}.body.*``, the stage-input
mixing weights ``backbone.inputs_weights.{i}`` are ``backbone.stages.{i}.mix`` and the last one
``backbone.out_mix`` (:func:`wespeaker_key` maps a WeSpeaker name).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from .pooling import ASTP, embedding_head

__all__ = ["ReDimNet", "REDIMNET_CONFIGS", "wespeaker_key"] + [f"ReDimNetB{i}" for i in range(7)]


class LayerNormCF(nn.Module):
    """Layer norm over the channel axis (dim 1) of a channels-first tensor (ConvNeXt's)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        shape = [1, -1] + [1] * (x.dim() - 2)
        return self.weight.view(shape) * x + self.bias.view(shape)


class ConvNeXtLikeBlock(nn.Module):
    """Depthwise conv(s) -> BN -> GELU -> pointwise conv, plus the input (Liu et al., CVPR 2022)."""

    def __init__(self, channels: int, dim: int, kernel_sizes: list, group_divisor: int = 1) -> None:
        super().__init__()
        conv = nn.Conv2d if dim == 2 else nn.Conv1d
        norm = nn.BatchNorm2d if dim == 2 else nn.BatchNorm1d
        self.dwconvs = nn.ModuleList(
            [conv(channels, channels, ks, padding="same", groups=channels // group_divisor) for ks in kernel_sizes]
        )
        self.norm = norm(channels * len(kernel_sizes))
        self.pwconv1 = conv(channels * len(kernel_sizes), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([dw(x) for dw in self.dwconvs], dim=1)
        return x + self.pwconv1(F.gelu(self.norm(y)))


class FwSEBlock(nn.Module):
    """Frequency-wise squeeze-excitation: one gate per frequency bin (mean over channels and time)."""

    def __init__(self, num_freq: int, num_feats: int = 64) -> None:
        super().__init__()
        self.squeeze = nn.Linear(num_freq, num_feats)
        self.exitation = nn.Linear(num_feats, num_freq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.exitation(F.relu(self.squeeze(x.mean(dim=[1, 3])))))
        return x * s[:, None, :, None]


class ResBasicBlock(nn.Module):
    """Residual block of grouped 3x3 + pointwise convs (conv -> ReLU -> BN), optional fwSE."""

    def __init__(self, channels: int, num_freq: int, group_divisor: int, use_fwse: bool) -> None:
        super().__init__()
        groups = channels // group_divisor
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False, groups=groups)
        self.conv1pw = nn.Conv2d(channels, channels, 1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False, groups=groups)
        self.conv2pw = nn.Conv2d(channels, channels, 1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.se = FwSEBlock(num_freq, min(64, max(channels, 32))) if use_fwse else nn.Identity()
        self.downsample = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(F.relu(self.conv1pw(self.conv1(x))))
        out = self.se(self.bn2(self.conv2pw(self.conv2(out))))
        return F.relu(out + self.downsample(x))


class ConvBlock2d(nn.Module):
    """The 2-D block of a stage: "convnext_like", "basic_resnet" or "basic_resnet_fwse"."""

    def __init__(self, channels: int, num_freq: int, block_type: str, group_divisor: int) -> None:
        super().__init__()
        if block_type == "convnext_like":
            self.conv_block: nn.Module = ConvNeXtLikeBlock(channels, 2, [(3, 3)], group_divisor)
        elif block_type in ("basic_resnet", "basic_resnet_fwse"):
            self.conv_block = ResBasicBlock(channels, num_freq, group_divisor, block_type.endswith("fwse"))
        else:
            raise ValueError(f"redimnet: unknown 2-D block type {block_type!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x)


class MultiHeadAttention(nn.Module):
    """Scaled dot-product self-attention (Vaswani et al. 2017, Eq. 1), input ``(B, T, C)``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dim {dim} not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.scaling = self.head_dim**-0.5
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2).reshape(b * self.heads, t, self.head_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, c = h.shape
        q = self._heads(self.q_proj(h) * self.scaling)
        att = torch.softmax(torch.bmm(q, self._heads(self.k_proj(h)).transpose(1, 2)), dim=-1)
        out = torch.bmm(att, self._heads(self.v_proj(h))).view(b, self.heads, t, self.head_dim)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, c))


class FeedForward(nn.Module):
    """Linear -> GELU (tanh form) -> linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(dim, hidden)
        self.output_dense = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_dense(F.gelu(self.intermediate_dense(x), approximate="tanh"))


class TransformerEncoderLayer(nn.Module):
    """Post-norm Transformer layer on a channels-first ``(B, C, T)`` input."""

    def __init__(self, dim: int, hidden: int, heads: int = 4) -> None:
        super().__init__()
        self.attention = MultiHeadAttention(dim, heads)
        self.layer_norm = nn.LayerNorm(dim, eps=1e-6)
        self.feed_forward = FeedForward(dim, hidden)
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)
        h = self.layer_norm(h + self.attention(h))
        h = self.final_layer_norm(h + self.feed_forward(h))
        return h.transpose(1, 2)


class TimeContextBlock1d(nn.Module):
    """1-D time-context block (paper Sec. 2.2): reduce channels, four depthwise ConvNeXt-like
    blocks (kernels 7, 19, 31, 59) and a Transformer layer, expand, plus the input."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.red_dim_conv = nn.Sequential(nn.Conv1d(channels, hidden, 1), LayerNormCF(hidden))
        self.tcm = nn.Sequential(
            *[ConvNeXtLikeBlock(hidden, 1, [k], 1) for k in (7, 19, 31, 59)],
            TransformerEncoderLayer(hidden, hidden, 4),
        )
        self.exp_dim_conv = nn.Conv1d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.exp_dim_conv(self.tcm(self.red_dim_conv(x)))


class To1d(nn.Module):
    """``(B, C, F, T) -> (B, F * C, T)`` (frequency-major, as the reshape back expects)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, t = x.shape
        return x.permute(0, 2, 1, 3).reshape(b, c * f, t)


def _mix(outs: list[torch.Tensor], weight: torch.Tensor) -> torch.Tensor:
    """Softmax-weighted sum of the 1-D outputs so far (paper Sec. 2.3)."""
    return (torch.softmax(weight, dim=1) * torch.stack(outs, dim=1)).sum(dim=1)


class Stage(nn.Module):
    """Mix previous outputs -> reshape to ``(B, c, f, T)`` -> strided conv + 2-D blocks -> 1-D (+ time context)."""

    def __init__(self, index: int, c: int, f: int, width: int, body: nn.Sequential) -> None:
        super().__init__()
        self.c = c
        self.f = f
        self.mix = nn.Parameter(torch.zeros(1, index + 1, width, 1) if index > 0 else torch.ones(1, 1, 1, 1),
                                requires_grad=index > 0)
        self.body = body

    def forward(self, outs: list[torch.Tensor]) -> torch.Tensor:
        x = _mix(outs, self.mix)
        b, _, t = x.shape
        return self.body(x.reshape(b, self.f, self.c, t).permute(0, 2, 1, 3))


class ReDimNetBone(nn.Module):
    """Stem + stages + the last mix: ``(B, 1, F, T) -> (B, C * F, T)``."""

    def __init__(self, feat_dim: int, c: int, block_2d: str, stages: list, group_divisor: int) -> None:
        super().__init__()
        width = c * feat_dim
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding="same"), LayerNormCF(c))
        cur_c, cur_f = c, feat_dim
        mods: list[nn.Module] = []
        for i, (stride, num_blocks, conv_exp, att_red) in enumerate(stages):
            if stride not in (1, 2, 3) or cur_f % stride:
                raise ValueError(f"redimnet stage {i}: stride {stride} does not divide {cur_f} frequency bins")
            in_c, in_f = cur_c, cur_f
            layers: list[nn.Module] = [nn.Conv2d(cur_c, stride * cur_c * conv_exp, (stride, 1), stride=(stride, 1))]
            cur_c, cur_f = stride * cur_c, cur_f // stride
            layers += [ConvBlock2d(cur_c * conv_exp, cur_f, block_2d, group_divisor) for _ in range(num_blocks)]
            if conv_exp != 1:
                layers.append(nn.Sequential(
                    nn.Conv2d(cur_c * conv_exp, cur_c, 3, padding="same", groups=cur_c // group_divisor),
                    nn.BatchNorm2d(cur_c, eps=1e-6), nn.GELU(), nn.Conv2d(cur_c, cur_c, 1),
                ))
            layers.append(To1d())
            if att_red is not None:
                hidden = max(4, width // att_red)
                hidden += -hidden % 4  # 4 attention heads; a no-op for B0-B6 (all multiples of 4)
                layers.append(TimeContextBlock1d(width, hidden))
            mods.append(Stage(i, in_c, in_f, width, nn.Sequential(*layers)))
        self.stages = nn.ModuleList(mods)
        self.out_mix = nn.Parameter(torch.zeros(1, len(stages) + 1, width, 1))
        self.mfa = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        b, c, f, t = x.shape
        outs = [x.permute(0, 2, 1, 3).reshape(b, c * f, t)]
        for stage in self.stages:
            outs.append(stage(outs))
        return self.mfa(_mix(outs, self.out_mix))


# name -> (C, 2-D block type, stages (stride, blocks, conv expansion, attention reduction), group divisor)
REDIMNET_CONFIGS: dict[str, tuple[int, str, list, int]] = {
    "B0": (10, "basic_resnet", [(1, 2, 1, 30), (2, 3, 2, 30), (1, 3, 3, 30), (2, 4, 2, 10), (1, 3, 1, 10)], 1),
    "B1": (12, "convnext_like", [(1, 2, 1, None), (2, 3, 1, None), (3, 4, 1, 12), (2, 5, 1, 12), (2, 3, 1, 8)], 8),
    "B2": (16, "convnext_like", [(1, 2, 1, 12), (2, 2, 1, 12), (1, 3, 1, 12), (2, 4, 1, 8), (1, 4, 1, 8), (2, 4, 1, 4)], 4),
    "B3": (16, "basic_resnet_fwse", [(1, 6, 4, 32), (2, 6, 2, 32), (1, 8, 2, 32), (2, 10, 2, 16), (1, 10, 1, 16), (2, 8, 1, 16)], 1),
    "B4": (32, "basic_resnet_fwse", [(1, 4, 2, 48), (2, 4, 2, 48), (1, 6, 2, 48), (2, 6, 1, 32), (1, 8, 1, 24), (2, 4, 1, 16)], 1),
    "B5": (32, "basic_resnet_fwse", [(1, 4, 2, 48), (2, 4, 2, 48), (1, 6, 2, 48), (2, 6, 1, 32), (1, 8, 1, 24), (2, 4, 1, 16)], 16),
    "B6": (32, "basic_resnet", [(1, 4, 4, 32), (2, 6, 2, 32), (1, 6, 2, 24), (3, 8, 1, 24), (1, 8, 1, 16), (2, 8, 1, 16)], 32),
}


class ReDimNet(nn.Module):
    """ReDimNet: ``forward(feats[B, frames, feat_dim]) -> [B, embed_dim]``.

    Args:
        config: "B0".."B6" (:data:`REDIMNET_CONFIGS`); ``feat_dim`` must be divisible by the
            stages' total frequency stride (60 for B0 and 72 for B1-B6 in the paper).
        embed_dim: 192. two_emb_layer: ReLU -> BN -> Linear after the first layer (WeSpeaker option).
        base_channels: overrides the configuration's C (a multiple of its group divisor; for
            scaled-down variants).
    """

    def __init__(
        self, config: str = "B2", feat_dim: int = 72, embed_dim: int = 192, two_emb_layer: bool = False,
        base_channels: int | None = None,
    ) -> None:
        super().__init__()
        if config not in REDIMNET_CONFIGS:
            raise ValueError(f"redimnet config {config!r} not in {sorted(REDIMNET_CONFIGS)}")
        c, block_2d, stages, group_divisor = REDIMNET_CONFIGS[config]
        if base_channels is not None:
            c, group_divisor = int(base_channels), min(group_divisor, int(base_channels))
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        self.two_emb_layer = two_emb_layer
        self.backbone = ReDimNetBone(feat_dim, c, block_2d, stages, group_divisor)
        self.pool = ASTP(c * feat_dim, bottleneck_dim=128, global_context=True)
        self.seg_1, self.seg_bn_1, self.seg_2 = embedding_head(2 * c * feat_dim, embed_dim, two_emb_layer)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        emb = self.seg_1(self.pool(self.backbone(feats.transpose(1, 2).unsqueeze(1))))
        if self.two_emb_layer:
            emb = self.seg_2(self.seg_bn_1(F.relu(emb)))
        return emb


def wespeaker_key(key: str, num_stages: int) -> str:
    """A WeSpeaker ReDimNet state-dict name -> this module's (see the module docstring)."""
    m = re.match(r"^backbone\.inputs_weights\.(\d+)$", key)
    if m:
        i = int(m.group(1))
        return "backbone.out_mix" if i == num_stages else f"backbone.stages.{i}.mix"
    return re.sub(r"^backbone\.stage(\d+)\.", r"backbone.stages.\1.body.", key)


def _variant(config: str, default_feat_dim: int) -> type[ReDimNet]:
    def __init__(
        self, feat_dim: int = default_feat_dim, embed_dim: int = 192, two_emb_layer: bool = False,
        base_channels: int | None = None,
    ) -> None:
        ReDimNet.__init__(self, config, feat_dim, embed_dim, two_emb_layer, base_channels)

    doc = f"ReDimNet-{config} (Yakovlev et al. 2024; WeSpeaker's ReDimNet{config})."
    return type(f"ReDimNet{config}", (ReDimNet,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})


ReDimNetB0 = _variant("B0", 60)
ReDimNetB1 = _variant("B1", 72)
ReDimNetB2 = _variant("B2", 72)
ReDimNetB3 = _variant("B3", 72)
ReDimNetB4 = _variant("B4", 72)
ReDimNetB5 = _variant("B5", 72)
ReDimNetB6 = _variant("B6", 72)
