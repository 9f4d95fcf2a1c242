"""Energy voice-activity detection: drop long silences before embedding.

Many recordings (e.g. noise-gated studio takes) are half digital silence; embedding it only
adds frames that carry no speaker information. :func:`trim_silence` keeps every 10 ms frame
whose energy is within ``floor_db`` of the utterance's loud frames (its 95th-percentile
energy) and above an absolute floor, pads each kept region by ``pad_s`` and drops the rest.
A waveform with no frame above the thresholds, or with less than ``min_keep_s`` kept, is
returned unchanged (so trimming never empties an input).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["trim_silence", "speech_mask"]


def speech_mask(
    wave: Tensor,
    sample_rate: int,
    frame_s: float = 0.025,
    shift_s: float = 0.010,
    floor_db: float = 40.0,
    abs_floor_db: float = -60.0,
    pad_s: float = 0.1,
) -> Tensor:
    """Boolean mask ``[T]`` of the samples kept by the energy VAD (see the module doc)."""
    if wave.dim() != 1:
        raise ValueError(f"trim_silence expects a mono waveform [T], got shape {tuple(wave.shape)}")
    n = wave.numel()
    win, hop = max(1, round(frame_s * sample_rate)), max(1, round(shift_s * sample_rate))
    if n < win:
        return torch.ones(n, dtype=torch.bool)
    frames = wave.float().unfold(0, win, hop)  # [F, win]
    energy_db = 10.0 * torch.log10(frames.pow(2).mean(dim=1) + 1e-12)
    ref = torch.quantile(energy_db, 0.95)
    voiced = (energy_db > ref - floor_db) & (energy_db > abs_floor_db)
    pad = round(pad_s / shift_s)
    if pad > 0 and voiced.any():
        voiced = torch.nn.functional.max_pool1d(voiced.float()[None, None], 2 * pad + 1, 1, pad)[0, 0] > 0
    starts = torch.nonzero(voiced).flatten() * hop
    delta = torch.zeros(n + win + 1, dtype=torch.int32)
    delta.index_add_(0, starts, torch.ones_like(starts, dtype=torch.int32))
    delta.index_add_(0, starts + win, -torch.ones_like(starts, dtype=torch.int32))
    return torch.cumsum(delta, 0)[:n] > 0


def trim_silence(wave: Tensor, sample_rate: int, min_keep_s: float = 0.3) -> Tensor:
    """``wave [T]`` without its silent stretches (energy VAD); unchanged if too little is voiced."""
    mask = speech_mask(wave, sample_rate)
    if int(mask.sum()) < min_keep_s * sample_rate:
        return wave
    return wave[mask]
