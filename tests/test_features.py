"""speakerid.features.kaldi: Kaldi-compatible fbank (batched), CMN, the Fbank module."""

from __future__ import annotations

import pytest
import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF

import speakerid.features.kaldi as features
from speakerid.audio import load_audio
from speakerid.config import FeatureConfig
from speakerid.features.kaldi import Fbank, apply_cmn, fbank, num_frames

torch.set_num_threads(1)


def _kaldi_ref(wave: torch.Tensor, bins: int = 80) -> torch.Tensor:
    return kaldi.fbank(wave.unsqueeze(0) * 32768, num_mel_bins=bins, dither=0.0)


@pytest.fixture(scope="module")
def speech(shared_speech) -> list[torch.Tensor]:
    """Three real utterances of different corpora and lengths (the 8 kHz one resampled)."""
    paths = [
        sorted((shared_speech / "ravdess_03").glob("*.flac"))[0],
        sorted(shared_speech.glob("libri_*/*.flac"))[0],
        sorted(shared_speech.glob("fsdd_*/*.flac"))[0],
    ]
    return [load_audio(p)[0] for p in paths]


def test_matches_torchaudio_kaldi_on_real_speech(speech):
    for wave in speech:
        ref = _kaldi_ref(wave)
        got = fbank(wave, cmn=False)
        assert got.shape == ref.shape
        assert (got - ref).abs().max() < 1e-3
        with_cmn = fbank(wave)
        assert (with_cmn - (ref - ref.mean(0))).abs().max() < 1e-3


def test_other_bin_counts_and_frame_sizes(speech):
    wave = speech[0][:16000]
    for bins in (40, 64):
        assert (fbank(wave, num_mel_bins=bins, cmn=False) - _kaldi_ref(wave, bins)).abs().max() < 1e-3
    ref = kaldi.fbank(wave.unsqueeze(0) * 32768, num_mel_bins=80, frame_length=32.0, frame_shift=12.0)
    assert (fbank(wave, frame_length_ms=32.0, frame_shift_ms=12.0, cmn=False) - ref).abs().max() < 1e-3


@pytest.mark.parametrize("block", [0, 37, 1000])  # whole batch / frame blocks / utterance groups
def test_batched_equals_per_utterance(speech, monkeypatch, block):
    monkeypatch.setattr(features, "CPU_BLOCK_FRAMES", block)
    length = 12000
    batch = torch.stack([w[:length] for w in speech[:2]] + [speech[0][4000 : 4000 + length]])
    got = fbank(batch, cmn=True)
    for i in range(batch.size(0)):
        single = fbank(batch[i], cmn=True)
        assert torch.equal(got[i], single) or (got[i] - single).abs().max() < 1e-5


def test_padded_batch_with_lengths(speech):
    waves = [speech[0][:16000], speech[1][:9000], speech[2][:4000]]
    lengths = torch.tensor([w.numel() for w in waves])
    batch = torch.zeros(3, 16000)
    for i, w in enumerate(waves):
        batch[i, : w.numel()] = w
    for sliding in (0, 30):
        got = fbank(batch, lengths=lengths, sliding_cmn_frames=sliding)
        for i, w in enumerate(waves):
            single = fbank(w, sliding_cmn_frames=sliding)
            n = single.size(0)
            assert n == num_frames(w.numel())
            assert (got[i, :n] - single).abs().max() < 1e-4  # CMN ignores the padding
            assert torch.all(got[i, n:] == 0)  # padded frames are zeroed


def test_sliding_cmn_matches_torchaudio(speech):
    raw = fbank(speech[1][:32000], cmn=False)
    for window in (20, 101, 300, 10_000):  # even/odd windows, longer than the utterance
        ref = AF.sliding_window_cmn(raw, cmn_window=window, min_cmn_window=0, center=True)
        got = apply_cmn(raw.unsqueeze(0), None, window)[0]
        assert (got - ref).abs().max() < 1e-4


def test_leading_dims_and_dtype():
    g = torch.Generator().manual_seed(0)
    wave = torch.randn(2, 3, 4000, generator=g) * 0.1
    out = fbank(wave)
    assert out.shape == (2, 3, num_frames(4000), 80)
    assert torch.allclose(out[1, 2], fbank(wave[1, 2]), atol=1e-5)
    assert fbank(wave.double()).dtype == torch.float64


def test_num_frames():
    assert num_frames(399) == 0
    assert num_frames(400) == 1
    assert num_frames(16000) == 98
    assert num_frames(8000, sample_rate=8000) == 98
    assert fbank(torch.rand(16000) - 0.5).shape == (98, 80)


def test_errors():
    with pytest.raises(ValueError, match="shorter than one analysis window"):
        fbank(torch.zeros(399))
    with pytest.raises(TypeError, match="float waveform"):
        fbank(torch.zeros(1000, dtype=torch.int16))


