"""Inference backends (speakerid.encoder_runtime): onnxruntime (core dependencies, the default on a CPU)
gives the eager model's embeddings and fingerprint."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from speakerid.config import TrainConfig, config_from_dict, save_config
from speakerid.experiment import ExperimentError
from speakerid.inference import load_model

TINY_CAMPPLUS = {"name": "campplus", "kwargs": {"embed_dim": 16, "growth_rate": 8, "bn_size": 2, "init_channels": 16}}


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> Path:
    """A tiny CAM++ experiment dir with random weights and non-trivial BatchNorm statistics."""
    from speakerid.models import build_encoder

    root = tmp_path_factory.mktemp("backend_exp")
    cfg = config_from_dict(TrainConfig, {"features": {"num_mel_bins": 24}, "model": TINY_CAMPPLUS}, "<test>")
    torch.manual_seed(0)
    enc = build_encoder(cfg)
    for m in enc.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    save_config(cfg, root / "config.yaml")
    torch.save(enc.state_dict(), root / "model.pt")
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One export cache for the module (the export is the slow part)."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("cache")
    mp.setenv("SPEAKERID_CACHE", str(path))
    yield path
    mp.undo()


def test_onnxruntime_matches_torch_and_keeps_fingerprint(exp, cache):
    eager, fast = load_model(exp), load_model(exp, backend="onnxruntime")
    assert len(list((cache / "onnx").glob("*.onnx"))) == 1
    rng = np.random.default_rng(0)
    for seconds in (0.3, 1.7, 25.0):  # tiled, whole, two windows
        wave = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
        a, b = eager.embed(wave, 16000), fast.embed(wave, 16000)
        assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()
    assert fast.fingerprint == eager.fingerprint
    again = load_model(exp, backend="onnxruntime")  # reuses the cached graph
    assert again.fingerprint == eager.fingerprint and len(list((cache / "onnx").glob("*.onnx"))) == 1
    assert len(list((cache / "onnx").glob("*.ok-ort*"))) == 1  # the check passed once and is not run again


def test_extract_cli_backend(exp, cache, tmp_path):
    import soundfile as sf

    from speakerid.cli.main import main
    from speakerid.data.datadir import write_data_dir
    from speakerid.scoring.embeddings import load_embeddings

    rng = np.random.default_rng(1)
    wav = {}
    for i in range(3):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(12000 + 3000 * i)).astype(np.float32), 16000)
        wav[f"u{i}"] = str(path)
    write_data_dir(tmp_path / "data", wav, {u: "s" for u in wav})
    outs = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"emb_{backend}"
        assert main(["extract", "--exp", str(exp), "--data", str(tmp_path / "data"), "--out", str(out), "--no-progress",
                     "--backend", backend, "--format", "npz"]) == 0
        outs[backend] = load_embeddings(out / "embeddings.npz")[1]
    assert np.abs(outs["torch"] - outs["onnxruntime"]).max() <= 1e-4 * np.abs(outs["torch"]).max()


def test_unknown_backend_and_gpu_are_one_line_errors(exp):
    with pytest.raises(ExperimentError, match="unknown inference backend 'tvm'"):
        load_model(exp, backend="tvm")
    with pytest.raises(ExperimentError, match="runs on the CPU"):
        load_model(exp, device="meta", backend="onnxruntime")
    assert load_model(exp, device="meta").extractor.encoder.__class__.__name__ == "CAMPPlus"  # auto off the CPU: torch


def test_auto_is_the_default_and_runs_onnxruntime_on_the_cpu(exp, monkeypatch, tmp_path):
    """The default backend (no argument, and the CLI's default) runs the encoder in onnxruntime on a
    CPU, with the eager model's embeddings and fingerprint; the check against the eager model runs
    once per graph and onnxruntime version, not on every load."""
    import speakerid.encoder_runtime as runtime
    from speakerid.cli.main import build_parser
    from speakerid.models.onnx_encoder import OnnxEncoder

    monkeypatch.setenv("SPEAKERID_CACHE", str(tmp_path))
    backend = next(a for a in build_parser()._subparsers._group_actions[0].choices["verify"]._actions if a.dest == "backend")
    assert backend.default == runtime.DEFAULT_BACKEND == "auto" and list(backend.choices) == list(runtime.BACKENDS)
    fast, eager = load_model(exp), load_model(exp, backend="torch")
    assert isinstance(fast.extractor.encoder, OnnxEncoder) and not isinstance(eager.extractor.encoder, OnnxEncoder)
    assert fast.fingerprint == eager.fingerprint
    wave = (0.1 * np.random.default_rng(2).standard_normal(24000)).astype(np.float32)
    a, b = eager.embed(wave, 16000), fast.embed(wave, 16000)
    assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()

    def no_second_check(*args, **kwargs):
        raise AssertionError("the check ran again for a graph that passed it")

    monkeypatch.setattr(runtime, "check_same_embeddings", no_second_check)
    assert isinstance(load_model(exp).extractor.encoder, OnnxEncoder)


def test_auto_falls_back_to_torch_once_and_onnxruntime_says_why(exp, monkeypatch, tmp_path, caplog):
    """A model whose graph cannot be exported (or does not reproduce the eager model): ``auto`` warns
    once and runs torch, and later loads go straight to torch without exporting again; an explicit
    ``onnxruntime`` is a one-line error."""
    import logging

    import speakerid.encoder_runtime as runtime

    monkeypatch.setenv("SPEAKERID_CACHE", str(tmp_path))
    calls = []

    def broken_export(encoder, feat_dim, path):
        calls.append(path)
        raise RuntimeError("shape '[1, 72, 2, 300]' is invalid for input of size 48000\nmore lines")

    monkeypatch.setattr(runtime, "export_encoder_onnx", broken_export)
    with caplog.at_level(logging.WARNING, logger="speakerid.encoder_runtime"):
        model = load_model(exp)
    assert model.extractor.encoder.__class__.__name__ == "CAMPPlus" and len(calls) == 1
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "does not run in onnxruntime (RuntimeError: shape" in warned[0]
    assert "\n" not in warned[0] and warned[0].endswith("running it in torch")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="speakerid.encoder_runtime"):
        assert load_model(exp).extractor.encoder.__class__.__name__ == "CAMPPlus"
    assert len(calls) == 1 and not caplog.records  # the recorded failure: no second export, no second warning
    with pytest.raises(ExperimentError, match="does not run in onnxruntime .*use --backend torch"):
        load_model(exp, backend="onnxruntime")


def test_graph_key_follows_the_model_code_not_only_the_weights(monkeypatch, tmp_path):
    """The cached graph is named by weights + model source + opset + torch: an upgrade that changes
    a layer's code must export a new graph, while the fingerprint (the speaker DB's) stays."""
    import speakerid.encoder_runtime as runtime
    from speakerid.models import build_model

    enc = build_model("campplus", **TINY_CAMPPLUS["kwargs"])
    key = runtime.graph_key(enc, "f" * 12)
    assert key.startswith("f" * 12) and key == runtime.graph_key(enc, "f" * 12)
    assert runtime.graph_key(enc, "e" * 12) != key  # other weights

    edited = tmp_path / "campplus.py"  # the CAM++ module's source as a later release might have it
    real_source = runtime.inspect.getsourcefile
    edited.write_bytes(Path(real_source(sys.modules["speakerid.models.campplus"])).read_bytes() + b"\n# edited\n")
    monkeypatch.setattr(runtime.inspect, "getsourcefile",
                        lambda m: str(edited) if m.__name__ == "speakerid.models.campplus" else real_source(m))
    assert runtime.graph_key(enc, "f" * 12) != key
    monkeypatch.undo()
    monkeypatch.setattr(runtime, "ONNX_OPSET", runtime.ONNX_OPSET + 1)
    assert runtime.graph_key(enc, "f" * 12) != key


@pytest.mark.parametrize("policy, spins", [("PASSIVE", False), (None, True)])
def test_onnxruntime_threads_follow_the_wait_policy(exp, cache, monkeypatch, policy, spins):
    """Idle onnxruntime threads sleep under speakerid's thread policy (OMP_WAIT_POLICY=PASSIVE, set by
    ``import speakerid``), as torch's do: beside busy processes a spinning thread burns the time slice
    its sibling needs (benchmarks/results_contention.txt). Without the policy, onnxruntime's default."""
    if policy is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", policy)
    opts = load_model(exp, backend="onnxruntime").extractor.encoder._session.get_session_options()
    try:
        entry = opts.get_session_config_entry("session.intra_op.allow_spinning")
    except Exception:  # noqa: BLE001 -- onnxruntime raises when the entry was never set
        entry = ""
    assert (entry != "0") is spins


