"""Channel simulation: the telephone band, 8 kHz narrow-band sampling and G.711 companding.

Users' audio is often a phone call or passed through a narrow-band codec: energy above 3.4 kHz
is gone, the low end below ~300 Hz is cut, and the samples were quantised to 8 bits on a
logarithmic (mu-law) scale. :class:`TelephoneChannel` does exactly that to a 16 kHz training
chunk and returns it at the original rate, so the model sees narrow-band speech through the
same front end as wide-band speech (the approach of the NIST SRE recipes that mix telephone
and microphone data; Kaldi's ``sre16`` recipe downsamples its wide-band data to 8 kHz).

The chain, each step with the generator of the caller (see :mod:`speakerid.augment.spec`):
  1. resample ``sample_rate -> band_rate`` (torchaudio's windowed-sinc low-pass at
     ``band_rate / 2``; 4 kHz for 8 kHz telephony);
  2. high-pass at ``highpass_hz`` (a 2nd-order biquad: the telephone band's low edge);
  3. with probability ``mulaw_prob``, 8-bit mu-law encode + decode (ITU-T G.711, mu = 255,
     ``torchaudio.functional.mu_law_encoding``);
  4. resample back to ``sample_rate``; the length is restored to the input's exactly.
"""

from __future__ import annotations

import torch
import torchaudio.functional as AF
import torchaudio.transforms as AT
from torch import Tensor

from speakerid.augment.draws import draw_bernoulli
from speakerid.config import TelephoneConfig


class TelephoneChannel:
    """Narrow-band telephone channel on ``wave [T]`` in [-1, 1], with probability ``prob``."""

    def __init__(
        self,
        sample_rate: int = 16000,
        band_rate: int = 8000,
        highpass_hz: float = 300.0,
        mulaw_prob: float = 0.5,
        prob: float = 0.3,
    ) -> None:
        if not 0 < band_rate <= sample_rate:
            raise ValueError(f"augment.telephone.band_rate must be in (0, {sample_rate}], got {band_rate}")
        if not 0 <= highpass_hz < band_rate / 2:
            raise ValueError(f"augment.telephone.highpass_hz must be in [0, {band_rate / 2}), got {highpass_hz}")
        self.sample_rate, self.band_rate = sample_rate, band_rate
        self.highpass_hz, self.mulaw_prob, self.prob = highpass_hz, mulaw_prob, prob
        self._down = AT.Resample(sample_rate, band_rate) if band_rate != sample_rate else None
        self._up = AT.Resample(band_rate, sample_rate) if band_rate != sample_rate else None

    @classmethod
    def from_config(cls, cfg: TelephoneConfig, sample_rate: int = 16000) -> "TelephoneChannel":
        return cls(sample_rate, cfg.band_rate, cfg.highpass_hz, cfg.mulaw_prob, cfg.prob)

    def apply(self, wave: Tensor, mulaw: bool) -> Tensor:
        """The channel itself (no coin flips): ``wave [T]`` -> narrow-band ``wave [T]``."""
        length = wave.numel()
        x = self._down(wave) if self._down is not None else wave
        if self.highpass_hz > 0:
            x = AF.highpass_biquad(x, self.band_rate, self.highpass_hz)
        if mulaw:
            x = AF.mu_law_decoding(AF.mu_law_encoding(x.clamp(-1.0, 1.0), 256), 256)
        x = self._up(x) if self._up is not None else x
        if x.numel() < length:
            x = torch.nn.functional.pad(x, (0, length - x.numel()))
        return x[:length].to(wave.dtype)

    def __call__(self, wave: Tensor, generator: torch.Generator) -> Tensor:
        if not draw_bernoulli(generator, self.prob):
            return wave
        return self.apply(wave, draw_bernoulli(generator, self.mulaw_prob))
