"""``speakerid import --from 3dspeaker``: state-dict forms, the two config forms, the front end it
writes, and one-line refusals (non-finite weights, unsupported layouts, foreign files). No
3D-Speaker code needed (the parity test against it is tests/test_3dspeaker_parity.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from speakerid.cli.main import main
from speakerid.config import load_config
from speakerid.models.campplus import CAMPPlus

YAML = """\
sample_rate: 16000
fbank_dim: 80
embedding_size: 192
feature_extractor:
  obj: speakerlab.process.processor.FBank
  args:
    n_mels: <fbank_dim>
    sample_rate: <sample_rate>
    mean_nor: True
embedding_model:
  obj: speakerlab.models.campplus.DTDNN.CAMPPlus
  args:
    feat_dim: <fbank_dim>
    embedding_size: <embedding_size>
"""
MODELSCOPE = {"framework": "pytorch", "task": "speaker-verification",
              "model": {"type": "cam++-sv", "model_config": {"sample_rate": 16000, "fbank_dim": 80, "emb_size": 192},
                        "pretrained_model": "campplus.pt"}}


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return CAMPPlus(feat_dim=80, embed_dim=192, stats_eps=0.0).state_dict()


def _import(tmp_path: Path, obj, *extra: str, name: str = "c.pt") -> tuple[int, Path]:
    ckpt = tmp_path / name
    torch.save(obj, ckpt)
    out = tmp_path / "exp"
    return main(["import", "--from", "3dspeaker", "--checkpoint", str(ckpt), "--out", str(out), *extra]), out


def _check_front_end(exp: Path) -> None:
    cfg = load_config(exp / "config.yaml")
    f = cfg.features
    assert (cfg.model.name, cfg.model.kwargs["embed_dim"], cfg.model.kwargs["stats_eps"]) == ("campplus", 192, 0.0)
    assert (f.sample_rate, f.num_mel_bins, f.frame_length_ms, f.frame_shift_ms, f.dither) == (16000, 80, 25.0, 10.0, 0.0)
    assert (f.cmn, f.window_type, f.wave_scale, f.trim_silence) == (True, "povey", "float", False)


def test_plain_state_dict_without_config(state, tmp_path: Path) -> None:
    rc, exp = _import(tmp_path, state)
    assert rc == 0
    _check_front_end(exp)
    meta = json.loads((exp / "import.json").read_text())
    assert meta["toolkit"] == "3dspeaker" and len(meta["checkpoint_sha256"]) == 64
    loaded = torch.load(exp / "model.pt", weights_only=True)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_wrapped_ddp_state_dict(state, tmp_path: Path) -> None:
    rc, exp = _import(tmp_path, {"state_dict": {f"module.{k}": v for k, v in state.items()}})
    assert rc == 0
    _check_front_end(exp)


@pytest.mark.parametrize("form", ["yaml", "json"])
def test_config_forms(form: str, state, tmp_path: Path) -> None:
    config = tmp_path / ("cam++.yaml" if form == "yaml" else "configuration.json")
    config.write_text(YAML if form == "yaml" else json.dumps(MODELSCOPE))
    rc, exp = _import(tmp_path, state, "--config", str(config))
    assert rc == 0
    _check_front_end(exp)


def test_refuses_non_finite_weights(state, tmp_path: Path, capsys) -> None:
    bad = dict(state)
    bad["xvector.dense.linear.weight"] = bad["xvector.dense.linear.weight"].clone()
    bad["xvector.dense.linear.weight"][0, 0, 0] = float("nan")
    rc, exp = _import(tmp_path, bad, name="nan.pt")
    err = capsys.readouterr().err.strip()
    assert rc != 0 and not exp.exists()
    assert "nan.pt" in err and "NaN or infinite" in err and "xvector.dense.linear.weight" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("case, message", [
    ("config_str", "config_str='batchnorm-prelu' not supported"),
    ("sample_rate", "sample_rate 8000 not supported"),
    ("obj", "not supported; choose one of"),
])
def test_refuses_unsupported_config(case: str, message: str, state, tmp_path: Path, capsys) -> None:
    text = {"config_str": YAML + "    config_str: batchnorm-prelu\n",
            "sample_rate": YAML.replace("sample_rate: 16000", "sample_rate: 8000"),
            "obj": YAML.replace("campplus.DTDNN.CAMPPlus", "eres2net.ERes2Net_huge.ERes2Net")}[case]
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    rc, _ = _import(tmp_path, state, "--config", str(config))
    err = capsys.readouterr().err
    assert rc != 0 and message in err and "bad.yaml" in err


def test_refuses_foreign_weights_and_flags(state, tmp_path: Path, capsys) -> None:
    rc, _ = _import(tmp_path, {"fc.weight": torch.zeros(3, 3)}, name="other.pt")
    assert rc != 0 and "other.pt: not a CAMPPlus state dict" in capsys.readouterr().err
    rc, _ = _import(tmp_path, state, "--window-type", "hamming")
    assert rc != 0 and "--window-type does not apply to --from 3dspeaker" in capsys.readouterr().err
