"""speakerid.augment.spec: determinism from a generator, and what each op does to its input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from speakerid.augment.wave import AddNoise, AugmentListError, Reverb, SpeedPerturb, WaveAugment, read_noise_list, read_rir_list
from speakerid.augment.spec import SpecAugment, mixup, time_warp
from speakerid.config import AugmentConfig, NoiseConfig, SpecAugConfig, SpeedConfig


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _tone(freq: float, seconds: float = 1.0, sr: int = 16000, amp: float = 0.3) -> torch.Tensor:
    t = torch.arange(int(sr * seconds)) / sr
    return (amp * torch.sin(2 * math.pi * freq * t)).float()


@pytest.fixture()
def noise_files(tmp_path):
    """A noise list with 'noise' and 'speech' (babble source) categories, relative paths."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(2):
        sf.write(tmp_path / f"n{i}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000, subtype="FLOAT")
        lines.append(f"n{i}.wav noise")
    for i in range(4):
        sf.write(tmp_path / f"s{i}.wav", _tone(200 + 50 * i, 0.5).numpy(), 16000, subtype="FLOAT")
        lines.append(f"s{i}.wav speech")
    (tmp_path / "noise.lst").write_text("\n".join(lines) + "\n")
    return tmp_path / "noise.lst"


# --- SpecAugment -------------------------------------------------------------------------


def test_specaugment_masks_and_determinism():
    feats = torch.randn(8, 200, 80, generator=gen(1)) + 5.0  # no natural zeros
    aug = SpecAugment(freq_masks=2, freq_width=10, time_masks=2, time_width=20, prob=1.0)
    a, b = aug(feats, gen(7)), aug(feats, gen(7))
    assert torch.equal(a, b) and not torch.equal(a, aug(feats, gen(8)))
    assert a.shape == feats.shape
    zero = a == 0
    kept = ~zero
    assert torch.equal(a[kept], feats[kept])  # only masking, nothing else changed
    for i in range(8):
        cols = zero[i].all(dim=0).sum()  # masked bins: whole columns
        rows = zero[i].all(dim=1).sum()  # masked frames: whole rows
        assert cols <= 20 and rows <= 40
        assert torch.equal(zero[i], zero[i].all(0, keepdim=True) | zero[i].all(1, keepdim=True))


def test_specaugment_prob_zero_and_config():
    feats = torch.randn(4, 50, 40, generator=gen(1))
    assert torch.equal(SpecAugment(prob=0.0)(feats, gen()), feats)
    aug = SpecAugment.from_config(SpecAugConfig(enabled=True, freq_masks=3, freq_width=5, time_warp=4, prob=0.3))
    assert (aug.freq_masks, aug.freq_width, aug.time_warp, aug.prob) == (3, 5, 4, 0.3)
    with pytest.raises(ValueError, match="SpecAugment"):
        SpecAugment(freq_width=-1)


def test_time_warp_keeps_shape_and_endpoints():
    feats = torch.arange(100, dtype=torch.float32).view(1, 100, 1).expand(3, 100, 4).contiguous()
    warped = time_warp(feats, 10, gen(3))
    assert warped.shape == feats.shape
    assert torch.equal(warped[:, 0], feats[:, 0]) and torch.allclose(warped[:, -1], feats[:, -1])
    assert torch.all(warped[:, 1:, 0] >= warped[:, :-1, 0])  # a monotone re-timing
    assert not torch.equal(warped, feats)
    assert torch.equal(time_warp(feats, 10, gen(3)), warped)


# --- MixUp -------------------------------------------------------------------------------


def test_mixup_is_a_convex_pairing():
    x = torch.randn(6, 10, 8, generator=gen(2))
    labels = torch.arange(6) * 10
    mixed, la, lb, lam = mixup(x, labels, 0.4, gen(5))
    assert 0.0 <= lam <= 1.0 and torch.equal(la, labels)
    perm = lb // 10
    assert sorted(perm.tolist()) == list(range(6))  # labels_b is a permutation of the batch
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm], atol=1e-6)
    again = mixup(x, labels, 0.4, gen(5))
    assert torch.equal(again[0], mixed) and again[3] == lam
    with pytest.raises(ValueError, match="alpha"):
        mixup(x, labels, 0.0, gen())


def test_mixup_lambda_distribution():
    g = gen(0)
    lams = np.array([mixup(torch.zeros(2, 1), torch.zeros(2), 0.2, g)[3] for _ in range(400)])
    # Beta(0.2, 0.2): mean 0.5, mass piled near 0 and 1
    assert abs(lams.mean() - 0.5) < 0.06
    assert ((lams < 0.1) | (lams > 0.9)).mean() > 0.5


def test_mixup_waveforms_and_the_one_domain_check():
    from speakerid.augment.spec import check_mixup, mixes_waveforms
    from speakerid.config import AugmentConfig

    x, labels = torch.randn(4, 1600, generator=gen(1)), torch.arange(4)
    mixed, _, _, lam = mixup(x, labels, 0.2, gen())
    assert mixed.shape == x.shape and lam < 1.0
    cfg = AugmentConfig()
    cfg.mixup.domain = "waveform"
    cfg.mixup.prob = 1.0
    assert mixes_waveforms(cfg, train=True) == cfg.mixup.enabled and not mixes_waveforms(cfg, train=False)
    cfg.mixup.domain = "labels"
    with pytest.raises(ValueError, match="mixup.domain"):
        check_mixup(cfg)


# --- noise -------------------------------------------------------------------------------


