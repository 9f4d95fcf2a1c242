"""SpeechBrain's filterbank front end (``speechbrain.lobes.features.Fbank`` with its defaults, then
``InputNormalization(norm_type="sentence", std_norm=False)``), for imported SpeechBrain models.

Selected by ``features.frontend: speechbrain`` (see :func:`speakerid.inference.build_frontend`).
Per SpeechBrain: ``torch.stft`` of the [-1, 1] wave (centred frames, zero padding, periodic
Hamming window of 25 ms, 10 ms hop, ``n_fft`` 400), power spectrum, triangular HTK-mel filters
from 0 Hz to Nyquist (``Filterbank._triangular_filters``), ``10 log10(max(x, 1e-10))``, each
utterance clipped at 80 dB below its maximum (``top_db``), then per-utterance mean subtraction.
Not Kaldi's fbank: different frames (centred), window, mel scale and log, hence its own module.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from speakerid.features.kaldi import apply_cmn

__all__ = ["SpeechBrainFbank", "speechbrain_mel_matrix"]


def speechbrain_mel_matrix(num_mel_bins: int, n_fft: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None) -> Tensor:
    """SpeechBrain's triangular filters ``[n_fft // 2 + 1, num_mel_bins]``, computed as it does (float32)."""
    f_max = float(sample_rate // 2) if f_max is None else float(f_max)
    to_mel = lambda hz: 2595 * math.log10(1 + hz / 700)  # noqa: E731
    mel = torch.linspace(to_mel(f_min), to_mel(f_max), num_mel_bins + 2)
    hz = 700 * (10 ** (mel / 2595) - 1)
    band = (hz[1:] - hz[:-1])[:-1]
    f_central = hz[1:-1]
    n_stft = n_fft // 2 + 1
    all_freqs = torch.linspace(0, sample_rate // 2, n_stft).repeat(num_mel_bins, 1)  # [mels, n_stft]
    slope = (all_freqs - f_central.repeat(n_stft, 1).t()) / band.repeat(n_stft, 1).t()
    return torch.max(torch.zeros(1), torch.min(slope + 1.0, -slope + 1.0)).t().contiguous()


class SpeechBrainFbank(nn.Module):
    """``forward(wave [B, T]) -> [B, frames, bins]`` as SpeechBrain computes it (module docstring).

    Exposes the attributes speakerid's front ends share (``sample_rate``, ``num_mel_bins``,
    ``window``, ``shift``, ``fft_size``, ``cmn``, ``sliding_cmn_frames``, ``dither``).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        num_mel_bins: int = 80,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        cmn: bool = True,
        n_fft: int = 400,
        top_db: float = 80.0,
    ) -> None:
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.num_mel_bins = int(num_mel_bins)
        self.window = int(round(sample_rate / 1000.0 * frame_length_ms))
        self.shift = int(round(sample_rate / 1000.0 * frame_shift_ms))
        self.fft_size = int(n_fft)
        self.cmn = bool(cmn)
        self.sliding_cmn_frames = 0
        self.dither = 0.0
        self.top_db = float(top_db)
        self.register_buffer("window_fn", torch.hamming_window(self.window), persistent=False)
        self.register_buffer("mel_t", speechbrain_mel_matrix(num_mel_bins, n_fft, sample_rate), persistent=False)

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.shift

    def forward(self, wave: Tensor, lengths: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        spec = torch.stft(
            wave, self.fft_size, self.shift, self.window, self.window_fn.to(wave.dtype), center=True,
            pad_mode="constant", normalized=False, onesided=True, return_complex=True,
        )
        spec = torch.view_as_real(spec).pow(2).sum(-1).transpose(1, 2)  # [B, frames, n_fft // 2 + 1]
        db = 10.0 * torch.log10(torch.clamp(torch.matmul(spec, self.mel_t.to(spec.dtype)), min=1e-10))
        floor = db.amax(dim=(-2, -1)) - self.top_db
        feats = torch.max(db, floor.view(-1, 1, 1))
        if self.cmn:
            frame_lens: Optional[Tensor] = None
            if lengths is not None:
                frame_lens = 1 + torch.div(lengths.to(torch.long), self.shift, rounding_mode="floor")
            feats = apply_cmn(feats, frame_lens, 0)
        return feats

    def extra_repr(self) -> str:
        return (f"speechbrain: sample_rate={self.sample_rate}, num_mel_bins={self.num_mel_bins}, window={self.window}, "
                f"shift={self.shift}, n_fft={self.fft_size}, top_db={self.top_db}, cmn={self.cmn}")
