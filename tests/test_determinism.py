"""Training is bit-identical when the settings the README names are the same.

The settings: the config (its ``seed`` included), the data dir, the number of torch threads,
``data.num_workers``, the process count and the device (CPU here). Two runs, one in this
process and one as a separate ``speakerid train`` process, must give the same bytes in every
checkpoint tensor and in ``model.pt``: weights and BatchNorm running statistics alike.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from test_train import _env, _write_cfg, make_data, one_thread, tiny_cfg  # noqa: F401  (shared tiny setup; one_thread is a fixture)
from speakerid.checkpoint import list_checkpoints, load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _cfg():
    # Augmentation on, so its random draws are part of what must repeat.
    return tiny_cfg(
        epochs=2,
        max_steps_per_epoch=3,
        augment={"specaug": {"enabled": True, "prob": 1.0}, "mixup": {"enabled": True, "prob": 1.0}},
    )


def _assert_same_bytes(a: dict, b: dict, where: str) -> None:
    assert a.keys() == b.keys(), where
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), f"{where}: {key} differs"


def test_same_settings_give_bit_identical_training(tmp_path, one_thread):
    from speakerid.train.trainer import train

    data = make_data(tmp_path / "data", speakers=6, utts=3, seed=4)
    cfg = _cfg()
    first = train(cfg, data, tmp_path / "a")
    # the second run is a separate process with the same settings (1 torch thread, CPU)
    config = _write_cfg(cfg, tmp_path / "cfg.yaml")
    run = subprocess.run(
        [sys.executable, "-m", "speakerid", "train", "--config", str(config), "--data", str(data), "--exp", str(tmp_path / "b")],
        capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    second = tmp_path / "b"
    _assert_same_bytes(
        torch.load(first / "model.pt", weights_only=True), torch.load(second / "model.pt", weights_only=True), "model.pt"
    )
    ckpt_a, ckpt_b = load_checkpoint(list_checkpoints(first)[-1]), load_checkpoint(list_checkpoints(second)[-1])
    for part in ("model", "head"):
        if part in ckpt_a:
            _assert_same_bytes(ckpt_a[part], ckpt_b[part], part)
    bn = [k for k in ckpt_a["model"] if k.endswith("running_var")]
    assert bn, "the tiny model has BatchNorm statistics to compare"
