"""Speaker DB robustness (issue 11 items 6 and 12): database errors, read-only access, foreign
files, corrupt rows, and verify's exit status (0 accept, 1 reject, 2 error, always)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _use_helpers import make_tiny_experiment, voice
from speakerid.cli.main import main
from speakerid.enroll.speaker_db import SpeakerDB
from speakerid.enroll.model import SpeakerModel
from speakerid.enroll.records import SpeakerDBError


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("enroll_robust")
    exp = make_tiny_experiment(root / "exp", seed=0)
    wavs = {
        "a1": voice(root / "wav" / "a1.wav", 110, seed=1),
        "b1": voice(root / "wav" / "b1.wav", 240, seed=3, tilt=0.5),
    }
    return exp, wavs, SpeakerModel.from_experiment(exp)


def _enrolled(tmp_path: Path, model, wavs) -> Path:
    db = tmp_path / "speakers.db"
    with SpeakerDB(db, model) as d:
        d.enroll("alice", [wavs["a1"]])
        d.enroll("bob", [wavs["b1"]])
    return db


@pytest.fixture
def db_file(setup, tmp_path):
    _, wavs, model = setup
    return _enrolled(tmp_path, model, wavs)


def _verify(exp, db, wav, *extra, threshold: str = "0") -> list[str]:
    return ["verify", "--model", str(exp), "--db", str(db), "--speaker", "alice", "--threshold", threshold, *extra, str(wav)]


def _snapshot(db: Path) -> tuple[bytes, list[str]]:
    return db.read_bytes(), sorted(p.name for p in db.parent.iterdir())


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


def _corrupt_speakers_page(db_file: Path) -> None:
    """Overwrite the root page of the speakers table (the file header and schema stay intact)."""
    conn = sqlite3.connect(db_file)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'speakers'").fetchone()[0]
    conn.close()
    with open(db_file, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xa5" * page_size)


def test_corrupt_page_is_exit_2_naming_the_db(setup, db_file, capsys):
    """A corrupt data page: one line naming the DB, exit 2, not a traceback."""
    exp, wavs, _ = setup
    _corrupt_speakers_page(db_file)
    for argv in (_verify(exp, db_file, wavs["a1"]), ["list", "--db", str(db_file)],
                 ["identify", "--model", str(exp), "--db", str(db_file), "--threshold", "0", str(wavs["a1"])]):
        assert main(argv) == 2, argv
        _one_line_error(capsys, str(db_file))


def test_readers_never_write(setup, db_file, capsys):
    """list / verify / identify open the DB read-only: they work while another process holds the
    write lock, leave the file byte-identical and leave no -journal/-wal/-shm behind."""
    exp, wavs, _ = setup
    before = _snapshot(db_file)
    holder = sqlite3.connect(db_file, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer is busy
    try:
        with SpeakerDB(db_file, exp, threshold=0.0, timeout=0.5) as db:
            assert [s.name for s in db.list()] == ["alice", "bob"]
            assert db.verify("alice", wavs["a1"]).accept
            assert db.identify(wavs["b1"]).decision == "bob"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert main(["list", "--db", str(db_file), "--json"]) == 0
    capsys.readouterr()
    assert _snapshot(db_file) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions: a read-only file cannot be made")
def test_read_only_file_and_folder_can_be_read(setup, db_file):
    exp, wavs, _ = setup
    os.chmod(db_file, 0o444)
    os.chmod(db_file.parent, 0o555)
    try:
        with SpeakerDB(db_file, exp, threshold=0.0) as db:
            assert [s.name for s in db.list()] == ["alice", "bob"]
            assert db.verify("alice", wavs["a1"]).accept
    finally:
        os.chmod(db_file.parent, 0o755)
        os.chmod(db_file, 0o644)


def _foreign_db(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    conn.execute("INSERT INTO notes(text) VALUES ('hello')")
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("kind", ["empty", "foreign"])
def test_read_only_commands_refuse_empty_and_foreign_files(setup, tmp_path, capsys, kind):
    exp, wavs, _ = setup
    db = tmp_path / f"{kind}.db"
    if kind == "empty":
        db.write_bytes(b"")
    else:
        _foreign_db(db)
    before = _snapshot(db)
    needle = "empty" if kind == "empty" else "another program"
    for argv in (["list", "--db", str(db)], ["enroll", "--db", str(db), "--list"], _verify(exp, db, wavs["a1"]),
                 ["identify", "--model", str(exp), "--db", str(db), "--threshold", "0", str(wavs["a1"])]):
        assert main(argv) == 2, argv
        _one_line_error(capsys, str(db), needle)
    assert _snapshot(db) == before  # no speakerid schema written into it
    if kind == "foreign":  # enrolment does not take over another program's DB either
        assert main(["enroll", "--model", str(exp), "--db", str(db), "--speaker", "x", str(wavs["a1"])]) == 2
        _one_line_error(capsys, "another program")
        assert _snapshot(db) == before
    else:  # an empty file is a new DB for enrolment
        assert main(["enroll", "--model", str(exp), "--db", str(db), "--speaker", "x", str(wavs["a1"])]) == 0


@pytest.mark.parametrize(
    "sql, needle",
    [
        ("UPDATE speakers SET emb_sum = x'0102' WHERE name = 'alice'", "embedding sum blob of 2 bytes"),
        ("UPDATE utterances SET embedding = x'0102' WHERE speaker = 'alice'", "embedding blob of 2 bytes"),
        ("UPDATE speakers SET num_utts = 0 WHERE name = 'alice'", "num_utts = 0"),
        ("UPDATE utterances SET embedding = zeroblob(64) WHERE speaker = 'alice'", "zero values"),
    ],
)
def test_bad_rows_name_file_and_speaker(setup, db_file, capsys, sql, needle):
    exp, wavs, _ = setup
    conn = sqlite3.connect(db_file)
    conn.execute(sql)
    conn.commit()
    conn.close()
    assert main(_verify(exp, db_file, wavs["a1"], "--json")) == 2
    out = capsys.readouterr()
    assert "nan" not in out.out.lower() and out.out == ""
    assert len(out.err.strip().splitlines()) == 1
    assert str(db_file) in out.err and "'alice'" in out.err and needle in out.err
    with pytest.raises(SpeakerDBError, match="'alice'"):
        SpeakerDB(db_file, exp, threshold=0.0).identify(wavs["b1"])


def test_verify_exit_status_is_0_1_or_2(setup, db_file, capsys):
    exp, wavs, _ = setup
    assert main(_verify(exp, db_file, wavs["a1"])) == 0
    assert main(_verify(exp, db_file, wavs["a1"], threshold="1.5")) == 1
    for argv in (
        _verify(exp, db_file, wavs["a1"], threshold="nan"),
        _verify(exp, db_file, wavs["a1"], "--p-target", "2"),
        _verify(exp, db_file, db_file.parent / "missing.wav"),
        _verify(exp, db_file.parent / "missing.db", wavs["a1"]),
    ):
        assert main(argv) == 2, argv
        _one_line_error(capsys)


def test_verify_exit_status_through_the_console_script(setup, db_file):
    """argparse errors and a corrupt DB exit 2 from the real command line, never 1."""
    exp, wavs, _ = setup
    _corrupt_speakers_page(db_file)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cases = [
        ["verify", "--db"],  # argparse: missing value
        ["verify", "--model", str(exp), "--db", str(db_file), "--speaker", "alice", "--threshold", "x", str(wavs["a1"])],
        _verify(exp, db_file, wavs["a1"]),
    ]
    for argv in cases:
        r = subprocess.run([sys.executable, "-m", "speakerid", *argv], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 2, (argv, r.stderr)
        assert "Traceback" not in r.stderr


def test_killed_writer_then_read_only_reader(setup, tmp_path):
    """Hand-made state of a writer killed inside its transaction: a hot rollback journal next to
    the DB. A reader rolls it back (the file is writable) and sees the DB as before."""
    exp, wavs, model = setup
    db = _enrolled(tmp_path, model, wavs)
    pid = os.fork()
    if pid == 0:  # the writer: start a transaction, spill it to the file, die
        try:
            conn = sqlite3.connect(db, isolation_level=None)
            conn.execute("PRAGMA cache_size = 1")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM utterances")
            for i in range(300):
                conn.execute("INSERT INTO utterances(speaker, path, embedding, added) VALUES ('alice', ?, ?, 0)",
                             (f"/x/{i}.wav", np.zeros(4000, np.float32).tobytes()))
        finally:
            os.kill(os.getpid(), 9)
    os.waitpid(pid, 0)
    assert Path(f"{db}-journal").exists()
    with SpeakerDB(db, exp, threshold=0.0) as reader:
        assert [(s.name, s.num_utts) for s in reader.list()] == [("alice", 1), ("bob", 1)]
        assert reader.verify("alice", wavs["a1"]).score == pytest.approx(1.0, abs=1e-5)
    assert not Path(f"{db}-journal").exists()


def test_reading_a_wal_mode_db_of_an_older_speakerid_leaves_nothing_behind(setup, db_file, capsys):
    exp, wavs, _ = setup
    conn = sqlite3.connect(db_file)
    assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"  # as speakerid <= 0.1 wrote them
    conn.close()
    before = _snapshot(db_file)
    assert main(["list", "--db", str(db_file)]) == 0
    assert main(_verify(exp, db_file, wavs["a1"])) == 0
    capsys.readouterr()
    assert _snapshot(db_file) == before
    # the next writer switches it to the rollback journal
    assert main(["remove", "--db", str(db_file), "bob"]) == 0
    assert sqlite3.connect(db_file).execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    # (the speaker index beside it is speakerid's own, kept in step by every writer)
    assert sorted(p.name for p in db_file.parent.iterdir()) == [db_file.name, f"{db_file.name}.index"]
