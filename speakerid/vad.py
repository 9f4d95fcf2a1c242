"""Energy voice-activity detection: drop the silent stretches of a waveform before embedding.

A frame (25 ms, 10 ms shift) is speech when its log energy is within ``threshold_db`` of the
utterance's loudest frames (the 95th percentile, so that a click does not set the level).
Speech frames are kept with ``pad_frames`` of context on each side; silences shorter than
that context survive, so words are not cut apart. The rule follows the energy VAD of Kaldi's
``compute-vad`` (relative energy threshold), simplified to one pass without smoothing windows.
"""

from __future__ import annotations

import torch
from torch import Tensor


def speech_frames(wave: Tensor, sample_rate: int, threshold_db: float = 35.0, frame_ms: float = 25.0, shift_ms: float = 10.0) -> Tensor:
    """Boolean mask ``[frames]``: True where a frame of ``wave [T]`` holds speech energy."""
    window, shift = int(sample_rate * frame_ms / 1000), int(sample_rate * shift_ms / 1000)
    if wave.numel() < window:
        return torch.ones(1 if wave.numel() else 0, dtype=torch.bool)
    frames = wave.unfold(0, window, shift)
    energy_db = 10 * torch.log10(frames.double().pow(2).mean(-1) + 1e-10)
    ref = torch.quantile(energy_db, 0.95)
    return energy_db > ref - threshold_db


def trim_silence(wave: Tensor, sample_rate: int, threshold_db: float = 35.0, pad_frames: int = 20) -> Tensor:
    """``wave [T]`` with silent frames (see :func:`speech_frames`) removed; unchanged when all or none is speech."""
    wave = wave.reshape(-1)
    mask = speech_frames(wave, sample_rate, threshold_db)
    if mask.numel() == 0 or bool(mask.all()) or not bool(mask.any()):
        return wave
    shift, window = int(sample_rate * 0.010), int(sample_rate * 0.025)
    keep = mask.clone()
    for d in range(1, pad_frames + 1):  # context around speech frames
        keep[d:] |= mask[:-d]
        keep[:-d] |= mask[d:]
    sample_keep = torch.zeros(wave.numel(), dtype=torch.bool)
    for i in torch.nonzero(keep).flatten().tolist():
        sample_keep[i * shift : i * shift + window] = True
    return wave[sample_keep]
