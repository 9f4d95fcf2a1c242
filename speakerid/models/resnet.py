"""Thin ResNet speaker encoders (ResNet18/34/50/101/152/221/293 and any depth).

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (Eq. 1, ``y = F(x) + x``;
basic and bottleneck blocks, Table 1), in the "thin" form used for speaker verification
(Chung et al. 2020; Zeinali et al., "BUT system for VoxSRC 2019"; WeSpeaker r-vector,
Wang et al. ICASSP 2023): a 3x3 input conv without max-pooling, ``base_channels`` 32 -> 64 -> 128 ->
256 over the four stages, frequency and time halved at stages 2-4, then temporal statistics
pooling over ``(channels * freq)`` and one linear layer to the embedding.

The module tree and state-dict names are WeSpeaker's (``wespeaker/models/resnet.py``), so its
checkpoints load as they are; with TSTP's Bessel-corrected std (:mod:`.pooling`) the embeddings
agree with WeSpeaker's within float32 rounding (tests/test_wespeaker_parity.py).
ResNet34 with feat_dim=80, embed_dim=256 has 6.63M parameters, as WeSpeaker's ResNet34.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .pooling import build_pooling, embedding_head

__all__ = [
    "ResNet", "ResNet18", "ResNet34", "ResNet50", "ResNet101", "ResNet152", "ResNet221", "ResNet293",
    "BasicBlock", "Bottleneck", "DEPTHS",
]


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN, identity (or 1x1 projection) shortcut (He et al. 2016, Fig. 2 left)."""

    expansion: int = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4 channels) bottleneck block (He et al. 2016, Fig. 5 right)."""

    expansion: int = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
    )


# depth -> (block type, blocks per stage), He et al. 2016 Table 1 (+ WeSpeaker's 221/293).
DEPTHS: dict[int, tuple[str, list[int]]] = {
    10: ("basic", [1, 1, 1, 1]),
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
    221: ("bottleneck", [6, 16, 48, 3]),
    293: ("bottleneck", [10, 20, 64, 3]),
}


def _downsampled(n: int, times: int) -> int:
    """Size after ``times`` stride-2, kernel-3, padding-1 convs: ceil(n / 2) each time."""
    for _ in range(times):
        n = (n + 1) // 2
    return n


class ResNet(nn.Module):
    """Thin ResNet encoder: ``forward(feats[B, frames, feat_dim]) -> [B, embed_dim]``.

    Args:
        depth: one of :data:`DEPTHS` (used when ``blocks`` is None).
        blocks: explicit blocks per stage (4 ints), overriding ``depth``.
        block: "basic" or "bottleneck" (only with ``blocks``; default "basic").
        base_channels: channels of stage 1 (32 = "thin"; doubles every stage).
        feat_dim, embed_dim: input bins, embedding size (256).
        pooling: "TSTP" (default, as WeSpeaker) or "ASTP".
        two_emb_layer: add ReLU -> BN -> Linear after the first embedding layer (WeSpeaker option).
        pooling_unbiased: Bessel-corrected std in the pooling (default, as WeSpeaker); False gives
            the population std of models trained before that default.
    """

    def __init__(
        self,
        depth: int = 34,
        feat_dim: int = 80,
        embed_dim: int = 256,
        base_channels: int = 32,
        blocks: list[int] | None = None,
        block: str = "basic",
        pooling: str = "TSTP",
        two_emb_layer: bool = False,
        pooling_unbiased: bool = True,
    ) -> None:
        super().__init__()
        if blocks is None:
            if depth not in DEPTHS:
                raise ValueError(f"resnet depth {depth} not in {sorted(DEPTHS)}; or give blocks=[...]")
            block, blocks = DEPTHS[depth]
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"resnet blocks must be 4 positive ints, got {blocks}")
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"resnet block must be 'basic' or 'bottleneck', got {block!r}")
        block_cls = BasicBlock if block == "basic" else Bottleneck
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        self.two_emb_layer = two_emb_layer
        self.conv1 = nn.Conv2d(1, base_channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(base_channels)
        in_planes = base_channels
        stages: list[nn.Module] = []
        for i, n_blocks in enumerate(blocks):
            planes = base_channels * 2**i
            layers: list[nn.Module] = []
            for j in range(n_blocks):
                layers.append(block_cls(in_planes, planes, 2 if (i > 0 and j == 0) else 1))
                in_planes = planes * block_cls.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        stats_dim = in_planes * _downsampled(feat_dim, 3)
        self.pool = build_pooling(pooling, stats_dim, unbiased=pooling_unbiased)
        self.seg_1, self.seg_bn_1, self.seg_2 = embedding_head(2 * stats_dim, embed_dim, two_emb_layer)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats.transpose(1, 2).unsqueeze(1)  # (B, T, F) -> (B, 1, F, T)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = out.flatten(1, 2)  # (B, C * F', T')
        emb = self.seg_1(self.pool(out))
        if self.two_emb_layer:
            emb = self.seg_2(self.seg_bn_1(F.relu(emb)))
        return emb


def _fixed_depth(depth: int, params: str) -> type[ResNet]:
    """A :class:`ResNet` subclass with ``depth`` fixed (WeSpeaker's ``ResNet<depth>`` constructors)."""
    block, blocks = DEPTHS[depth]

    def __init__(self, feat_dim: int = 80, embed_dim: int = 256, **kwargs) -> None:
        ResNet.__init__(self, depth=depth, feat_dim=feat_dim, embed_dim=embed_dim, **kwargs)

    doc = f"Thin ResNet{depth} ({block} blocks {'-'.join(map(str, blocks))}, 32 base channels, TSTP, 256-d; {params})."
    return type(f"ResNet{depth}", (ResNet,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})


# Parameter counts at feat_dim=80, embed_dim=256 (tests/test_wespeaker_parity.py checks them
# against WeSpeaker's constructors of the same name).
ResNet18 = _fixed_depth(18, "4.11M parameters")
ResNet34 = _fixed_depth(34, "6.63M parameters")
ResNet50 = _fixed_depth(50, "11.13M parameters")
ResNet101 = _fixed_depth(101, "15.89M parameters")
ResNet152 = _fixed_depth(152, "19.81M parameters")
ResNet221 = _fixed_depth(221, "23.79M parameters")
ResNet293 = _fixed_depth(293, "28.63M parameters")
