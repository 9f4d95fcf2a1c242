"""ECAPA-TDNN speaker encoder.

Desplanques, Thienpondt & Demuynck, "ECAPA-TDNN: Emphasized Channel Attention, Propagation and
Aggregation in TDNN Based Speaker Verification", Interspeech 2020 (arXiv:2005.07143), Fig. 2:

- a 5-wide TDNN layer (Conv1d + ReLU + BN) on the fbank features;
- three SE-Res2Blocks (Sec. 2.2, 2.4): 1x1 conv -> Res2 dilated conv (scale 8, kernel 3, dilation
  2/3/4) -> 1x1 conv -> squeeze-excitation (bottleneck 128), with a residual connection;
- multi-layer feature aggregation (Sec. 2.5): the three block outputs are concatenated and mixed
  by a 1x1 conv to ``mfa_channels`` (1536 in the paper for both C=512 and C=1024);
- channel- and context-dependent attentive statistics pooling (Sec. 2.3, :class:`ASTP`);
- BN and a linear layer to the 192-d embedding.

Parameter counts (feat_dim=80, embed_dim=192): C=512 6.19M, C=1024 14.65M, matching the paper
(6.2M / 14.7M) and WeSpeaker's ``ECAPA_TDNN_GLOB_c512`` / ``_c1024`` configurations.

Layer order inside each unit is conv -> ReLU -> BN, as in the paper's reference code and
WeSpeaker/SpeechBrain. Unlike SpeechBrain we use zero "same" padding instead of reflect padding
(a plain ``nn.Conv1d`` call, no extra pad op), which is cheaper on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .pointwise import PointwiseConv1d
from .pooling import build_pooling

__all__ = ["ECAPATDNN", "ECAPATDNNC512", "ECAPATDNNC1024", "SERes2Block"]


class ConvReluBn(nn.Module):
    """1-D TDNN unit: Conv1d -> ReLU -> BatchNorm1d (``padding`` keeps the frame count)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, dilation: int = 1) -> None:
        super().__init__()
        pad = dilation * (kernel_size - 1) // 2
        self.conv = (PointwiseConv1d(in_ch, out_ch) if kernel_size == 1
                     else nn.Conv1d(in_ch, out_ch, kernel_size, padding=pad, dilation=dilation))
        self.bn = nn.BatchNorm1d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class Res2Conv(nn.Module):
    """Res2Net hierarchical convolution (Gao et al., TPAMI 2019, Eq. 1), 1-D version.

    The channels are split into ``scale`` groups x_1..x_s; ``y_1 = K_1(x_1)``,
    ``y_i = K_i(x_i + y_{i-1})`` for 1 < i < s, and the last group passes through unchanged.
    Each step depends on the previous one, so this sequential loop is inherent; it is kept lean:
    one ``split``, one ``cat``, no intermediate copies.
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int = 8) -> None:
        super().__init__()
        if scale < 2 or channels % scale != 0:
            raise ValueError(f"Res2 block: channels {channels} must be divisible by scale {scale} >= 2")
        self.width = channels // scale
        self.blocks = nn.ModuleList(
            [ConvReluBn(self.width, self.width, kernel_size, dilation) for _ in range(scale - 1)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        splits = torch.split(x, self.width, dim=1)
        outs: list[torch.Tensor] = []
        y = splits[0]
        for i, block in enumerate(self.blocks):
            if i > 0:
                y = y + splits[i]
            y = block(y)
            outs.append(y)
        outs.append(splits[-1])
        return torch.cat(outs, dim=1)


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation over time (Hu et al., CVPR 2018; ECAPA-TDNN Sec. 2.2, Eqs. 5-6).

    ``z = mean_t h_t``; ``s = sigmoid(W_2 relu(W_1 z + b_1) + b_2)``; output ``h_t * s``.
    """

    def __init__(self, channels: int, bottleneck: int = 128) -> None:
        super().__init__()
        self.linear1 = nn.Linear(channels, bottleneck)
        self.linear2 = nn.Linear(bottleneck, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.linear2(F.relu(self.linear1(x.mean(dim=2)))))
        return x * s.unsqueeze(2)


