"""Trainer tests: experiment dir, schedules, checkpoints, DDP == single process, kill + resume.

Everything runs on tiny synthetic data (a few speakers of short harmonic "voices" written
in tmp_path) and a tiny ECAPA-TDNN (C=32, 24 mel bins, 40-frame chunks).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from speakerid.checkpoint import CheckpointError, average_state_dicts, list_checkpoints, load_checkpoint, prune_checkpoints, save_checkpoint
from speakerid.experiment import load_encoder_weights
from speakerid.config import MarginScheduleConfig, TrainConfig, config_from_dict, save_config
from speakerid.data.datadir import write_data_dir
from speakerid.train.schedule import LRSchedule, ScheduleError, margin_at

REPO = Path(__file__).resolve().parents[1]
SR = 16000


# ----------------------------------------------------------------------------- fixtures
def _voice(rng: np.random.Generator, f0: float, formant: float, seconds: float) -> np.ndarray:
    """A crude speaker: harmonics of ``f0`` shaped by one formant, plus noise."""
    t = np.arange(int(seconds * SR)) / SR
    f0_t = f0 * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
    phase = 2 * np.pi * np.cumsum(f0_t) / SR
    x = sum(np.exp(-(((k * f0 - formant) / 600) ** 2)) * np.sin(k * phase) for k in range(1, 25))
    x = x / np.max(np.abs(x)) * 0.3 + 0.01 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def make_data(root: Path, speakers: int, utts: int, seed: int = 0, seconds: float = 0.6) -> Path:
    """A data dir of synthetic speakers; also writes ``trials`` (all pairs, Kaldi form)."""
    rng = np.random.default_rng(seed)
    wav, utt2spk = {}, {}
    for s in range(speakers):
        spk = f"spk{seed}_{s:02d}"
        f0, formant = rng.uniform(90, 260), rng.uniform(500, 2500)
        for u in range(utts):
            utt = f"{spk}-u{u}"
            path = root / "wav" / f"{utt}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, _voice(rng, f0, formant, seconds * rng.uniform(0.8, 1.2)), SR)
            wav[utt], utt2spk[utt] = str(path), spk
    write_data_dir(root, wav, utt2spk)
    utt_list = sorted(wav)
    with open(root / "trials", "w") as f:
        for i, a in enumerate(utt_list):
            for b in utt_list[i + 1 :]:
                f.write(f"{a} {b} {'target' if utt2spk[a] == utt2spk[b] else 'nontarget'}\n")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("train_data"), speakers=8, utts=4, seed=1)


TINY_MODEL = {
    "name": "ecapa_tdnn",
    "kwargs": {"channels": 32, "embed_dim": 16, "mfa_channels": 64, "se_bottleneck": 16, "attention_dim": 16},
}


def tiny_cfg(**sections) -> TrainConfig:
    """A tiny, fast config; ``sections`` override top-level keys (dicts are merged one level deep)."""
    base = {
        "seed": 3,
        "epochs": 2,
        "features": {"num_mel_bins": 24, "dither": 0.0},
        "data": {"chunk_frames": 40, "batch_size": 8, "sampler": "shuffle"},
        "model": TINY_MODEL,
        "loss": {"name": "aam", "kwargs": {}},
        "optim": {"lr": 0.05, "final_lr": 0.005, "warmup_epochs": 0.5},
        "margin": {"increase_start_epoch": 0, "fix_start_epoch": 1, "final": 0.1},
        "keep_checkpoints": 2,
        "average_last": 2,
        "log_every": 1,
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return config_from_dict(TrainConfig, base, "<test>")


@pytest.fixture()
def one_thread():
    """Single-threaded torch, so in-process and subprocess runs sum floats in the same order."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _write_cfg(cfg: TrainConfig, path: Path) -> Path:
    save_config(cfg, path)
    return path


def _final_state(exp: Path) -> dict:
    return load_checkpoint(list_checkpoints(exp)[-1])


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(
        float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0
        for k in a
        if torch.is_floating_point(a[k])
    ) if a else 0.0


