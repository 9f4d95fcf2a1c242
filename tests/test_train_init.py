"""Fine-tuning start (``speakerid train --init``): encoder weights, model check, imprinted heads.

Tiny ECAPA-TDNN on synthetic voices (the fixtures of tests/test_train.py); one training step per run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from speakerid.data.training import TrainError
from tests.test_train import TINY_MODEL, _max_diff, _write_cfg, make_data, tiny_cfg


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Path]:
    """(trained experiment, another data dir with other speakers)."""
    from speakerid.train.trainer import train

    root = tmp_path_factory.mktemp("init")
    data = make_data(root / "data", speakers=6, utts=3, seed=4)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exp = train(tiny_cfg(epochs=1, max_steps_per_epoch=1), data, root / "exp")
    finally:
        torch.set_num_threads(old)
    return exp, make_data(root / "other", speakers=4, utts=3, seed=5)


def _trainer(cfg, data: Path, exp: Path, init):
    from speakerid.train.trainer import Trainer
    from speakerid.distributed import setup_distributed

    return Trainer(cfg, data, exp, setup_distributed(), init_from=init)


def test_aam_head_is_imprinted_with_speaker_means(base, tmp_path):
    from speakerid.train.warm_start import speaker_means

    exp, other = base
    t = _trainer(tiny_cfg(loss={"name": "aam", "kwargs": {"sub_centers": 2}}), other, tmp_path / "ft", exp)
    assert _max_diff(t.encoder.state_dict(), torch.load(exp / "model.pt", weights_only=True)) == 0.0
    means = speaker_means(t.encoder, t.cfg, t.dataset)
    w = F.normalize(t.head.weight.detach(), dim=1).view(4, 2, -1)
    assert torch.allclose(w[:, 0], means, atol=1e-5) and torch.allclose(w[:, 1], means, atol=1e-5)
    # imprinted weights classify the training speakers' own chunks: each one's nearest class is its own
    assert torch.equal((means @ means.T).argmax(1), torch.arange(4))


def test_speed_classes_take_their_speakers_mean(base, tmp_path):
    exp, other = base
    cfg = tiny_cfg(loss={"name": "circle_proxy", "kwargs": {}}, augment={"speed": {"enabled": True, "speeds": [0.9, 1.0]}})
    t = _trainer(cfg, other, tmp_path / "ft", exp)
    w = F.normalize(t.head.weight.detach(), dim=1)
    assert w.shape[0] == 8 and torch.allclose(w[:4], w[4:])


def test_pair_loss_needs_no_head_and_trains(base, tmp_path):
    from speakerid.train.trainer import train

    exp, other = base
    cfg = tiny_cfg(epochs=1, max_steps_per_epoch=1, loss={"name": "circle", "kwargs": {"gamma": 32.0}},
                   data={"sampler": "pk", "speakers_per_batch": 4, "utts_per_speaker": 2}, optim={"lr": 1e-4})
    out = train(cfg, other, tmp_path / "ft", init_from=exp)
    tuned, start = (torch.load(p / "model.pt", weights_only=True) for p in (out, exp))
    weights = [k for k in start if k.endswith("weight")]  # BatchNorm running statistics move faster
    assert 0.0 < _max_diff({k: tuned[k] for k in weights}, {k: start[k] for k in weights}) < 0.01


def test_model_mismatch_is_one_line_error(base, tmp_path):
    exp, other = base
    cfg = tiny_cfg(model={**TINY_MODEL, "kwargs": {**TINY_MODEL["kwargs"], "embed_dim": 24}})
    with pytest.raises(TrainError, match=r"model\.embed_dim: 24 here, 16 there") as err:
        _trainer(cfg, other, tmp_path / "ft", exp)
    assert str(exp) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(TrainError, match=r"features\.wave_scale"):
        _trainer(tiny_cfg(features={"wave_scale": "float"}), other, tmp_path / "ft2", exp)


def test_default_kwargs_spelled_out_still_match(base, tmp_path):
    exp, other = base
    cfg = tiny_cfg(model={**TINY_MODEL, "kwargs": {**TINY_MODEL["kwargs"], "scale": 8}})
    _trainer(cfg, other, tmp_path / "ft", exp)  # 8 is ECAPATDNN's default: the same network


def test_packaged_name_and_missing_source(base, tmp_path, monkeypatch):
    import speakerid.experiment as experiment

    exp, other = base
    monkeypatch.setattr(experiment, "PACKAGED_DIR", exp.parent)
    t = _trainer(tiny_cfg(), other, tmp_path / "ft", exp.name)  # resolved like --model NAME
    assert _max_diff(t.encoder.state_dict(), torch.load(exp / "model.pt", weights_only=True)) == 0.0
    with pytest.raises(TrainError, match="--init: nosuch"):
        _trainer(tiny_cfg(), other, tmp_path / "ft2", "nosuch")


def test_cli_init_error_exits_2(base, tmp_path, capsys):
    from speakerid.cli.main import main

    exp, other = base
    bad = _write_cfg(tiny_cfg(features={"num_mel_bins": 32}), tmp_path / "bad.yaml")
    assert main(["train", "--config", str(bad), "--data", str(other), "--exp", str(tmp_path / "e"), "--init", str(exp)]) == 2
    err = capsys.readouterr().err.strip()
    assert "num_mel_bins" in err and str(exp) in err and len(err.splitlines()) == 1