def test_noise_at_requested_snr(noise_files):
    noises = read_noise_list(noise_files)
    assert sorted(noises) == ["noise", "speech"] and all(len(v) >= 2 for v in noises.values())
    add = AddNoise(noises, {"noise": [5.0, 5.0], "speech": [12.0, 12.0], "babble": [15.0, 15.0]}, prob=1.0)
    assert add.categories == ["babble", "noise", "speech"]
    wave = _tone(440)  # 1 s, longer than every noise file: they are tiled
    for cat, snr in (("noise", 5.0), ("speech", 12.0)):
        out = add(wave, gen(1), category=cat)
        assert out.shape == wave.shape
        measured = 10 * math.log10(wave.square().mean() / (out - wave).square().mean())
        assert measured == pytest.approx(snr, abs=0.05)
    babble = add(wave, gen(2), category="babble") - wave
    measured = 10 * math.log10(wave.square().mean() / babble.square().mean())
    assert 15.0 - 10 * math.log10(7) - 1 < measured < 15.0  # 3-7 talkers, each at 15 dB
    assert torch.equal(add(wave, gen(9)), add(wave, gen(9)))
    assert len(add.cache) > 0  # files were loaded once and kept


def test_noise_list_errors(tmp_path, noise_files):
    with pytest.raises(AugmentListError, match="noise list not found"):
        read_noise_list(tmp_path / "missing.lst")
    bad = tmp_path / "bad.lst"
    bad.write_text("n0.wav\n")
    with pytest.raises(AugmentListError, match=r"bad.lst:1: expected '<path> <category>'"):
        read_noise_list(bad)
    bad.write_text("gone.wav noise\n")
    with pytest.raises(AugmentListError, match="bad.lst:1: file not found"):
        read_noise_list(bad)
    with pytest.raises(AugmentListError, match=r"categories \['speech'\] have no SNR range"):
        AddNoise(read_noise_list(noise_files), {"noise": [0.0, 5.0]})
    with pytest.raises(AugmentListError, match="noise_list: empty"):
        AddNoise.from_config(NoiseConfig(enabled=True))


# --- reverb ------------------------------------------------------------------------------


def test_reverb_aligns_on_direct_path_and_keeps_level(tmp_path):
    rir = np.zeros(4000, dtype=np.float32)
    rir[50] = 1.0  # direct path after 50 samples of pre-delay
    rir[50 + 800] = 0.5  # one reflection 50 ms later
    sf.write(tmp_path / "rir.wav", rir, 16000, subtype="FLOAT")
    (tmp_path / "rir.lst").write_text("rir.wav\n")
    reverb = Reverb(read_rir_list(tmp_path / "rir.lst"), prob=1.0)
    wave = torch.zeros(8000)
    wave[1000] = 0.5
    out = reverb(wave, gen())
    assert out.shape == wave.shape
    assert int(out.abs().argmax()) == 1000  # no pre-delay shift
    assert float(out.abs().max()) == pytest.approx(0.5, rel=1e-5)  # peak level kept
    assert float(out[1800]) == pytest.approx(0.25, rel=1e-4)  # the reflection, at the same ratio
    with pytest.raises(AugmentListError, match="RIR list not found"):
        read_rir_list(tmp_path / "none.lst")


def test_reverb_with_real_rir(shared_data):
    rirs = sorted(str(p) for p in (shared_data / "rir").glob("*.flac"))
    if not rirs:
        pytest.skip("no RIRs in the shared data")
    reverb = Reverb(rirs, prob=1.0)
    wave = _tone(300, 0.5)
    out = reverb(wave, gen(4))
    assert out.shape == wave.shape and torch.isfinite(out).all()
    assert float(out.abs().max()) == pytest.approx(float(wave.abs().max()), rel=1e-4)


# --- speed -------------------------------------------------------------------------------


def test_speed_perturbation_changes_length_and_pitch():
    speed = SpeedPerturb([0.9, 1.0, 1.1], prob=1.0)
    assert speed.index_speeds == [1.0, 0.9, 1.1] and speed.num_speeds == 3
    wave = _tone(1000, 1.0)
    for index, factor in ((1, 0.9), (2, 1.1)):
        out = speed.perturb(wave, index)
        assert out.numel() == pytest.approx(16000 / factor, abs=2)
        spec = torch.fft.rfft(out[1000:-1000]).abs()
        peak = float(spec.argmax()) * 16000 / (out.numel() - 2000)
        assert peak == pytest.approx(1000 * factor, rel=0.01)  # pitch moves with speed (sox "speed")
    seen = {speed(wave, gen(s))[1] for s in range(20)}
    assert seen == {1, 2}  # prob 1: always a non-unit speed
    assert SpeedPerturb(prob=0.0)(wave, gen())[1] == 0
    with pytest.raises(ValueError, match="must contain 1.0"):
        SpeedPerturb.from_config(SpeedConfig(speeds=[0.9, 1.1]))


# --- chain -------------------------------------------------------------------------------


def test_wave_augment_chain_from_config(tmp_path, noise_files):
    off = WaveAugment.from_config(AugmentConfig())
    wave = _tone(500, 0.5)
    assert not off.enabled and off.num_speeds == 1
    assert off(wave, gen()) == (wave, 0)
    cfg = AugmentConfig()
    cfg.speed.enabled, cfg.speed.prob = True, 1.0
    cfg.noise.enabled, cfg.noise.prob, cfg.noise.noise_list = True, 1.0, str(noise_files)
    chain = WaveAugment.from_config(cfg)
    assert chain.enabled and chain.reverb is None and chain.num_speeds == 3
    out, index = chain(wave, gen(3))
    assert index in (1, 2) and out.numel() != wave.numel()
    again, index2 = chain(wave, gen(3))
    assert index2 == index and torch.equal(again, out)