class SERes2Block(nn.Module):
    """SE-Res2Block (ECAPA-TDNN Fig. 1): 1x1 -> Res2 dilated conv -> 1x1 -> SE, plus the input."""

    def __init__(
        self, channels: int, kernel_size: int, dilation: int, scale: int = 8, se_bottleneck: int = 128
    ) -> None:
        super().__init__()
        self.conv1 = ConvReluBn(channels, channels, 1)
        self.res2 = Res2Conv(channels, kernel_size, dilation, scale)
        self.conv2 = ConvReluBn(channels, channels, 1)
        self.se = SqueezeExcitation(channels, se_bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.se(self.conv2(self.res2(self.conv1(x))))


class ECAPATDNN(nn.Module):
    """ECAPA-TDNN encoder: ``forward(feats[B, frames, feat_dim]) -> [B, embed_dim]``.

    Args:
        channels: C, width of the SE-Res2Blocks (512 or 1024 in the paper).
        feat_dim: number of fbank bins.
        embed_dim: embedding size (192).
        mfa_channels: output of the multi-layer feature aggregation conv (1536 in the paper).
        scale: Res2Net scale (8).
        se_bottleneck: SE bottleneck width (128).
        attention_dim: bottleneck of the attentive pooling (128).
        pooling: "ASTP" (attentive, paper) or "TSTP" (plain mean+std).
        global_context: ASTP with the utterance mean/std appended (context-dependent, paper).
        pooling_unbiased: Bessel-corrected context std (default, as WeSpeaker); False gives the
            population std of models trained before that default.
    """

    def __init__(
        self,
        channels: int = 512,
        feat_dim: int = 80,
        embed_dim: int = 192,
        mfa_channels: int = 1536,
        scale: int = 8,
        se_bottleneck: int = 128,
        attention_dim: int = 128,
        pooling: str = "ASTP",
        global_context: bool = True,
        pooling_unbiased: bool = True,
    ) -> None:
        super().__init__()
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        self.layer1 = ConvReluBn(feat_dim, channels, kernel_size=5)
        self.layer2 = SERes2Block(channels, 3, 2, scale, se_bottleneck)
        self.layer3 = SERes2Block(channels, 3, 3, scale, se_bottleneck)
        self.layer4 = SERes2Block(channels, 3, 4, scale, se_bottleneck)
        self.mfa = PointwiseConv1d(3 * channels, mfa_channels)
        if pooling.upper() == "ASTP":
            self.pool = build_pooling(
                "ASTP", mfa_channels, bottleneck_dim=attention_dim, global_context=global_context,
                unbiased=pooling_unbiased,
            )
        else:
            self.pool = build_pooling(pooling, mfa_channels, unbiased=pooling_unbiased)
        self.bn = nn.BatchNorm1d(2 * mfa_channels)
        self.linear = nn.Linear(2 * mfa_channels, embed_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats.transpose(1, 2)  # (B, T, F) -> (B, F, T)
        out1 = self.layer1(x)
        out2 = self.layer2(out1)
        out3 = self.layer3(out2)
        out4 = self.layer4(out3)
        h = F.relu(self.mfa(torch.cat([out2, out3, out4], dim=1)))
        return self.linear(self.bn(self.pool(h)))


class ECAPATDNNC512(ECAPATDNN):
    """ECAPA-TDNN with C=512 (6.19M parameters at feat_dim=80, embed_dim=192)."""

    def __init__(self, feat_dim: int = 80, embed_dim: int = 192, **kwargs) -> None:
        super().__init__(channels=512, feat_dim=feat_dim, embed_dim=embed_dim, **kwargs)


class ECAPATDNNC1024(ECAPATDNN):
    """ECAPA-TDNN with C=1024 (14.65M parameters at feat_dim=80, embed_dim=192)."""

    def __init__(self, feat_dim: int = 80, embed_dim: int = 192, **kwargs) -> None:
        super().__init__(channels=1024, feat_dim=feat_dim, embed_dim=embed_dim, **kwargs)
