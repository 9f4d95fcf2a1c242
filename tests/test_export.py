"""speakerid.export: the exported waveform -> embedding chain equals the eager one within 1e-4."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from _use_helpers import make_tiny_experiment
from speakerid.export import ExportError, export_model, load_exported_metadata
from speakerid.inference import load_experiment
from speakerid.extractor import model_fingerprint
from speakerid.inference import SegmentPolicy

SR = 16000


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    torch.set_num_threads(1)
    return make_tiny_experiment(tmp_path_factory.mktemp("export") / "exp", seed=3)


def _probe() -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return 0.1 * torch.randn(3, int(4.7 * SR), generator=g)  # a batch and length the export never saw


def test_torchscript_equals_eager(exp, tmp_path):
    out = export_model(exp, tmp_path / "embedder.ts")
    eager, cfg = load_experiment(exp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(out))
    x = _probe()
    with torch.no_grad():
        ref = eager(x)
        got = scripted(x)
    assert got.shape == (3, 16)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
    meta = load_exported_metadata(out)
    assert meta["sample_rate"] == SR and meta["embed_dim"] == 16
    assert meta["fingerprint"] == model_fingerprint(eager, SegmentPolicy.from_config(cfg))  # as the DB and extract see it


def test_export_errors(exp, tmp_path):
    with pytest.raises(ValueError, match="run the train stage first"):
        export_model(tmp_path / "missing", tmp_path / "x.ts")
    with pytest.raises(ExportError, match="unknown export format"):
        export_model(exp, tmp_path / "x.bin", fmt="tflite")
    assert not (tmp_path / "x.bin").exists()


def test_cli_export(exp, tmp_path, capsys):
    from speakerid.cli.main import main

    assert main(["export", "--model", str(exp), "--out", str(tmp_path / "m.pt")]) == 0
    assert (tmp_path / "m.pt").is_file() and str(tmp_path / "m.pt") in capsys.readouterr().out


def test_onnx_equals_eager(exp, tmp_path):
    pytest.importorskip("onnx", reason="ONNX export needs the onnx extra (pip install onnx onnxscript)")
    pytest.importorskip("onnxscript", reason="the torch.export-based ONNX exporter needs onnxscript")
    ort = pytest.importorskip("onnxruntime", reason="checking the ONNX model needs onnxruntime")
    out = export_model(exp, tmp_path / "embedder.onnx")
    eager, cfg = load_experiment(exp)
    x = _probe()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"wave": x.numpy()})[0]
    with torch.no_grad():
        ref = eager(x).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    assert load_exported_metadata(out)["fingerprint"] == model_fingerprint(eager, SegmentPolicy.from_config(cfg))


def test_check_is_relative_for_huge_embeddings():
    """A barely trained model can emit entries ~1e8; the check then scales atol by that size."""
    from speakerid.export import compare_outputs

    class Big(torch.nn.Module):
        sample_rate = SR

        def forward(self, x):
            return x[:, :4] * 1e8

    big = Big()
    assert compare_outputs("m", lambda x: (x[:, :4].double() * 1e8 * (1 + 1e-7)).numpy(), big, 1e-4) < 1e-4
    with pytest.raises(ExportError, match="differs from the eager model"):
        compare_outputs("m", lambda x: (x[:, :4] * 1e8 * (1 + 1e-3)).numpy(), big, 1e-4)

    class Small(Big):
        def forward(self, x):
            return x[:, :4]

    with pytest.raises(ExportError, match="differs"):  # ordinary embeddings: absolute 1e-4
        compare_outputs("m", lambda x: (x[:, :4] + 1e-3).numpy(), Small(), 1e-4)
