"""``speakerid import --from onnx``: a random-weight WeSpeaker ResNet34 exported to ONNX as
WeSpeaker exports it (input ``feats``, output ``embs``, dynamic batch and frames), imported into
an onnxruntime-backed experiment, which embeds as WeSpeaker's own model and front end do (1e-4
relative) and enrols / identifies through the speaker DB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from speakerid.audio import load_audio
from speakerid.cli.main import main
from speakerid.inference import load_experiment

from _peers import PARITY_RTOL, randomize, rel_diff, wespeaker_embed

pytest.importorskip("onnxruntime", reason="onnxruntime (onnx extra) not installed")
pytest.importorskip("onnx", reason="onnx (onnx extra) not installed")
try:
    from speakerid.interop.peer import wespeaker_models

    wespeaker_models("resnet")
except ImportError as exc:  # pragma: no cover
    pytest.skip(f"wespeaker-unofficial not installed ({exc})", allow_module_level=True)


class _Last(torch.nn.Module):
    """WeSpeaker's export wrapper: the model returns (a, b); ONNX gets the embedding b."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.model(feats)[-1]


@pytest.mark.filterwarnings("ignore")
def test_onnx_backed_experiment(tmp_path: Path, shared_speech: Path, capsys) -> None:
    torch.manual_seed(0)
    peer = randomize(wespeaker_models("resnet").ResNet18(feat_dim=80, embed_dim=128), 4)
    onnx_path = tmp_path / "resnet18.onnx"
    torch.onnx.export(_Last(peer).eval(), (torch.randn(1, 200, 80),), str(onnx_path), input_names=["feats"],
                      output_names=["embs"], dynamic_axes={"feats": {0: "B", 1: "T"}, "embs": {0: "B"}}, dynamo=False)
    exp = tmp_path / "exp"
    assert main(["import", "--from", "onnx", "--checkpoint", str(onnx_path), "--out", str(exp)]) == 0
    assert (exp / "encoder.onnx").is_file() and json.loads((exp / "import.json").read_text())["toolkit"] == "onnx"
    extractor, _ = load_experiment(exp)
    wave, _ = load_audio(sorted(shared_speech.glob("libri_*/*.flac"))[0], 16000)
    with torch.no_grad():
        ours = extractor(wave[: 3 * 16000].unsqueeze(0))[0]
    assert rel_diff(wespeaker_embed(peer, wave[: 3 * 16000]), ours) < PARITY_RTOL

    db = str(tmp_path / "speakers.db")
    a = sorted((shared_speech / "ravdess_01").glob("*.flac"))
    b = sorted((shared_speech / "ravdess_02").glob("*.flac"))
    assert main(["enroll", "--model", str(exp), "--db", db, "--speaker", "alice", *map(str, a[:2])]) == 0
    assert main(["enroll", "--model", str(exp), "--db", db, "--speaker", "bob", *map(str, b[:2])]) == 0
    capsys.readouterr()
    assert main(["identify", "--model", str(exp), "--db", db, "--threshold", "-1", "--json", str(a[4])]) == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(m["speaker"] for m in result["candidates"]) == ["alice", "bob"] and result["decision"] in ("alice", "bob")

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    assert main(["import", "--from", "onnx", "--checkpoint", str(bad), "--out", str(tmp_path / "exp2")]) == 2
    assert "bad.onnx: not an ONNX model" in capsys.readouterr().err
