"""FeatureConfig.window_type / wave_scale: each equals torchaudio's Kaldi fbank with that window
on the wave at that scale."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

from speakerid.audio import load_audio
from speakerid.config import FeatureConfig
from speakerid.features.kaldi import Fbank, fbank


@pytest.mark.parametrize("window_type", ["povey", "hamming", "hanning", "rectangular"])
@pytest.mark.parametrize("wave_scale", ["int16", "float"])
def test_window_and_scale_match_torchaudio(window_type: str, wave_scale: str, shared_speech: Path) -> None:
    wave, _ = load_audio(sorted(shared_speech.glob("libri_*/*.flac"))[0], 16000)
    wave = wave[: 3 * 16000]
    scale = 32768.0 if wave_scale == "int16" else 1.0
    ref = kaldi.fbank((wave * scale).unsqueeze(0), num_mel_bins=80, dither=0.0, window_type=window_type)
    cfg = FeatureConfig(window_type=window_type, wave_scale=wave_scale, cmn=False)
    module = Fbank.from_config(cfg)(wave.unsqueeze(0))[0]
    func = fbank(wave, cmn=False, window_type=window_type, wave_scale=wave_scale)
    assert (module - ref).abs().max() < 1e-4
    assert torch.equal(module, func)


def test_unknown_window_or_scale_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="features.window_type: unknown window 'blackman'"):
        Fbank(window_type="blackman")
    with pytest.raises(ValueError, match="features.wave_scale: unknown scale 'int32'"):
        Fbank(wave_scale="int32")
