"""speakerid.audio: loading, mix-down, resampling, and one clear error per bad file."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speakerid import audio
from speakerid.audio import AudioError, AudioFileNotFoundError, audio_duration, load_audio


def _sine(freq: float, sr: int, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def _expect(path: Path, fragment: str, exc: type = AudioError) -> str:
    with pytest.raises(exc) as info:
        load_audio(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: "), msg  # names the file first
    assert fragment in msg, msg
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    _expect(path, "not found", AudioFileNotFoundError)
    with pytest.raises(FileNotFoundError):  # also an OSError, for callers that catch those
        load_audio(path)
    with pytest.raises(ValueError):
        audio_duration(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    _expect(path, "empty file (0 bytes)")


def test_garbage_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(audio.shutil, "which", lambda name: None)  # no ffmpeg fallback
    path = tmp_path / "garbage.wav"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    _expect(path, "unreadable or corrupt")
    with pytest.raises(AudioError, match="unreadable or corrupt"):
        audio_duration(path)


def test_zero_length_wav(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, dtype=np.int16), 16000)
    assert path.stat().st_size > 0  # a valid header, no samples
    _expect(path, "zero-length")


def test_all_zero_wav(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(1600, dtype=np.int16), 16000)
    _expect(path, "all 1600 samples are zero")


def test_nan_samples_in_float_wav(tmp_path):
    path = tmp_path / "nan.wav"
    x = _sine(440, 16000, 0.2)
    x[10], x[20] = np.nan, np.inf
    sf.write(path, x, 16000, subtype="FLOAT")
    _expect(path, "2 NaN or inf sample(s)")


def test_8khz_file_is_resampled(tmp_path):
    path = tmp_path / "8k.wav"
    sf.write(path, _sine(1000, 8000, 1.0), 8000, subtype="PCM_16")
    wave, sr = load_audio(path, 16000)
    assert sr == 16000 and wave.dtype == torch.float32 and wave.dim() == 1
    assert wave.numel() == 16000
    spectrum = torch.fft.rfft(wave[2000:14000]).abs()
    peak_hz = float(spectrum.argmax()) * 16000 / 12000
    assert abs(peak_hz - 1000) < 5  # the tone is still at 1 kHz
    assert audio_duration(path) == pytest.approx(1.0)


def test_stereo_is_mixed_down(tmp_path):
    path = tmp_path / "stereo.flac"
    left, right = _sine(300, 16000, 0.5), _sine(700, 16000, 0.5, amp=0.1)
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="PCM_16")
    wave, _ = load_audio(path)
    expected = (left + right) / 2
    assert wave.shape == (8000,)
    assert np.abs(wave.numpy() - expected).max() < 2e-4  # int16 quantisation


def test_m4a_without_ffmpeg_says_how_to_convert(tmp_path, monkeypatch):
    monkeypatch.setattr(audio.shutil, "which", lambda name: None)
    path = tmp_path / "id10001" / "00001.m4a"
    path.parent.mkdir()
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A fake")
    msg = _expect(path, "ffmpeg")
    assert f"ffmpeg -i {path} -ac 1 -ar 16000 {path.with_suffix('.wav')}" in msg


def test_m4a_converted_with_ffmpeg_when_on_path(tmp_path, monkeypatch):
    """A stand-in ``ffmpeg`` on the PATH (writes a known wav to its last argument)."""
    source = tmp_path / "decoded.wav"
    sf.write(source, _sine(500, 16000, 0.25), 16000, subtype="PCM_16")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "ffmpeg"
    fake.write_text(f'#!/bin/sh\nfor last; do :; done\ncp "{source}" "$last"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setattr(audio.tempfile, "tempdir", str(tmpdir))
    path = tmp_path / "a.m4a"
    path.write_bytes(b"not really aac")
    wave, sr = load_audio(path)
    assert sr == 16000 and wave.numel() == 4000
    assert audio_duration(path) == pytest.approx(0.25)
    assert not list(tmpdir.iterdir())  # the temporary wav is removed


def test_ffmpeg_failure_is_one_line(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "ffmpeg"
    fake.write_text("#!/bin/sh\necho 'Invalid data found when processing input' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    path = tmp_path / "bad.m4a"
    path.write_bytes(b"xx")
    _expect(path, "ffmpeg cannot decode it (Invalid data found when processing input)")


def test_real_speech_file(shared_speech):
    path = sorted((shared_speech / "ravdess_01").glob("*.flac"))[0]
    wave, sr = load_audio(path)
    assert sr == 16000 and wave.dtype == torch.float32
    assert wave.abs().max() <= 1.0 and wave.abs().max() > 0.01
    assert audio_duration(path) == pytest.approx(wave.numel() / 16000)


# --- truncated WAVs; one minimum length --------------------------------------------------


def _truncated(tmp_path: Path) -> Path:
    full = tmp_path / "full.wav"
    sf.write(full, _sine(300, 16000, 1.0), 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return cut


def test_truncated_wav_is_reported(tmp_path):
    cut = _truncated(tmp_path)
    msg = _expect(cut, "truncated WAV: the header promises 16000 frames (1.000 s) but the file holds 7989")
    assert msg
    with pytest.raises(AudioError, match="truncated WAV"):
        audio_duration(cut)
    with pytest.raises(AudioError, match="truncated WAV") as e:
        audio.check_audio_file(cut)
    assert e.value.reason == "truncated"
    assert audio_duration(tmp_path / "full.wav") == pytest.approx(1.0)  # complete files are untouched


def test_streaming_wav_size_placeholder_is_not_truncation(tmp_path):
    path = tmp_path / "stream.wav"
    sf.write(path, _sine(300, 16000, 0.5), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.index(b"data") + 4
    data[at : at + 4] = b"\xff\xff\xff\xff"  # what streaming writers put before they know the size
    path.write_bytes(bytes(data))
    assert load_audio(path)[0].numel() == 8000


def test_one_minimum_length_rule(tmp_path):
    wave = torch.ones(399)
    with pytest.raises(AudioError, match=r"x.wav: 399 samples \(24.9 ms at 16000 Hz\) is shorter than one analysis window \(400 samples, 25 ms\)"):
        audio.require_min_length(wave, 16000, "x.wav")
    assert audio.require_min_length(torch.ones(400), 16000, "x.wav").numel() == 400
    with pytest.raises(AudioError, match="shorter than one analysis window"):
        audio.require_min_length(torch.ones(400), 16000, "x.wav", frame_length_ms=32.0)
    short = tmp_path / "short.wav"
    sf.write(short, _sine(300, 16000, 0.01), 16000)
    assert load_audio(short)[0].numel() == 160  # loading alone keeps it; the rule is for embedding/features
    with pytest.raises(AudioError, match="shorter than one analysis window") as e:
        audio.check_audio_file(short)
    assert e.value.reason == "too short"


def test_every_embedding_path_applies_the_minimum_length(tmp_path):
    """extract's data-dir loader and embed_files (used by enroll / verify / identify) refuse what
    ``features`` refuses, before any model is run."""
    from types import SimpleNamespace

    from speakerid import extract
    from speakerid.inference import embed_files

    short = tmp_path / "short.wav"
    sf.write(short, _sine(300, 16000, 0.001), 16000)  # 16 samples
    with pytest.raises(AudioError, match="short.wav: 16 samples .* shorter than one analysis window"):
        embed_files(SimpleNamespace(sample_rate=16000), [short])
    with pytest.raises(AudioError, match="short.wav: 16 samples"):
        extract._AudioList(["u"], {"u": str(short)}, 16000)[0]


def test_features_job_applies_the_minimum_length(tmp_path):
    from speakerid.config import FeatureConfig
    from speakerid.data.feature_cache import compute_features_for_data_dir

    data = tmp_path / "data"
    data.mkdir()
    short = tmp_path / "short.wav"
    sf.write(short, _sine(300, 16000, 0.001), 16000)
    (data / "wav.scp").write_text(f"u1 {short}\n")
    (data / "utt2spk").write_text("u1 s1\n")
    with pytest.raises(AudioError, match="short.wav: 16 samples .* shorter than one analysis window"):
        compute_features_for_data_dir(data, None, FeatureConfig(), num_workers=1, progress=False)


def test_mp4_duration_from_the_movie_header(tmp_path):
    import struct

    body = bytes(4) + struct.pack(">IIII", 0, 0, 1000, 2500) + bytes(80)
    mvhd = struct.pack(">I4s", 8 + len(body), b"mvhd") + body
    path = tmp_path / "a.m4a"
    path.write_bytes(struct.pack(">I4s4sI", 16, b"ftyp", b"M4A ", 0) + struct.pack(">I4s", 8 + len(mvhd), b"moov") + mvhd)
    assert audio.mp4_duration(path) == pytest.approx(2.5)
    assert audio_duration(path) == pytest.approx(2.5)
    path.write_bytes(b"\x00\x00\x00\x10ftypM4A \x00\x00\x00\x00")
    with pytest.raises(AudioError, match="no MP4 movie header"):
        audio.mp4_duration(path)


def test_audio_errors_cross_processes_with_their_reason():
    import pickle

    err = pickle.loads(pickle.dumps(AudioError("x.wav: truncated WAV: ...", "truncated")))
    assert str(err) == "x.wav: truncated WAV: ..." and err.reason == "truncated"
    gone = pickle.loads(pickle.dumps(AudioFileNotFoundError("x.wav: audio file not found")))
    assert isinstance(gone, FileNotFoundError) and gone.reason == "not found"