def test_dither_is_deterministic_with_generator():
    wave = torch.zeros(8000)  # digital silence: only dither makes it non-constant
    a = fbank(wave, dither=1.0, generator=torch.Generator().manual_seed(3))
    b = fbank(wave, dither=1.0, generator=torch.Generator().manual_seed(3))
    c = fbank(wave, dither=1.0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # one int16 LSB of noise: log-mel energies well above the log floor (-15.9)
    assert fbank(wave, dither=1.0, cmn=False, generator=torch.Generator().manual_seed(3)).min() > -8


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_fbank_module_scripted_and_from_config(speech):
    cfg = FeatureConfig(dither=1.0, sliding_cmn_frames=0)
    assert Fbank.from_config(cfg).dither == 0.0  # evaluation: no dither
    assert Fbank.from_config(cfg, train=True).dither == 1.0
    module = Fbank.from_config(cfg)
    assert module.state_dict() == {}  # buffers are not persistent: the encoder owns the state dict
    scripted = torch.jit.script(module)
    batch = torch.stack([speech[0][:8000], speech[1][:8000]])
    lengths = torch.tensor([8000, 6000])
    assert torch.equal(scripted(batch), fbank(batch))
    assert torch.equal(scripted(batch, lengths), fbank(batch, lengths=lengths))
    assert module.num_frames(8000) == num_frames(8000)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_runs_on_gpu(speech):
    batch = torch.stack([w[:4000] for w in speech])
    cpu = fbank(batch)
    gpu = fbank(batch.cuda())
    assert gpu.is_cuda
    # cuFFT rounds differently from MKL: ill-conditioned bins (see features.py) move a little.
    diff = (gpu.cpu() - cpu).abs()
    assert diff.max() < 0.1 and (diff > 1e-3).float().mean() < 1e-3
    scripted = torch.jit.script(Fbank()).cuda()
    assert torch.equal(scripted(batch.cuda()), gpu)


# --- feature cache of a data dir ------------------------------------------------------------


def _data_dir(root, n=6):
    import numpy as np
    import soundfile as sf

    from speakerid.data.datadir import write_data_dir

    rng = np.random.default_rng(0)
    wav, utt2spk = {}, {}
    for i in range(n):
        path = root / "audio" / f"u{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.1 * rng.standard_normal(4000 + 800 * i)).astype("float32"), 16000, subtype="PCM_16")
        wav[f"spk{i % 2}-u{i}"] = str(path)
        utt2spk[f"spk{i % 2}-u{i}"] = f"spk{i % 2}"
    write_data_dir(root / "data", wav, utt2spk)
    return root / "data", wav


def test_compute_features_for_data_dir_and_resume(tmp_path):
    import kaldiio

    from speakerid.data.feature_cache import compute_features_for_data_dir

    data, wav = _data_dir(tmp_path)
    scp = compute_features_for_data_dir(data, num_workers=2, utts_per_shard=2, progress=False)
    assert scp == data / "feats.scp"
    feats = kaldiio.load_scp(str(scp))
    assert list(feats) == sorted(wav)
    for utt, path in wav.items():
        expected = fbank(load_audio(path)[0], cmn=False)  # stored raw: no CMN
        assert torch.equal(torch.from_numpy(feats[utt].copy()), expected)
    shards = sorted((data / "feats").glob("raw_fbank.*.ark"))
    assert len(shards) == 3
    # resume: drop one finished shard (and leave a stale temp file); only that one is redone
    kept = {p: p.stat().st_mtime_ns for p in shards[1:]}
    shards[0].unlink()
    shards[0].with_suffix(".scp").unlink()
    (data / "feats" / f".{shards[0].name}.123-abcdef12.tmp").write_bytes(b"partial")
    compute_features_for_data_dir(data, num_workers=1, utts_per_shard=2, progress=False)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert len(kaldiio.load_scp(str(scp))) == len(wav)


def test_compute_features_bad_audio_names_the_file(tmp_path):
    from speakerid.audio import AudioError
    from speakerid.cli.main import main
    from speakerid.data.feature_cache import compute_features_for_data_dir

    data, wav = _data_dir(tmp_path, n=3)
    assert main(["features", "--data", str(data), "--no-progress"]) == 0
    (data / "feats.scp").unlink()
    bad = wav["spk0-u2"]
    with open(bad, "wb") as f:
        f.write(b"garbage, not audio" * 20)
    cfg = FeatureConfig(num_mel_bins=40)  # another config: every shard is recomputed
    with pytest.raises(AudioError, match=bad):
        compute_features_for_data_dir(data, feature_cfg=cfg, progress=False)
    assert not (data / "feats.scp").exists()
    assert not list((data / "feats").glob(".*.tmp"))  # no half-written shard left
