"""Hostile files into import, scoring and export (issue 18): each numbered case of the issue.

Every input is small and generated here. Where the harm is memory, the command runs in a child
process that reports its own peak resident memory (``VmHWM``), and the test checks that the
refusal came before the allocation; a full disk is simulated with ``RLIMIT_FSIZE`` (writes past
the limit fail with ``EFBIG``, as they fail with ``ENOSPC`` on a full disk; ``SIGXFSZ`` ignored).
"""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

import speakerid
from speakerid.cli.main import main

from _use_helpers import make_tiny_experiment, voice

ROOT = Path(speakerid.__file__).resolve().parents[1]  # the speakerid under test, for child processes
CAMPPLUS_ARGS = {"feat_dim": 40, "embed_dim": 16, "growth_rate": 8, "bn_size": 2, "init_channels": 16}


# --------------------------------------------------------------------------- helpers
def _wespeaker_state(seed: int = 0) -> dict[str, torch.Tensor]:
    from speakerid.models import build_model

    torch.manual_seed(seed)
    return build_model("campplus", feat_dim=40, embed_dim=16, growth_rate=8, bn_size=2, init_channels=16).state_dict()


def _wespeaker_config(path: Path, **extra) -> Path:
    data = {"model": "CAMPPlus", "model_args": dict(CAMPPLUS_ARGS),
            "dataset_args": {"fbank_args": {"num_mel_bins": 40, "frame_length": 25, "frame_shift": 10}}}
    for key, value in extra.items():
        data[key] = value
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def wespeaker(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny WeSpeaker CAM++ ``avg_model.pt`` + ``config.yaml`` (names as WeSpeaker's)."""
    d = tmp_path_factory.mktemp("wespeaker")
    torch.save(_wespeaker_state(), d / "avg_model.pt")
    return d / "avg_model.pt", _wespeaker_config(d / "config.yaml")


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> Path:
    return make_tiny_experiment(tmp_path_factory.mktemp("hostile") / "exp", seed=1)


def _import(ckpt: Path, config: Path, out: Path, *extra: str) -> int:
    return main(["import", "--from", "wespeaker", "--checkpoint", str(ckpt), "--config", str(config), "--out", str(out), *extra])


def _one_line_error(capsys, *names: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


_CHILD = """
import os, resource, signal, sys
fsize, address = int(sys.argv[1]), int(sys.argv[2])
if fsize:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
if address:
    resource.setrlimit(resource.RLIMIT_AS, (address, address))
import speakerid
from speakerid.cli.main import main
try:
    rc = main(sys.argv[3:])
finally:
    with open("/proc/self/status") as f:
        peak = next(line.split()[1] for line in f if line.startswith("VmHWM"))
    print("PEAK_KB", peak, file=sys.stderr, flush=True)
sys.exit(rc)
"""


def _child(argv: list[str], cwd: Path, fsize: int = 0, address: int = 0, timeout: float = 240) -> tuple[int, str, int]:
    """Run ``speakerid ARGV`` in a child process under the given limits: (exit status, stderr, peak RSS bytes)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "SPEAKERID_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", _CHILD, str(fsize), str(address), *argv], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=timeout)
    peak = [line for line in r.stderr.splitlines() if line.startswith("PEAK_KB")]
    err = "\n".join(line for line in r.stderr.splitlines() if not line.startswith("PEAK_KB"))
    return r.returncode, err, int(peak[0].split()[1]) * 1024 if peak else -1


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error" in line.lower() or "Error" in line]


# --------------------------------------------------------------------------- 1. NaN weights
def test_1_nan_weights_refused_at_import(wespeaker, tmp_path, capsys) -> None:
    ckpt, config = wespeaker
    nan = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in _wespeaker_state().items()}
    torch.save(nan, tmp_path / "nan.pt")
    assert _import(tmp_path / "nan.pt", config, tmp_path / "out") == 2
    _one_line_error(capsys, "nan.pt", "NaN")
    assert not (tmp_path / "out").exists()


def test_1_nan_weights_refused_at_every_model_load(exp, tmp_path, capsys) -> None:
    bad = tmp_path / "bad_exp"
    bad.mkdir()
    (bad / "config.yaml").write_bytes((exp / "config.yaml").read_bytes())
    state = torch.load(exp / "model.pt", weights_only=True)
    state["linear.bias"] = torch.full_like(state["linear.bias"], float("inf"))
    torch.save(state, bad / "model.pt")
    import speakerid
    from speakerid.experiment import ExperimentError

    with pytest.raises(ExperimentError, match="linear.bias has 16 of 16 values NaN or infinite"):
        speakerid.load_model(str(bad))
    assert main(["export", "--model", str(bad), "--out", str(tmp_path / "m.ts")]) == 2
    _one_line_error(capsys, "model.pt", "NaN or infinite")
    wav = voice(tmp_path / "a.wav", 140)
    assert main(["enroll", "--model", str(bad), "--db", str(tmp_path / "s.db"), "--speaker", "a", str(wav)]) == 2
    _one_line_error(capsys, "model.pt")
    assert not (tmp_path / "s.db").exists()


def test_1_non_finite_output_refused_by_export_and_enroll(exp, tmp_path, capsys) -> None:
    """Finite weights whose output overflows: the export check must not call inf == inf a match,
    and enroll must not store the row."""
    big = tmp_path / "big_exp"
    big.mkdir()
    (big / "config.yaml").write_bytes((exp / "config.yaml").read_bytes())
    state = torch.load(exp / "model.pt", weights_only=True)
    state["linear.weight"].fill_(3e38)
    state["linear.bias"].fill_(3e38)
    torch.save(state, big / "model.pt")
    out = tmp_path / "out"
    out.mkdir()
    assert main(["export", "--model", str(big), "--out", str(out / "m.ts")]) == 2
    _one_line_error(capsys, "m.ts", "NaN or infinite")
    assert list(out.iterdir()) == []
    wav = voice(tmp_path / "a.wav", 140)
    assert main(["enroll", "--model", str(big), "--db", str(out / "s.db"), "--speaker", "a", str(wav)]) == 2
    _one_line_error(capsys, "a.wav", "NaN or infinite embedding")
    if (out / "s.db").exists():
        from speakerid.enroll.speaker_db import SpeakerDB

        assert SpeakerDB(out / "s.db").list() == []


# --------------------------------------------------------------------------- 2. YAML alias bombs
def _alias_bomb(levels: int, width: int = 10) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines)


def test_2_alias_bomb_in_wespeaker_config(wespeaker, tmp_path, capsys) -> None:
    """Under dataset_args, the section main dumped whole into import.json (88 MB from 1 KB)."""
    ckpt, _ = wespeaker
    base = _wespeaker_config(tmp_path / "base.yaml").read_text()
    config = tmp_path / "config.yaml"
    bomb = "dataset_args:\n  bomb:\n" + textwrap.indent(_alias_bomb(6), "    ") + "\n"  # 10^6 nodes expanded
    config.write_text(base.replace("dataset_args:\n", bomb), encoding="utf-8")
    assert config.stat().st_size < 2048
    t0 = time.perf_counter()
    assert _import(ckpt, config, tmp_path / "out") == 2
    assert time.perf_counter() - t0 < 20
    _one_line_error(capsys, "config.yaml", "alias")
    assert not (tmp_path / "out").exists()


def test_2_import_json_keeps_only_used_source_keys(wespeaker, tmp_path) -> None:
    ckpt, _ = wespeaker
    config = _wespeaker_config(tmp_path / "config.yaml", dataset_args={
        "fbank_args": {"num_mel_bins": 40, "frame_length": 25, "frame_shift": 10},
        "shuffle_args": {"shuffle_size": 2500}, "noise_lmdb_file": "x" * 5000})
    assert _import(ckpt, config, tmp_path / "out") == 0
    record = json.loads((tmp_path / "out" / "import.json").read_text())
    assert record["source_dataset_args"] == {"fbank_args": {"num_mel_bins": 40, "frame_length": 25, "frame_shift": 10}}


def test_2_alias_bomb_in_speechbrain_hyperparams_and_train_config(tmp_path, capsys) -> None:
    hp = tmp_path / "hyperparams.yaml"
    hp.write_text(_alias_bomb(6) + "\n", encoding="utf-8")  # 10^6 once expanded (at 10^9 main took minutes and > 10 GB)
    t0 = time.perf_counter()
    assert main(["import", "--from", "speechbrain", "--checkpoint", str(tmp_path / "x.ckpt"), "--config", str(hp),
                 "--out", str(tmp_path / "out")]) == 2
    assert time.perf_counter() - t0 < 10
    _one_line_error(capsys, "hyperparams.yaml", "alias")
    from speakerid.config import ConfigError, load_config

    cfg = tmp_path / "train.yaml"
    cfg.write_text(_alias_bomb(9) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="alias"):
        load_config(cfg)


# --------------------------------------------------------------------------- 3. one long id
def _score_file(path: Path, long_id: str, row: int = 100, n: int = 191, scale: float = 1.0) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        e = long_id if i == row else f"spk{i % 7}/u{i}"
        target = i % 3 == 0
        lines.append(f"{e} spk{i % 5}/t{i} {scale * (rng.normal() + 2 * target):.4f} {'target' if target else 'nontarget'}\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_3_long_id_is_refused_naming_file_and_line(tmp_path, capsys) -> None:
    scores = _score_file(tmp_path / "scores.txt", "L" * 5000)
    for argv in (["eval", "--scores", str(scores)],
                 ["calibrate", "--scores", str(scores), "--output", str(tmp_path / "cal.json")]):
        assert main(argv) == 2
        line = _one_line_error(capsys, "scores.txt:101", "5000 characters")
        assert len(line) < 400
    trials = tmp_path / "trials.txt"
    trials.write_text("a b target\n" + "a " + "T" * 5000 + " nontarget\n", encoding="utf-8")
    emb = tmp_path / "emb.npz"
    np.savez(emb, ids=np.array(["a", "b"]), embeddings=np.eye(2, 4, dtype=np.float32))
    assert main(["score", "--trials", str(trials), "--embeddings", str(emb), "--output", str(tmp_path / "s.txt")]) == 2
    assert len(_one_line_error(capsys, "trials.txt:2")) < 400


def test_3_long_id_costs_no_memory(tmp_path) -> None:
    """A 10 MB id (main: eval grew to 18.6 GB; here capped at 4 GB of address space) is refused
    at its line, with the process' peak memory far below one copy of the id per row."""
    scores = _score_file(tmp_path / "scores.txt", "L" * 10_000_000)
    rc, err, peak = _child(["eval", "--scores", str(scores)], tmp_path, address=4 << 30)
    assert rc == 2, err
    assert "scores.txt:101" in err and len(err) < 400, err[:400]
    assert 0 < peak < 400 << 20, peak


def test_3_ids_wider_than_the_file_are_not_padded(tmp_path) -> None:
    """Many short ids and one of 1000 characters: not a fixed-width array 1000 characters wide."""
    from speakerid.scoring.trials import read_scores

    scores = _score_file(tmp_path / "scores.txt", "L" * 1000, n=20_000)
    sl = read_scores(scores)
    assert sl.enroll.nbytes + sl.test.nbytes < 8 * scores.stat().st_size
    assert sl.enroll[100] == "L" * 1000 and sl.enroll[0] == "spk0/u0"


# --------------------------------------------------------------------------- 4. calibrate --apply
def test_4_calibrate_apply_leaves_nothing_on_error(tmp_path, capsys) -> None:
    dev = _score_file(tmp_path / "dev.txt", "spk0/u100", scale=0.1)  # cosine-like: slope > 1, so 1e308 -> inf
    assert main(["calibrate", "--scores", str(dev), "--output", str(tmp_path / "cal.json")]) == 0
    lines = dev.read_text().splitlines()
    lines[50] = " ".join(lines[50].split()[:2] + ["1e308"] + lines[50].split()[3:])
    bad = tmp_path / "test.txt"
    bad.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    out = tmp_path / "test.calibrated"
    assert main(["calibrate", "--apply", str(tmp_path / "cal.json"), "--scores", str(bad), "--output", str(out)]) == 2
    _one_line_error(capsys, "test.txt", "non-finite LLR", "not written")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.json", "dev.txt", "test.txt"]


# --------------------------------------------------------------------------- 5. special files as --out
def test_5_existing_special_out_is_refused(exp, wespeaker, tmp_path, capsys) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    scores = _score_file(tmp_path / "scores.txt", "spk0/u100")
    trials = tmp_path / "trials.txt"
    trials.write_text("a b target\n", encoding="utf-8")
    emb = tmp_path / "emb.npz"
    np.savez(emb, ids=np.array(["a", "b"]), embeddings=np.eye(2, 4, dtype=np.float32))
    ckpt, config = wespeaker
    commands = [
        ["export", "--model", str(exp), "--out", str(fifo)],
        ["score", "--trials", str(trials), "--embeddings", str(emb), "--output", str(fifo)],
        ["calibrate", "--scores", str(scores), "--output", str(fifo)],
        ["eval", "--scores", str(scores), "--det", str(fifo)],
        ["import", "--from", "wespeaker", "--checkpoint", str(ckpt), "--config", str(config), "--out", str(fifo), "--force"],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        _one_line_error(capsys, str(fifo))
        assert stat.S_ISFIFO(os.stat(fifo).st_mode), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npz", "fifo", "scores.txt", "trials.txt"]
    # a character device: refused before anything is written (never renamed over, root or not)
    assert main(["calibrate", "--scores", str(scores), "--output", "/dev/null"]) == 2
    _one_line_error(capsys, "/dev/null", "character device")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


# --------------------------------------------------------------------------- 6. full disk
def test_6_export_onto_a_full_disk(exp, tmp_path) -> None:
    out_dir = tmp_path / "full"
    out_dir.mkdir()
    rc, err, _ = _child(["export", "--model", str(exp), "--out", str(out_dir / "m.ts")], tmp_path, fsize=20_000)
    assert rc == 2, err[-2000:]
    lines = _error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert str(out_dir / "m.ts") in lines[0] and "File too large" in lines[0], lines
    assert list(out_dir.iterdir()) == []


# --------------------------------------------------------------------------- 7. declared sizes
def _write_zip(path: Path, records: dict[str, bytes], big: str, big_bytes: int) -> None:
    """A torch zip file whose record ``big`` inflates to ``big_bytes`` zeros (a few MB on disk):
    written by hand, so that nothing of that size is ever held or compressed here."""
    chunk = 1 << 20
    c = zlib.compressobj(1, zlib.DEFLATED, -15)
    segment = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)  # independent of what precedes it
    tail = zlib.compressobj(1, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(big_bytes // chunk):
        crc = zlib.crc32(bytes(chunk), crc)
    central = b""
    with open(path, "wb") as f:
        for name, data in records.items():
            offset = f.tell()
            raw = name.encode()
            if name == big:
                method, size, csize, crc32 = 8, big_bytes, len(segment) * (big_bytes // chunk) + len(tail), crc
            else:
                method, size, csize, crc32 = 0, len(data), len(data), zlib.crc32(data)
            f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc32, csize, size, len(raw), 0) + raw)
            if name == big:
                for _ in range(big_bytes // chunk):
                    f.write(segment)
                f.write(tail)
            else:
                f.write(data)
            central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc32, csize, size,
                                   len(raw), 0, 0, 0, 0, 0, offset) + raw
        start = f.tell()
        f.write(central)
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(records), len(records), len(central), start, 0))


def test_7_declared_sizes_checked_before_reading(wespeaker, tmp_path) -> None:
    _, config = wespeaker
    torch.save({"head.conv1.weight": torch.zeros(4)}, tmp_path / "small.pt")
    with zipfile.ZipFile(tmp_path / "small.pt") as z:
        records = {name: z.read(name) for name in z.namelist()}
    big = next(name for name in records if name.endswith("/data/0"))
    _write_zip(tmp_path / "bomb.pt", records, big, 1 << 30)
    assert (tmp_path / "bomb.pt").stat().st_size < 8 << 20
    with zipfile.ZipFile(tmp_path / "bomb.pt") as z:  # a well-formed zip declaring 1 GiB
        assert z.getinfo(big).file_size == 1 << 30
    argv = ["import", "--from", "wespeaker", "--checkpoint", str(tmp_path / "bomb.pt"), "--config", str(config),
            "--out", str(tmp_path / "out")]
    rc, err, peak = _child(argv, tmp_path)
    assert rc == 2, err[-2000:]
    assert "bomb.pt" in err and "declares 1024 MiB" in err, err[-2000:]
    assert 0 < peak < (1 << 30), peak  # main inflated the record first (1.6 GB peak)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- 8. one line, not a traceback
def test_8_non_tensor_value_in_state_dict(wespeaker, tmp_path, capsys) -> None:
    _, config = wespeaker
    state = _wespeaker_state()
    state["head.conv1.weight"] = [1.0, 2.0]
    torch.save(state, tmp_path / "list.pt")
    assert _import(tmp_path / "list.pt", config, tmp_path / "out") == 2
    _one_line_error(capsys, "list.pt", "head.conv1.weight is a list, not a tensor")


def test_8_negative_embed_dim(wespeaker, tmp_path, capsys) -> None:
    ckpt, _ = wespeaker
    config = _wespeaker_config(tmp_path / "config.yaml", model_args={**CAMPPLUS_ARGS, "embed_dim": -64})
    assert _import(ckpt, config, tmp_path / "out") == 2
    _one_line_error(capsys, "config.yaml", "campplus")


def test_8_recursive_ref_in_speechbrain_hyperparams(tmp_path, capsys) -> None:
    hp = tmp_path / "hyperparams.yaml"
    hp.write_text("a: !ref <b>\nb: !ref <c>\nc: !ref <a>\ncompute_features: !ref <a>\n", encoding="utf-8")
    assert main(["import", "--from", "speechbrain", "--checkpoint", str(tmp_path / "x.ckpt"), "--config", str(hp),
                 "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "hyperparams.yaml", "!ref loop")


def test_8_import_onto_a_full_disk(wespeaker, tmp_path) -> None:
    ckpt, config = wespeaker
    out = tmp_path / "exp"
    rc, err, _ = _child(["import", "--from", "wespeaker", "--checkpoint", str(ckpt), "--config", str(config),
                         "--out", str(out)], tmp_path, fsize=200_000)
    assert rc == 2, err[-2000:]
    lines = _error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert str(out) in lines[0] and "File too large" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- 9. front end at import
@pytest.mark.parametrize("fbank", [{"frame_length": -25}, {"frame_shift": 0}])
def test_9_front_end_validated_at_import(wespeaker, tmp_path, capsys, fbank) -> None:
    ckpt, _ = wespeaker
    config = _wespeaker_config(tmp_path / "config.yaml", dataset_args={"fbank_args": {"num_mel_bins": 40, **fbank}})
    assert _import(ckpt, config, tmp_path / "out") == 2
    _one_line_error(capsys, "config.yaml", "frame_")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- 10. messages
def test_10_read_only_folder_named_not_the_temp_dir(wespeaker, tmp_path, capsys, monkeypatch) -> None:
    ckpt, config = wespeaker
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system", str(tmp_path / ".exp.x1y2"))

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    assert _import(ckpt, config, tmp_path / "exp") == 2
    line = _one_line_error(capsys, str(tmp_path / "exp"), "Read-only file system")
    assert ".exp.x1y2" not in line


def test_10_full_disk_names_the_path(tmp_path, monkeypatch) -> None:
    """An ENOSPC raised by a write (no file name in it) names the target."""
    from speakerid import fileio

    real_open = open

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr("builtins.open", lambda *a, **k: Full(real_open(*a, **k)))
    with pytest.raises(OSError) as info:
        fileio.write_text_atomic(tmp_path / "x.txt", "data")
    monkeypatch.undo()
    assert str(tmp_path / "x.txt") in str(info.value) and "No space left" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_10_recursive_alias_names_the_file(wespeaker, tmp_path, capsys) -> None:
    ckpt, _ = wespeaker
    base = _wespeaker_config(tmp_path / "base.yaml").read_text()
    config = tmp_path / "config.yaml"
    config.write_text(base.replace("dataset_args:\n", "dataset_args:\n  loop: &l [1, *l]\n"), encoding="utf-8")
    assert _import(ckpt, config, tmp_path / "out") == 2
    _one_line_error(capsys, "config.yaml", "recursive alias")


def test_10_missing_onnx_says_to_install_it(tmp_path, capsys, monkeypatch) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07")
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError, as when the extra is missing
    assert main(["import", "--from", "onnx", "--checkpoint", str(model), "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "model.onnx", "pip install onnx")


# --------------------------------------------------------------------------- 11. the rest
def test_11_huge_score_refused_without_numpy_warning(tmp_path, capsys) -> None:
    dev = _score_file(tmp_path / "dev.txt", "spk0/u100")
    lines = dev.read_text().splitlines()
    lines[7] = " ".join(lines[7].split()[:2] + ["1e308"] + lines[7].split()[3:])
    dev.write_text("\n".join(lines) + "\n")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy RuntimeWarning fails the test
        assert main(["calibrate", "--scores", str(dev), "--output", str(tmp_path / "cal.json")]) == 2
    _one_line_error(capsys, "dev.txt", "too large")
    assert not (tmp_path / "cal.json").exists()


def test_11_constant_dc_clip_is_refused(tmp_path) -> None:
    from speakerid.audio import AudioError, load_audio

    sf.write(tmp_path / "dc.wav", np.full(16000, 0.25, dtype=np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match="constant DC") as info:
        load_audio(tmp_path / "dc.wav")
    assert info.value.reason == "silent"


def test_11_spellings_of_one_path_are_embedded_once(exp, tmp_path, monkeypatch) -> None:
    from speakerid.enroll.speaker_db import SpeakerDB
    from speakerid.enroll.model import SpeakerModel

    a = voice(tmp_path / "a.flac", 130, seconds=1.0)
    db = SpeakerDB(tmp_path / "s.db", exp, threshold=0.0)
    db.enroll("alice", [a])
    trials = tmp_path / "trials.txt"
    spellings = ["a.flac", "./a.flac", "././a.flac", "sub/../a.flac", str(a)]
    (tmp_path / "sub").mkdir()
    trials.write_text("".join(f"alice {s}\n" for s in spellings), encoding="utf-8")
    embedded: list = []
    real = SpeakerModel.embed
    monkeypatch.setattr(SpeakerModel, "embed", lambda self, paths: embedded.extend(paths) or real(self, paths))
    monkeypatch.chdir(tmp_path)
    summary = db.verify_trials(trials, tmp_path / "out.txt", progress=False)
    assert summary["trials"] == len(spellings)
    assert len(embedded) == 1
    scores = [float(line.split()[2]) for line in (tmp_path / "out.txt").read_text().splitlines()]
    assert max(scores) - min(scores) < 1e-9
