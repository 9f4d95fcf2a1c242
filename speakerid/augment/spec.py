"""Data augmentation: SpecAugment and MixUp (batches), noise, reverberation, speed (waveforms).

Every random choice comes from an explicit ``torch.Generator`` passed to the call, so an
augmented example is a pure function of (its input, the generator's state): a dataset that
seeds the generator from (seed, epoch, index) is reproducible regardless of worker count.
Each op is built ``from_config`` with its section of :class:`speakerid.config.AugmentConfig`;
``WaveAugment`` chains the waveform ops (speed -> reverb -> noise, as WeSpeaker and Kaldi's
recipes do: the room shapes the voice, the noise is added in the room's output).

Waveform ops take and return ``wave [T]`` float in [-1, 1]. Noise and RIR files are read
lazily with :func:`speakerid.audio.load_audio` and kept in a per-process LRU cache bounded in
megabytes (all of MUSAN is ~25 GB as float32, too much for every DataLoader worker).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor, nn

from speakerid.augment.draws import draw_rand
from speakerid.config import AugmentConfig, SpecAugConfig, check_field

logger = logging.getLogger(__name__)


# --- SpecAugment ------------------------------------------------------------------------


def _band_mask(size: int, num: int, max_width: int, batch: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """``[batch, size]`` bool: ``num`` bands per row, width ~ U{0..max_width}, start ~ U{0..size-width}.

    Written here rather than with ``torchaudio.functional.mask_along_axis_iid``: that takes no
    generator (it draws from the global RNG), so it could not be made deterministic per example.
    """
    if num <= 0 or max_width <= 0 or size <= 0:
        return torch.zeros(batch, size, dtype=torch.bool, device=device)
    width = (draw_rand((batch, num), generator, device) * (min(max_width, size) + 1)).floor()
    start = (draw_rand((batch, num), generator, device) * (size - width + 1)).floor()
    pos = torch.arange(size, device=device).view(1, 1, size)
    inside = (pos >= start.unsqueeze(-1)) & (pos < (start + width).unsqueeze(-1))
    return inside.any(dim=1)


def time_warp(feats: Tensor, window: int, generator: torch.Generator) -> Tensor:
    """SpecAugment time warping (Park et al., 2019, Sec. 2): per utterance, the frame at
    ``c ~ U[W, F - W)`` moves to ``c + w``, ``w ~ U[-W, W]``; both sides are stretched
    piecewise-linearly (linear interpolation between frames). ``feats [B, F, D]``."""
    batch, num_f, _ = feats.shape
    if window <= 0 or num_f <= 2 * window + 1:
        return feats
    device = feats.device
    centre = window + (draw_rand((batch,), generator, device) * (num_f - 2 * window)).floor()  # [B]
    shift = (draw_rand((batch,), generator, device) * (2 * window + 1)).floor() - window
    target = (centre + shift).clamp(1, num_f - 2)  # where the centre lands
    t = torch.arange(num_f, device=device, dtype=feats.dtype).unsqueeze(0)  # [1, F]
    c, tg = centre.unsqueeze(1).to(feats.dtype), target.unsqueeze(1).to(feats.dtype)
    left = t * c / tg
    right = c + (t - tg) * (num_f - 1 - c) / (num_f - 1 - tg)
    src = torch.where(t < tg, left, right).clamp(0, num_f - 1)  # source position of each output frame
    lo = src.floor().long()
    hi = (lo + 1).clamp_max(num_f - 1)
    frac = (src - lo.to(feats.dtype)).unsqueeze(-1)
    dim = feats.size(2)
    f_lo = feats.gather(1, lo.unsqueeze(-1).expand(-1, -1, dim))
    f_hi = feats.gather(1, hi.unsqueeze(-1).expand(-1, -1, dim))
    return f_lo + frac * (f_hi - f_lo)


class SpecAugment(nn.Module):
    """SpecAugment (Park et al., 2019): time warp, frequency masks and time masks on features.

    ``forward(feats [B, frames, bins], generator) -> same shape`` (a new tensor). Each utterance
    is augmented with probability ``prob``; each of its ``freq_masks`` bands has a width drawn
    from U{0..freq_width} (likewise time). Masked cells are set to 0, which after CMN is the
    utterance mean (as WeSpeaker does).
    """

    def __init__(
        self,
        freq_masks: int = 1,
        freq_width: int = 10,
        time_masks: int = 1,
        time_width: int = 20,
        time_warp: int = 0,
        prob: float = 0.6,
    ) -> None:
        super().__init__()
        if min(freq_masks, freq_width, time_masks, time_width, time_warp) < 0 or not 0.0 <= prob <= 1.0:
            raise ValueError(
                f"SpecAugment: counts and widths must be >= 0 and prob in [0, 1], got "
                f"{freq_masks=} {freq_width=} {time_masks=} {time_width=} {time_warp=} {prob=}"
            )
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width
        self.time_warp, self.prob = time_warp, prob

    @classmethod
    def from_config(cls, cfg: SpecAugConfig) -> "SpecAugment":
        return cls(cfg.freq_masks, cfg.freq_width, cfg.time_masks, cfg.time_width, cfg.time_warp, cfg.prob)

    def forward(self, feats: Tensor, generator: torch.Generator) -> Tensor:
        if feats.dim() != 3:
            raise ValueError(f"SpecAugment expects feats [batch, frames, bins], got shape {tuple(feats.shape)}")
        batch, num_f, bins = feats.shape
        device = feats.device
        apply = draw_rand((batch,), generator, device) < self.prob  # [B]
        out = feats
        if self.time_warp > 0:
            warped = time_warp(feats, self.time_warp, generator)
            out = torch.where(apply.view(-1, 1, 1), warped, feats)
        fmask = _band_mask(bins, self.freq_masks, self.freq_width, batch, generator, device)  # [B, D]
        tmask = _band_mask(num_f, self.time_masks, self.time_width, batch, generator, device)  # [B, F]
        mask = (fmask.unsqueeze(1) | tmask.unsqueeze(2)) & apply.view(-1, 1, 1)
        return out.masked_fill(mask, 0.0)

    def extra_repr(self) -> str:
        return (
            f"freq_masks={self.freq_masks}, freq_width={self.freq_width}, time_masks={self.time_masks}, "
            f"time_width={self.time_width}, time_warp={self.time_warp}, prob={self.prob}"
        )


# --- MixUp ------------------------------------------------------------------------------


def sample_beta(alpha: float, generator: torch.Generator) -> float:
    """lambda ~ Beta(alpha, alpha), deterministic from ``generator``.

    ``torch.distributions.Beta`` draws from the global RNG (no generator argument), so a
    64-bit seed is drawn from ``generator`` and fed to numpy's Beta sampler.
    """
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device).item())
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mixup(x: Tensor, labels: Tensor, alpha: float, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, float]:
    """MixUp (Zhang et al., 2018, Eq. 1): ``x~ = lam * x_i + (1 - lam) * x_j``, ``lam ~ Beta(alpha, alpha)``.

    Pairs each example with another of the same batch (a random permutation), on features
    ``[B, frames, bins]`` or waveforms ``[B, T]`` alike. Returns ``(mixed, labels_a, labels_b,
    lam)`` where ``labels_a = labels`` and ``labels_b = labels[perm]``: a classification loss is
    ``lam * L(labels_a) + (1 - lam) * L(labels_b)``. Pair-based losses (Circle, triplet, ...)
    cannot split a pair's similarity between two labels; they use the dominant label
    (``labels_a`` if ``lam >= 0.5`` else ``labels_b``), as the losses module documents.
    """
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    if x.size(0) != labels.size(0):
        raise ValueError(f"mixup: {x.size(0)} inputs but {labels.size(0)} labels")
    lam = sample_beta(alpha, generator)
    perm = torch.randperm(x.size(0), generator=generator, device=generator.device).to(x.device)
    mixed = lam * x + (1.0 - lam) * x[perm]
    return mixed, labels, labels[perm.to(labels.device)], lam


#: The AugmentConfig sections whose ops act on waveforms (so not on cached features), in chain order.
WAVEFORM_SECTIONS = ("speed", "reverb", "noise", "telephone")


def check_mixup(cfg: AugmentConfig, two_views: bool = False) -> None:
    """The one check of the MixUp settings: a known domain, and no MixUp with two views (MoCo)."""
    check_field(cfg.mixup, "domain", "augment.mixup.domain")  # the config's Literal: for configs built in Python
    if cfg.mixup.enabled and two_views:
        raise ValueError("augment.mixup cannot be combined with two views (MoCo): the key view has no mixed label")


def mixes_waveforms(cfg: AugmentConfig, train: bool) -> bool:
    """True when MixUp mixes waveforms (so the fbank moves to the batch step)."""
    check_mixup(cfg)
    return bool(train and cfg.mixup.enabled and cfg.mixup.domain == "waveform")
