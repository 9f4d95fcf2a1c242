"""speakerid.inference: model sources, the Embedder of speakerid.load_model, experiment-dir files, the VAD hook."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import speakerid
from _use_helpers import make_tiny_experiment, voice
from speakerid.inference import Embedder, SegmentPolicy, embed_files, embed_waves, load_experiment
from speakerid.experiment import ExperimentError, read_calibration, read_cohort, read_dev_eval, read_dev_threshold, read_speakers, resolve_model_source, write_cohort, write_dev_eval, write_speakers
from speakerid.features.vad import speech_mask, trim_silence


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    torch.set_num_threads(1)
    return make_tiny_experiment(tmp_path_factory.mktemp("inference") / "exp")


def test_resolve_model_source(exp, monkeypatch, tmp_path):
    assert resolve_model_source(exp) == exp
    with pytest.raises(ExperimentError, match="no-such-model: neither an experiment dir nor a packaged model"):
        resolve_model_source("no-such-model")
    with pytest.raises(ExperimentError, match="experiment dir not found"):
        resolve_model_source(tmp_path / "missing" / "exp")
    # a packaged name resolves to speakerid/pretrained/<name>/
    monkeypatch.setattr("speakerid.experiment.PACKAGED_DIR", exp.parent)
    assert resolve_model_source(exp.name) == exp


def test_load_model_embeds_like_the_extract_rule(exp, tmp_path):
    path = voice(tmp_path / "a.wav", 150, seconds=1.5)
    model = speakerid.load_model(exp)
    assert isinstance(model, Embedder) and model.sample_rate == 16000
    extractor, _ = load_experiment(exp)
    ref = embed_files(extractor, [path]).numpy()
    np.testing.assert_allclose(model.embed_files([path]), ref, atol=1e-6)
    import soundfile as sf

    wave, sr = sf.read(path, dtype="float32")
    np.testing.assert_allclose(model.embed(wave, sr), ref[0], atol=1e-6)
    # another rate is resampled first
    assert model.embed(wave[::2], 8000).shape == (model.embed_dim,)
    with pytest.raises(ValueError, match="mono waveform"):
        model.embed(np.zeros((2, 100), np.float32), 16000)
    assert len(model.fingerprint) == 64


def test_experiment_dir_files_round_trip(tmp_path):
    assert read_dev_eval(tmp_path) is None and read_dev_threshold(tmp_path) is None and read_calibration(tmp_path) is None
    write_dev_eval(tmp_path, {"eer": 0.1, "threshold": 0.42, "min_dcf_0.01": 0.5})
    assert read_dev_threshold(tmp_path) == 0.42 and json.loads((tmp_path / "dev_eval.json").read_text())["eer"] == 0.1
    (tmp_path / "dev_eval.json").write_text("[1, 2")
    with pytest.raises(ExperimentError, match="dev_eval.json: not valid JSON"):
        read_dev_eval(tmp_path)
    write_speakers(tmp_path, ["b", "a"])
    assert read_speakers(tmp_path) == ["b", "a"]
    assert read_cohort(tmp_path) is None
    write_cohort(tmp_path, ["x", "y"], np.eye(2, 3))
    ids, emb = read_cohort(tmp_path)
    assert ids.tolist() == ["x", "y"] and emb.shape == (2, 3) and emb.dtype == np.float32
    (tmp_path / "cohort.npz").write_bytes(b"junk")
    with pytest.raises(ExperimentError, match="cohort.npz"):
        read_cohort(tmp_path)


def test_trim_silence_drops_silence_and_the_policy_hook_uses_it(exp):
    sr = 16000
    t = torch.arange(sr) / sr
    tone = 0.3 * torch.sin(2 * torch.pi * 200 * t)
    wave = torch.cat([torch.zeros(2 * sr), tone, torch.zeros(2 * sr)]) + 1e-5 * torch.randn(5 * sr, generator=torch.Generator().manual_seed(0))
    mask = speech_mask(wave.numpy(), sr)
    assert 0.15 < mask.mean() < 0.3
    trimmed = trim_silence(wave, sr)
    assert sr <= trimmed.numel() < 1.6 * sr
    assert torch.equal(trim_silence(tone, sr), tone)  # all speech: unchanged
    extractor, cfg = load_experiment(exp)
    assert SegmentPolicy.from_config(cfg).trim_silence is False  # off by default
    on = embed_waves(extractor, [wave], SegmentPolicy(trim_silence=True))
    np.testing.assert_allclose(on.numpy(), embed_waves(extractor, [trimmed]).numpy(), atol=1e-6)
    assert not torch.allclose(on, embed_waves(extractor, [wave]))


def test_thread_policy(monkeypatch):
    from speakerid.distributed import available_cpus, thread_count

    monkeypatch.delenv("SPEAKERID_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    assert available_cpus() == 8
    assert thread_count() == 8 and thread_count(workers=3) == 2 and thread_count(workers=20) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert thread_count() == 2
    monkeypatch.setenv("SPEAKERID_THREADS", "3")
    assert thread_count() == 3 and thread_count(threads=5) == 5  # the flag wins
    monkeypatch.setenv("SPEAKERID_THREADS", "torch")
    assert thread_count() == torch.get_num_threads()
    monkeypatch.setenv("SPEAKERID_THREADS", "zero")
    with pytest.raises(ValueError, match="SPEAKERID_THREADS: expected a positive integer"):
        thread_count()
    with pytest.raises(ValueError, match="--threads"):
        thread_count(threads=0)


@pytest.mark.parametrize(
    "env,expected",
    [
        ({}, ("PASSIVE", None)),  # sleep, no spin (any spin lost the contention figures)
        ({"OMP_WAIT_POLICY": "ACTIVE"}, ("ACTIVE", None)),  # the user's choice stands alone
        ({"GOMP_SPINCOUNT": "5"}, ("PASSIVE", "5")),
        ({"SPEAKERID_THREADS": "torch"}, (None, None)),  # torch's defaults untouched
    ],
)
def test_import_sets_openmp_wait_policy(env: dict, expected: tuple) -> None:
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "SPEAKERID_THREADS")}
    code = "import os, speakerid; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(v) for v in expected]
