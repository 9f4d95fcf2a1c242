"""Atomic writes: errors name the user's output, never the hidden temporary file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from speakerid import fileio
from speakerid.cli.main import main
from speakerid.fileio import atomic_path, write_text_atomic


@pytest.fixture()
def unwritable(monkeypatch, tmp_path):
    """A folder whose files cannot be created (EACCES from mkstemp, as for a read-only folder;
    simulated because the tests may run as root, who may write anywhere)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real = tempfile.mkstemp

    def mkstemp(suffix=None, prefix=None, dir=None, text=False):
        if dir is not None and Path(dir) == folder:
            raise PermissionError(13, "Permission denied", os.path.join(dir, f"{prefix}k3j2h1{suffix}"))
        return real(suffix=suffix, prefix=prefix, dir=dir, text=text)

    monkeypatch.setattr(fileio.tempfile, "mkstemp", mkstemp)
    return folder


def _assert_names_target(err: str, target: Path) -> None:
    assert str(target) in err, err
    assert f".{target.name}." not in err, err  # the hidden temporary name is not shown


def test_unwritable_folder_names_the_target(unwritable):
    target = unwritable / "scores.txt"
    with pytest.raises(PermissionError) as e:
        write_text_atomic(target, "x")
    _assert_names_target(str(e.value), target)
    assert "cannot write here (Permission denied)" in str(e.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_really_read_only_folder_names_the_target(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError) as e:
            write_text_atomic(folder / "x.txt", "x")
        _assert_names_target(str(e.value), folder / "x.txt")
    finally:
        folder.chmod(0o700)


def test_target_is_a_directory_or_under_a_file(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(IsADirectoryError) as e:
        write_text_atomic(tmp_path / "out", "x")
    _assert_names_target(str(e.value), tmp_path / "out")
    (tmp_path / "plain").write_text("keep")
    with pytest.raises(OSError, match="cannot create its folder") as e:
        write_text_atomic(tmp_path / "plain" / "x.txt", "x")
    assert (tmp_path / "plain").read_text() == "keep"


def test_write_error_inside_the_block_names_the_target(tmp_path):
    target = tmp_path / "emb.npz"
    with pytest.raises(OSError) as e:
        with atomic_path(target, suffix=".npz") as tmp:
            raise OSError(28, "No space left on device", str(tmp))
    _assert_names_target(str(e.value), target)
    assert not [p for p in tmp_path.iterdir()]  # temporary file removed, nothing half-written


def _scores(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "dev.txt"
    lines = [f"e{i} t{i} {rng.normal(1.0 if i % 2 else -1.0):.4f} {'target' if i % 2 else 'nontarget'}" for i in range(40)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cli_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_cli_outputs_name_the_target(tmp_path, unwritable, capsys):
    scores = _scores(tmp_path)
    emb = tmp_path / "emb.npz"
    np.savez(emb, ids=np.array([f"e{i}" for i in range(40)] + [f"t{i}" for i in range(40)]),
             embeddings=np.random.default_rng(1).standard_normal((80, 4)).astype(np.float32))
    trials = tmp_path / "trials.txt"
    trials.write_text("".join(f"e{i} t{i} {'target' if i % 2 else 'nontarget'}\n" for i in range(40)))
    out = unwritable / "scores.txt"
    _assert_names_target(_cli_error(capsys, ["score", "--trials", str(trials), "--embeddings", str(emb), "--output", str(out)]), out)
    out = unwritable / "cal.json"
    _assert_names_target(_cli_error(capsys, ["calibrate", "--scores", str(scores), "--output", str(out)]), out)
    pytest.importorskip("matplotlib")
    out = unwritable / "det.png"
    _assert_names_target(_cli_error(capsys, ["eval", "--scores", str(scores), "--det", str(out)]), out)
    assert not list(unwritable.iterdir())


def test_cli_export_names_the_target(tmp_path, unwritable, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from _use_helpers import make_tiny_experiment

    exp = make_tiny_experiment(tmp_path / "exp", seed=3)
    out = unwritable / "embedder.ts"
    _assert_names_target(_cli_error(capsys, ["export", "--model", str(exp), "--out", str(out)]), out)


def test_atomic_dir_replaces_a_folder_as_a_whole(tmp_path):
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with fileio.atomic_dir(out) as stage:
            (stage / "new.txt").write_text("new")
            raise RuntimeError("fail half-way")
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"] and (out / "old.txt").is_file()
    with fileio.atomic_dir(out) as stage:
        (stage / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"] and [p.name for p in tmp_path.iterdir()] == ["pkg"]
