"""The telephone channel: band limits, G.711 companding, length and determinism."""

from __future__ import annotations

import math

import pytest
import torch

from speakerid.augment.channel import TelephoneChannel
from speakerid.augment.wave import WaveAugment
from speakerid.config import AugmentConfig, ConfigError, TelephoneConfig, TrainConfig, config_from_dict

SR = 16000


def _tone(freq: float, seconds: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(SR * seconds)) / SR
    return 0.5 * torch.sin(2 * math.pi * freq * t)


def _rms(x: torch.Tensor) -> float:
    mid = x[len(x) // 4 : -len(x) // 4]  # away from the filters' edge transients
    return float(mid.square().mean().sqrt())


def test_channel_keeps_the_telephone_band_and_removes_what_is_outside():
    ch = TelephoneChannel(SR, band_rate=8000, highpass_hz=300.0, mulaw_prob=0.0, prob=1.0)
    inside = ch.apply(_tone(1000.0), mulaw=False)
    above = ch.apply(_tone(6000.0), mulaw=False)  # above 4 kHz: gone at 8 kHz sampling
    below = ch.apply(_tone(60.0), mulaw=False)  # mains hum: under the 300 Hz edge
    assert inside.shape == (SR // 2,)
    assert _rms(inside) > 0.3
    assert _rms(above) < 0.01
    assert _rms(below) < 0.05


def test_mulaw_quantises_to_at_most_256_levels_and_keeps_the_shape():
    ch = TelephoneChannel(SR, band_rate=SR, highpass_hz=0.0, mulaw_prob=1.0, prob=1.0)
    x = _tone(440.0)
    y = ch.apply(x, mulaw=True)
    assert torch.unique(y).numel() <= 256
    assert torch.corrcoef(torch.stack([x, y]))[0, 1] > 0.999


def test_channel_is_deterministic_given_the_generator_and_respects_prob():
    ch = TelephoneChannel(SR, prob=0.5)
    x = torch.randn(SR) * 0.1
    outs = [ch(x, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(outs[0], outs[1])
    never = TelephoneChannel(SR, prob=0.0)
    assert never(x, torch.Generator().manual_seed(0)) is x


def test_wave_augment_chain_includes_the_channel_from_config():
    cfg = AugmentConfig(telephone=TelephoneConfig(enabled=True, prob=1.0))
    aug = WaveAugment.from_config(cfg, SR)
    assert aug.enabled and aug.telephone is not None
    x = _tone(6000.0)
    y, speed_index = aug(x, torch.Generator().manual_seed(0))
    assert speed_index == 0 and y.shape == x.shape and _rms(y) < 0.01


def test_bad_band_settings_are_errors():
    with pytest.raises(ValueError, match="band_rate"):
        TelephoneChannel(SR, band_rate=22050)
    with pytest.raises(ValueError, match="highpass_hz"):
        TelephoneChannel(SR, band_rate=8000, highpass_hz=5000.0)
    with pytest.raises(ConfigError, match="mulaw_prob"):
        config_from_dict(TrainConfig, {"augment": {"telephone": {"enabled": True, "mulaw_prob": 1.5}}})