def test_a_damaged_cached_graph_is_exported_again(exp, monkeypatch, tmp_path, caplog):
    """A cached graph that no longer loads (truncated by a full disk or another program; speakerid
    itself writes it through a rename) is exported again, not run and not a reason to fall back."""
    import logging

    from speakerid.models.onnx_encoder import OnnxEncoder

    monkeypatch.setenv("SPEAKERID_CACHE", str(tmp_path))
    eager = load_model(exp, backend="torch")
    load_model(exp)
    (graph,) = (tmp_path / "onnx").glob("*.onnx")
    graph.write_bytes(graph.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="speakerid.encoder_runtime"):
        again = load_model(exp)
    assert isinstance(again.extractor.encoder, OnnxEncoder)
    assert any("not a loadable ONNX model" in r.getMessage() and "exporting it again" in r.getMessage() for r in caplog.records)
    wave = (0.1 * np.random.default_rng(3).standard_normal(20000)).astype(np.float32)
    a, b = eager.embed(wave, 16000), again.embed(wave, 16000)
    assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()
    assert not list((tmp_path / "onnx").glob("*.failed-*"))


def test_an_unwritable_cache_is_named_and_auto_runs_torch(exp, monkeypatch, tmp_path, caplog):
    """The cache folder cannot be made (here: a file stands where it should be): ``auto`` says so in one
    warning naming the folder and runs torch; ``onnxruntime`` is a one-line error saying the same."""
    import logging

    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    monkeypatch.setenv("SPEAKERID_CACHE", str(blocker / "cache"))
    with caplog.at_level(logging.WARNING, logger="speakerid.encoder_runtime"):
        model = load_model(exp)
    assert model.extractor.encoder.__class__.__name__ == "CAMPPlus"
    (warned,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"cannot write the onnxruntime graph into {blocker / 'cache' / 'onnx'}" in warned
    assert "SPEAKERID_CACHE" in warned and "\n" not in warned
    with pytest.raises(ExperimentError, match="cannot write the onnxruntime graph .* or use --backend torch"):
        load_model(exp, backend="onnxruntime")


def test_processes_loading_a_new_model_at_once_export_it_once(exp, monkeypatch, tmp_path):
    """Loaders that start together (torchrun ranks, parallel jobs) take a lock around the export: one
    exports, the others wait and load its file."""
    import threading
    import time

    import speakerid.encoder_runtime as runtime
    from speakerid.models.onnx_encoder import OnnxEncoder

    monkeypatch.setenv("SPEAKERID_CACHE", str(tmp_path))
    real_export, calls = runtime.export_encoder_onnx, []

    def slow_export(encoder, feat_dim, path):
        calls.append(path)
        time.sleep(0.5)  # the others arrive while this export runs
        return real_export(encoder, feat_dim, path)

    monkeypatch.setattr(runtime, "export_encoder_onnx", slow_export)
    models, errors = [], []

    def load():
        try:
            models.append(load_model(exp))
        except Exception as e:  # noqa: BLE001 -- reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(calls) == 1 and len(models) == 3
    assert all(isinstance(m.extractor.encoder, OnnxEncoder) for m in models)