# ----------------------------------------------------------------------------- schedules
def test_lr_schedule_warmup_then_exponential_and_cosine():
    s = LRSchedule(lr=0.1, final_lr=0.001, warmup_steps=10, total_steps=110, kind="exponential")
    assert s(0) == pytest.approx(0.01)
    assert s(9) == pytest.approx(0.1)
    assert s(10) == pytest.approx(0.1)
    assert s(109) == pytest.approx(0.001)
    assert s(60) == pytest.approx(0.1 * (0.01 ** (50 / 99)))  # geometric in between
    lrs = [s(i) for i in range(10, 110)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    c = LRSchedule(lr=0.1, final_lr=0.001, warmup_steps=0, total_steps=101, kind="cosine")
    assert c(0) == pytest.approx(0.1) and c(100) == pytest.approx(0.001)
    assert c(50) == pytest.approx(0.001 + 0.099 * 0.5)
    with pytest.raises(ScheduleError, match="scheduler"):
        LRSchedule(0.1, 0.001, 0, 10, kind="step")


def test_margin_schedule():
    cfg = MarginScheduleConfig(enabled=True, initial=0.0, final=0.2, increase_start_epoch=1, fix_start_epoch=3)
    assert margin_at(cfg, 0, 5, 10) == 0.0
    assert margin_at(cfg, 1, 0, 10) == pytest.approx(0.0)
    assert margin_at(cfg, 2, 0, 10) == pytest.approx(0.1)
    assert margin_at(cfg, 2, 5, 10) == pytest.approx(0.15)
    assert margin_at(cfg, 3, 0, 10) == pytest.approx(0.2)
    assert margin_at(MarginScheduleConfig(enabled=False, final=0.3), 0, 0, 10) == 0.3


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_helpers(tmp_path):
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(5)}
    avg = average_state_dicts([a, b])
    assert torch.equal(avg["w"], torch.tensor([2.0, 4.0])) and int(avg["n"]) == 5
    for e in range(1, 5):
        save_checkpoint(tmp_path / "checkpoints" / f"epoch_{e:04d}.pt", {"model": a, "epoch": e})
    assert [p.name for p in prune_checkpoints(tmp_path, 2)] == ["epoch_0001.pt", "epoch_0002.pt"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["epoch_0003.pt", "epoch_0004.pt"]
    assert torch.equal(load_encoder_weights(tmp_path)["w"], a["w"])  # no model.pt: newest checkpoint
    assert not list(tmp_path.glob("checkpoints/.*"))  # no temporary files left
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


# ----------------------------------------------------------------------------- end to end
def test_train_writes_complete_experiment_dir(data, tmp_path, one_thread, capsys):
    from speakerid.models import build_model
    from speakerid.train.trainer import train

    cfg = tiny_cfg(epochs=3, dev_data=str(data), dev_trials=str(data / "trials"), max_steps_per_epoch=2)
    exp = train(cfg, data, tmp_path / "exp")
    for name in ("config.yaml", "speakers.txt", "model.pt", "train.log", "training_curves.png", "dev_eval.json"):
        assert (exp / name).is_file(), name
    assert list((exp / "tb").glob("events.out.tfevents.*"))
    assert [p.name for p in list_checkpoints(exp)] == ["epoch_0002.pt", "epoch_0003.pt"]  # keep_checkpoints=2
    assert yaml.safe_load((exp / "config.yaml").read_text())["model"] == TINY_MODEL
    assert (exp / "speakers.txt").read_text().split() == sorted({f"spk1_{s:02d}" for s in range(8)})
    result = json.loads((exp / "dev_eval.json").read_text())
    assert set(result) == {"eer", "threshold", "min_dcf_0.01"} and 0.0 <= result["eer"] <= 1.0
    ckpt = torch.load(list_checkpoints(exp)[-1], weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["global_step"] == 6 and len(ckpt["history"]["dev_eer"]) == 3
    # model.pt = encoder only, the mean of the last 2 checkpoints, loadable into a fresh model.
    state = torch.load(exp / "model.pt", weights_only=True)
    c2, c3 = (load_checkpoint(p)["model"] for p in list_checkpoints(exp))
    key = next(k for k in state if k.endswith("weight"))
    assert torch.allclose(state[key], (c2[key] + c3[key]) / 2, atol=1e-7)
    model = build_model(cfg.model.name, feat_dim=24, **cfg.model.kwargs)
    model.load_state_dict(state)
    log = (exp / "train.log").read_text()
    assert "epoch 3/3" in log and "dev EER" in log
    # A second run into the same exp without --resume is refused instead of clobbering it.
    from speakerid.data.training import TrainError

    with pytest.raises(TrainError, match="--resume"):
        train(cfg, data, exp)
    # The trainer's dev figure is the recipe's: extract -> score -> eval on the same dev trials.
    from speakerid.cli.main import main

    assert main(["extract", "--exp", str(exp), "--data", str(data), "--out", str(tmp_path / "emb"), "--no-progress"]) == 0
    scores = tmp_path / "dev_scores.txt"
    assert main(["score", "--trials", str(data / "trials"), "--embeddings", str(tmp_path / "emb"), "--output", str(scores)]) == 0
    capsys.readouterr()
    assert main(["eval", "--scores", str(scores), "--trials", str(data / "trials"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert abs(evaluated["eer"] - result["eer"]) < 1e-4, (evaluated, result)


def test_init_from_keeps_encoder_and_rebuilds_head(data, tmp_path, one_thread):
    from speakerid.train.trainer import Trainer, train
    from speakerid.distributed import setup_distributed

    exp = train(tiny_cfg(epochs=1, max_steps_per_epoch=1), data, tmp_path / "exp")
    other = make_data(tmp_path / "other", speakers=5, utts=2, seed=2)
    t = Trainer(tiny_cfg(data={"batch_size": 4}), other, tmp_path / "ft", setup_distributed(), init_from=exp)
    pretrained = torch.load(exp / "model.pt", weights_only=True)
    assert _max_diff(t.encoder.state_dict(), pretrained) == 0.0
    assert t.dataset.num_classes == 5
    head_shapes = {tuple(v.shape) for v in t.head.state_dict().values()}
    assert any(5 in s for s in head_shapes) and not any(8 in s for s in head_shapes)


def test_unknown_config_key_names_file_and_key(data, tmp_path, capsys):
    from speakerid.cli.main import main

    cfg_path = tmp_path / "bad.yaml"
    cfg_path.write_text("epochs: 1\noptim:\n  lr: 0.1\n  lr_decay: 0.5\n")
    assert main(["train", "--config", str(cfg_path), "--data", str(data), "--exp", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert str(cfg_path) in err and "lr_decay" in err and "optim" in err
    assert not (tmp_path / "e" / "checkpoints").exists()
    assert main(["train", "--config", str(_write_cfg(tiny_cfg(), tmp_path / "ok.yaml")), "--data", str(data),
                 "--exp", str(tmp_path / "e"), "--set", "optim.nesterovv=true"]) == 2
    assert "nesterovv" in capsys.readouterr().err


@pytest.mark.parametrize(
    "loss,data_cfg",
    [
        ({"name": "aam", "kwargs": {}}, {"sampler": "shuffle", "batch_size": 8}),
        ({"name": "circle", "kwargs": {"gamma": 32.0}}, {"sampler": "pk", "speakers_per_batch": 4, "utts_per_speaker": 2}),
    ],
    ids=["aam-classifier", "circle-pairs"],
)
def test_ddp_two_processes_match_single_process(data, tmp_path, one_thread, loss, data_cfg):
    """2-rank torchrun (gloo) == 1 process on the same global batches: 1e-5 on every weight.

    BatchNorm statistics are global under DDP (GlobalBatchNorm), pair losses all-gather the
    embeddings with gradient, the classifier head is in the DDP module: so every update is
    the single-process update up to float summation order. Two SGD-Nesterov steps, one per
    epoch (the epoch boundary is crossed), at a small lr, because this tiny randomly
    initialised model amplifies rounding differences ~1e4x within a few steps (measured in
    ONE process: perturbing every weight by 1e-7 moves the weights by ~1e-3 after 4 steps
    at lr 5e-3), so longer runs agree only loosely. Measured here: ~4e-7; with per-rank
    BatchNorm instead of GlobalBatchNorm 0.1-0.4; without the embedding all-gather (circle) 0.07.
    """
    from speakerid.train.trainer import train

    cfg = tiny_cfg(loss=loss, data=data_cfg, max_steps_per_epoch=1, epochs=2, optim={"lr": 0.002, "final_lr": 0.001})
    single = train(cfg, data, tmp_path / "single")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "speakerid", "train", "--config", str(_write_cfg(cfg, tmp_path / "cfg.yaml")),
        "--data", str(data), "--exp", str(tmp_path / "ddp"),
    ]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _final_state(single), _final_state(tmp_path / "ddp")
    assert a["global_step"] == b["global_step"] == 2
    assert _max_diff(a["model"], b["model"]) < 1e-5
    assert _max_diff(a["head"], b["head"]) < 1e-5
    assert abs(a["history"]["loss"][-1] - b["history"]["loss"][-1]) < 1e-4


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(data, tmp_path, one_thread):
    """Kill during epoch 2 (after epoch 1's checkpoint), --resume: same final weights (<= 1e-6)."""
    from speakerid.train.trainer import train

    cfg = tiny_cfg(epochs=3, max_steps_per_epoch=0, loss={"name": "aam", "kwargs": {}}, data={"batch_size": 4})
    reference = train(cfg, data, tmp_path / "ref")
    cfg_path = _write_cfg(cfg, tmp_path / "cfg.yaml")
    exp = tmp_path / "killed"
    cmd = [sys.executable, "-m", "speakerid", "train", "--config", str(cfg_path), "--data", str(data), "--exp", str(exp)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = exp / "checkpoints" / "epoch_0001.pt"
    deadline = time.time() + 90
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists(), proc.stderr.read().decode()[-2000:]
    proc.stderr.close()
    assert [p.name for p in list_checkpoints(exp)] == ["epoch_0001.pt"], "the run was not killed mid-epoch 2"
    assert not (exp / "model.pt").exists()
    resumed = subprocess.run(cmd + ["--resume"], env=_env(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    a, b = _final_state(reference), _final_state(exp)
    assert a["global_step"] == b["global_step"]
    assert _max_diff(a["model"], b["model"]) <= 1e-6
    assert _max_diff(a["head"], b["head"]) <= 1e-6
    assert a["history"]["loss"] == pytest.approx(b["history"]["loss"], abs=1e-6)
    ma, mb = (torch.load(e / "model.pt", weights_only=True) for e in (reference, exp))
    assert _max_diff(ma, mb) <= 1e-6


def test_moco_and_xbm_runs_keep_their_state_in_checkpoints(data, tmp_path, one_thread):
    """MoCo: two views + momentum key encoder + queue; XBM: memory of past embeddings."""
    from speakerid.train.trainer import train

    moco = train(tiny_cfg(epochs=1, max_steps_per_epoch=2, loss={"name": "moco", "kwargs": {"queue_size": 64}}), data, tmp_path / "moco")
    ckpt = _final_state(moco)
    assert int(ckpt["head"]["ptr"]) == 16  # 2 steps x 8 keys enqueued
    key = {k[len("encoder."):]: v for k, v in ckpt["key_encoder"].items()}
    assert key.keys() == ckpt["model"].keys()
    assert 0 < _max_diff(key, ckpt["model"])  # the key encoder trails the query encoder
    xbm = train(
        tiny_cfg(epochs=1, max_steps_per_epoch=2, loss={"name": "circle", "kwargs": {}, "xbm_size": 32},
                 data={"sampler": "pk", "speakers_per_batch": 4, "utts_per_speaker": 2}),
        data, tmp_path / "xbm",
    )
    head = _final_state(xbm)["head"]
    assert int(head["filled"]) == 16 and int(head["step"]) == 2
    assert math.isfinite(_final_state(xbm)["history"]["loss"][0])


def test_training_from_webdataset_shards(data, tmp_path, one_thread):
    from speakerid.data.shards import write_shards
    from speakerid.data.training import TrainError
    from speakerid.train.trainer import train

    shards = write_shards(data, tmp_path / "shards", utts_per_shard=8)
    exp = train(tiny_cfg(epochs=2, data={"shards": str(shards)}), data, tmp_path / "exp")
    ckpt = _final_state(exp)
    assert ckpt["global_step"] == 8 and ckpt["speakers"] == sorted({f"spk1_{s:02d}" for s in range(8)})
    with pytest.raises(TrainError, match="shuffle"):
        train(tiny_cfg(data={"shards": str(shards), "sampler": "pk"}), data, tmp_path / "exp2")
