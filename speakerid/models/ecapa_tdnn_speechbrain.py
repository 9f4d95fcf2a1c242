"""ECAPA-TDNN in SpeechBrain's layout (``speechbrain.lobes.models.ECAPA_TDNN``).

Desplanques, Thienpondt & Demuynck, "ECAPA-TDNN: Emphasized Channel Attention, Propagation and
Aggregation in TDNN Based Speaker Verification", Interspeech 2020 (arXiv:2005.07143), Fig. 2, as
SpeechBrain builds it; its checkpoints (``embedding_model.ckpt``) load here with their own names.
How it differs from :class:`.ecapa_tdnn.ECAPATDNN` (the WeSpeaker/paper-code layout), each a
computational difference, so the two cannot share weights:

- every conv pads "same" with *reflection* (SpeechBrain's ``Conv1d(padding="same",
  padding_mode="reflect")``), and the SE block and the final layer are 1x1 convs;
- the Res2Net split passes the *first* group through unchanged (``y_1 = x_1``,
  ``y_2 = K_2(x_2)``, ``y_i = K_i(x_i + y_{i-1})``; Gao et al. 2019, Eq. 1 as written), where the
  WeSpeaker layout convolves the first and passes the last;
- multi-layer feature aggregation is a TDNN block (conv -> ReLU -> BN) and the attention of the
  pooling has conv -> ReLU -> BN -> tanh -> conv (Eq. 1 with a BN);
- statistics use the population std clamped at 1e-12 (``sqrt(max(var, 1e-12))``, Eqs. 3-4 and the
  global context of Sec. 2.3).

Channels ``[C, C, C, C, 3C']`` as SpeechBrain's ``channels`` list (VoxCeleb model: 1024 x 4, 3072).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ECAPATDNNSpeechBrain"]


class _Conv(nn.Module):
    """Conv1d with reflection "same" padding; ``.conv`` holds the weights (SpeechBrain's names).

    Inputs no longer than the padding, where reflection is undefined (SpeechBrain raises), are
    padded by replication instead, so a very short input still gives an embedding.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.pad = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv1d(in_ch, out_ch, kernel_size, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad > 0:
            x = F.pad(x, (self.pad, self.pad), mode="reflect" if x.size(-1) > self.pad else "replicate")
        return self.conv(x)


class _Norm(nn.Module):
    """BatchNorm1d under ``.norm`` (SpeechBrain's wrapper names)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class TDNNBlock(nn.Module):
    """Conv -> ReLU -> BN."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv = _Conv(in_ch, out_ch, kernel_size, dilation)
        self.norm = _Norm(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.relu(self.conv(x)))


class Res2NetBlock(nn.Module):
    """Res2Net split (first group passed through; see the module docstring)."""

    def __init__(self, channels: int, scale: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        if channels % scale:
            raise ValueError(f"channels {channels} must be divisible by res2net_scale {scale}")
        self.scale = scale
        width = channels // scale
        self.blocks = nn.ModuleList([TDNNBlock(width, width, kernel_size, dilation) for _ in range(scale - 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = torch.chunk(x, self.scale, dim=1)
        ys = [chunks[0]]
        y = chunks[0]
        for i, block in enumerate(self.blocks):
            y = block(chunks[i + 1]) if i == 0 else block(chunks[i + 1] + y)
            ys.append(y)
        return torch.cat(ys, dim=1)


class SEBlock(nn.Module):
    """Squeeze-excitation with 1x1 convs (ECAPA-TDNN Eqs. 5-6)."""

    def __init__(self, channels: int, se_channels: int) -> None:
        super().__init__()
        self.conv1 = _Conv(channels, se_channels)
        self.conv2 = _Conv(se_channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=2, keepdim=True)
        return x * torch.sigmoid(self.conv2(F.relu(self.conv1(s))))


class SERes2NetBlock(nn.Module):
    """TDNN -> Res2Net -> TDNN -> SE, plus the (1x1-projected when widths differ) input."""

    def __init__(self, in_ch: int, out_ch: int, scale: int, se_channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.tdnn1 = TDNNBlock(in_ch, out_ch)
        self.res2net_block = Res2NetBlock(out_ch, scale, kernel_size, dilation)
        self.tdnn2 = TDNNBlock(out_ch, out_ch)
        self.se_block = SEBlock(out_ch, se_channels)
        self.shortcut = _Conv(in_ch, out_ch) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(x)))) + self.shortcut(x)


def _stats(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and std over time (``w`` sums to 1 over the last axis)."""
    mean = (w * x).sum(2)
    std = torch.sqrt((w * (x - mean.unsqueeze(2)).pow(2)).sum(2).clamp(1e-12))
    return mean, std


class AttentiveStatisticsPooling(nn.Module):
    """Channel- and context-dependent attentive statistics pooling (ECAPA-TDNN Sec. 2.3)."""

    def __init__(self, channels: int, attention_channels: int = 128, global_context: bool = True) -> None:
        super().__init__()
        self.global_context = global_context
        self.tdnn = TDNNBlock(3 * channels if global_context else channels, attention_channels)
        self.conv = _Conv(attention_channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.size(2)
        if self.global_context:
            uniform = torch.full_like(x[:, :1], 1.0 / frames)
            mean, std = _stats(x, uniform)
            attn = torch.cat([x, mean.unsqueeze(2).expand(-1, -1, frames), std.unsqueeze(2).expand(-1, -1, frames)], 1)
        else:
            attn = x
        alpha = torch.softmax(self.conv(torch.tanh(self.tdnn(attn))), dim=2)
        mean, std = _stats(x, alpha)
        return torch.cat([mean, std], dim=1)


class ECAPATDNNSpeechBrain(nn.Module):
    """SpeechBrain-layout ECAPA-TDNN: ``forward(feats[B, frames, feat_dim]) -> [B, embed_dim]``.

    Args mirror SpeechBrain's: ``channels`` (5 ints), ``kernel_sizes``, ``dilations``,
    ``attention_channels``, ``res2net_scale``, ``se_channels``, ``global_context``;
    ``embed_dim`` is its ``lin_neurons``. ``embedding_norm``: subtract a stored global embedding
    mean (buffer ``embedding_mean``, from SpeechBrain's ``mean_var_norm_emb`` statistics; what its
    ``encode_batch(normalize=True)`` does).
    """

    def __init__(
        self,
        feat_dim: int = 80,
        embed_dim: int = 192,
        channels: list[int] | None = None,
        kernel_sizes: list[int] | None = None,
        dilations: list[int] | None = None,
        attention_channels: int = 128,
        res2net_scale: int = 8,
        se_channels: int = 128,
        global_context: bool = True,
        embedding_norm: bool = False,
    ) -> None:
        super().__init__()
        channels = channels or [512, 512, 512, 512, 1536]
        kernel_sizes = kernel_sizes or [5, 3, 3, 3, 1]
        dilations = dilations or [1, 2, 3, 4, 1]
        if not (len(channels) == len(kernel_sizes) == len(dilations)) or len(channels) < 3:
            raise ValueError("channels, kernel_sizes and dilations must have the same length (>= 3)")
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        blocks: list[nn.Module] = [TDNNBlock(feat_dim, channels[0], kernel_sizes[0], dilations[0])]
        for i in range(1, len(channels) - 1):
            blocks.append(
                SERes2NetBlock(channels[i - 1], channels[i], res2net_scale, se_channels, kernel_sizes[i], dilations[i])
            )
        self.blocks = nn.ModuleList(blocks)
        self.mfa = TDNNBlock(channels[-2] * (len(channels) - 2), channels[-1], kernel_sizes[-1], dilations[-1])
        self.asp = AttentiveStatisticsPooling(channels[-1], attention_channels, global_context)
        self.asp_bn = _Norm(2 * channels[-1])
        self.fc = _Conv(2 * channels[-1], embed_dim)
        self.embedding_norm = embedding_norm
        if embedding_norm:
            self.register_buffer("embedding_mean", torch.zeros(embed_dim))
        else:
            self.embedding_mean = None

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats.transpose(1, 2)
        outs: list[torch.Tensor] = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        x = self.mfa(torch.cat(outs[1:], dim=1))
        x = self.asp_bn(self.asp(x).unsqueeze(2))
        emb = self.fc(x).squeeze(2)
        if self.embedding_mean is not None:
            emb = emb - self.embedding_mean
        return emb
