"""SpeakerDB (speakerid/enroll/speaker_db.py) and the enroll / verify / identify CLI on a tiny random model."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from _use_helpers import make_tiny_experiment, voice
from speakerid.enroll.speaker_db import ModelMismatchError, SpeakerDB
from speakerid.enroll.model import SpeakerModel
from speakerid.enroll.decision import bayes_threshold
from speakerid.enroll.records import SpeakerDBError, UnknownSpeakerError

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("enroll")
    exp = make_tiny_experiment(root / "exp", seed=0)
    other = make_tiny_experiment(root / "exp_other", seed=1)
    wavs = {
        "a1": voice(root / "wav" / "a1.wav", 110, seed=1),
        "a2": voice(root / "wav" / "a2.wav", 115, seed=2),
        "b1": voice(root / "wav" / "b1.wav", 240, seed=3, tilt=0.5),
        "c1": voice(root / "wav" / "c1.wav", 180, seed=4, tilt=2.0, seconds=1.2),
    }
    model = SpeakerModel.from_experiment(exp)
    return root, exp, other, wavs, model


def _db(tmp_path, model, **kw) -> SpeakerDB:
    return SpeakerDB(tmp_path / "speakers.db", model, **kw)


def test_enroll_verify_identify_list_remove(setup, tmp_path):
    _, _, _, wavs, model = setup
    with _db(tmp_path, model, threshold=0.5) as db:
        info = db.enroll("alice", [wavs["a1"]])
        assert info.num_utts == 1 and info.fingerprint == model.fingerprint
        db.enroll("bob", [wavs["b1"]])
        # the enrolment file itself scores cosine 1 against a one-file model
        res = db.verify("alice", wavs["a1"])
        assert res.score == pytest.approx(1.0, abs=1e-5) and res.accept and res.llr is None
        assert res.threshold == 0.5 and res.threshold_source == "given"
        top = db.identify(wavs["b1"], top_k=5)
        assert top.decision == "bob" and [m.speaker for m in top.candidates][0] == "bob" and len(top.candidates) == 2
        assert top.candidates[0].score >= top.candidates[1].score
        # enrolling again adds to the model: the mean of the unit-length embeddings
        assert db.enroll("alice", [wavs["a2"]]).num_utts == 2
        e = model.embed([wavs["a1"], wavs["a2"]]).astype(np.float64)
        mean = e.mean(0) / np.linalg.norm(e.mean(0))
        np.testing.assert_allclose(db.speaker_embedding("alice"), mean, atol=1e-6)
        test = model.embed([wavs["c1"]])[0]
        assert db.verify("alice", wavs["c1"]).score == pytest.approx(float(mean @ test), abs=1e-5)
        assert [s.name for s in db.list()] == ["alice", "bob"]
        assert db.info("alice").num_utts == 2
        db.remove("bob")
        assert [s.name for s in db.list()] == ["alice"]
        with pytest.raises(UnknownSpeakerError, match="no enrolled speaker 'bob'.*alice"):
            db.verify("bob", wavs["b1"])
        with pytest.raises(UnknownSpeakerError):
            db.remove("bob")
    rows = sqlite3.connect(tmp_path / "speakers.db").execute("SELECT COUNT(*) FROM utterances").fetchone()
    assert rows[0] == 2  # bob's stored embedding went with him


def test_errors(setup, tmp_path):
    root, _, other, wavs, model = setup
    with pytest.raises(SpeakerDBError, match="speaker DB not found"):
        _db(tmp_path, None).list()
    with pytest.raises(ValueError, match="run the train stage first"):
        SpeakerDB(tmp_path / "x.db", tmp_path / "no_exp")
    db = _db(tmp_path, model)
    with pytest.raises(SpeakerDBError, match="no audio files"):
        db.enroll("alice", [])
    with pytest.raises(ValueError, match="missing.wav"):
        db.enroll("alice", [wavs["a1"], root / "missing.wav"])
    assert not (tmp_path / "speakers.db").exists() or db.list() == []  # nothing half-enrolled
    db.enroll("alice", [wavs["a1"]])
    # neither calibration nor dev threshold in the experiment, none given
    with pytest.raises(SpeakerDBError, match="no decision threshold"):
        db.verify("alice", wavs["a2"])
    with pytest.raises(SpeakerDBError, match="invalid speaker name"):
        db.enroll("  ", [wavs["a1"]])
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SpeakerDBError, match="junk.db: not a usable speaker DB"):
        SpeakerDB(tmp_path / "junk.db").list()


def test_model_mismatch_is_an_error(setup, tmp_path):
    _, _, other, wavs, model = setup
    _db(tmp_path, model, threshold=0.0).enroll("alice", [wavs["a1"]])
    wrong = _db(tmp_path, other, threshold=0.0)
    with pytest.raises(ModelMismatchError, match="another model"):
        wrong.verify("alice", wavs["a1"])
    with pytest.raises(ModelMismatchError):
        wrong.identify(wavs["a1"])
    with pytest.raises(ModelMismatchError):  # a DB must not mix models either
        wrong.enroll("bob", [wavs["b1"]])
    assert [s.name for s in wrong.list()] == ["alice"]  # list/remove need no model


def test_threshold_from_dev_eval_and_calibration(setup, tmp_path):
    root, exp, _, wavs, _ = setup
    exp2 = tmp_path / "exp"
    exp2.mkdir()
    for name in ("config.yaml", "model.pt"):
        (exp2 / name).write_bytes((exp / name).read_bytes())
    (exp2 / "dev_eval.json").write_text(json.dumps({"eer": 0.1, "threshold": 0.99, "min_dcf_0.01": 0.5}))
    db = SpeakerDB(tmp_path / "s.db", exp2)
    db.enroll("alice", [wavs["a1"]])
    res = db.verify("alice", wavs["a2"])
    assert res.threshold == 0.99 and "dev_eval.json" in res.threshold_source
    assert res.accept == (res.score >= 0.99) and res.llr is None
    # a calibration wins over the dev threshold: LLR = a * cosine + b, Bayes threshold at P_target
    from speakerid.scoring.calibrate import Calibration

    Calibration(a=10.0, b=-5.0, prior=0.5).save(exp2 / "calibration.json")
    db = SpeakerDB(tmp_path / "s.db", exp2, p_target=0.05)
    res = db.verify("alice", wavs["a2"])
    assert res.llr == pytest.approx(10.0 * res.score - 5.0, abs=1e-6)
    assert res.threshold == pytest.approx(np.log(0.95 / 0.05)) == bayes_threshold(0.05)
    assert res.accept == (res.llr >= res.threshold)
    top = db.identify(wavs["a1"], top_k=1).candidates
    assert top[0].llr == pytest.approx(10.0 * top[0].score - 5.0, abs=1e-6)


def test_cli_enroll_verify_identify(setup, tmp_path, capsys):
    from speakerid.cli.main import main

    _, exp, _, wavs, _ = setup
    db = str(tmp_path / "cli.db")
    assert main(["enroll", "--model", str(exp), "--db", db, "--speaker", "alice", str(wavs["a1"]), str(wavs["a2"])]) == 0
    assert main(["enroll", "--model", str(exp), "--db", db, "--speaker", "bob", str(wavs["b1"])]) == 0
    capsys.readouterr()
    assert main(["verify", "--model", str(exp), "--db", db, "--speaker", "alice", "--threshold", "0.5", "--json", str(wavs["a1"])]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["speaker"] == "alice" and out["accept"] is True and out["threshold"] == 0.5
    # reject -> exit status 1
    assert main(["verify", "--model", str(exp), "--db", db, "--speaker", "alice", "--threshold", "1.01", str(wavs["a1"])]) == 1
    assert "reject" in capsys.readouterr().out
    assert main(["identify", "--model", str(exp), "--db", db, "--top-k", "2", "--threshold", "0.5", "--json", str(wavs["b1"])]) == 0
    top = json.loads(capsys.readouterr().out)
    assert top["decision"] == "bob" and top["candidates"][0]["speaker"] == "bob" and len(top["candidates"]) == 2
    assert main(["enroll", "--db", db, "--list"]) == 0
    listing = capsys.readouterr().out
    assert "alice" in listing and "bob" in listing
    assert main(["enroll", "--db", db, "--remove", "bob"]) == 0
    # user errors: one line on stderr, exit 2
    assert main(["verify", "--model", str(exp), "--db", db, "--speaker", "bob", "--threshold", "0", str(wavs["a1"])]) == 2
    err = capsys.readouterr().err
    assert "no enrolled speaker 'bob'" in err and len(err.strip().splitlines()) == 1
    assert main(["verify", "--model", str(exp), "--db", db, "--speaker", "alice", str(wavs["a1"])]) == 2
    assert "--threshold" in capsys.readouterr().err


def _speaker_state(db: Path, name: str) -> tuple[int, int] | None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        row = conn.execute("SELECT num_utts FROM speakers WHERE name = ?", (name,)).fetchone()
        n_rows = conn.execute("SELECT COUNT(*) FROM utterances WHERE speaker = ?", (name,)).fetchone()[0]
    finally:
        conn.close()
    return None if row is None else (row[0], n_rows)


def _stop_at(step: str | None) -> None:
    """In a forked writer: SIGSTOP itself right after write step ``step`` (inside its transaction,
    holding the DB's write lock); the steps are those of speakerid.enroll.index.write_step."""
    if step is None:
        return
    import speakerid.enroll.index as enroll_index

    def stop_here(name: str) -> None:
        if name == step:
            os.kill(os.getpid(), signal.SIGSTOP)

    enroll_index.write_step = stop_here


def _enroll_in_child(exp: str, db: str, speaker: str, files: list[str], stop_at: str | None) -> None:
    """Runs in a forked process (torch is already imported: no 5 s start-up per process)."""
    torch.set_num_threads(1)
    _stop_at(stop_at)
    SpeakerDB(db, exp).enroll(speaker, files)


def _fork(*args) -> mp.Process:
    proc = mp.get_context("fork").Process(target=_enroll_in_child, args=args)
    proc.start()
    return proc


def _wait_stopped(proc: mp.Process, timeout: float = 60.0) -> None:
    """Until the process is in state T (stopped by SIGSTOP)."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.is_alive(), "the child ended before it stopped itself"
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return
        assert time.monotonic() < deadline, "the child never stopped"
        time.sleep(0.01)


@pytest.mark.parametrize("stop_at", ["speakers", "utterances", "token", "index-invalidated", "index-rows", "index-header"])
def test_sigkill_during_enrolment_leaves_before_or_after(setup, tmp_path, stop_at):
    """SIGSTOP inside the enrolment transaction (after each write step: SQLite rows, the index
    token, the index file in place), then SIGKILL: the DB is intact, the speaker absent,
    read-only commands work at once, and identify through the index equals the exact path."""
    _, exp, _, wavs, model = setup
    db = tmp_path / "kill.db"
    SpeakerDB(db, model).enroll("alice", [wavs["a1"]])
    before = SpeakerDB(db).list()
    files = [str(wavs[k]) for k in ("a1", "a2", "b1", "c1")]
    proc = _fork(str(exp), str(db), "dave", files, stop_at)
    try:
        _wait_stopped(proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.join(timeout=30)
    assert proc.exitcode == -signal.SIGKILL
    # a read-only command first: it must cope with the killed writer's hot journal
    after = SpeakerDB(db)
    assert [(s.name, s.num_utts) for s in after.list()] == [(s.name, s.num_utts) for s in before]
    assert _speaker_state(db, "dave") is None, "half-enrolled speaker"
    _index_agrees(db, model, wavs["b1"])
    # and the DB is usable afterwards
    SpeakerDB(db, model).enroll("dave", files[:2])
    assert _speaker_state(db, "dave") == (2, 2)
    _index_agrees(db, model, wavs["b1"])


def _index_agrees(db: Path, model, wav: Path) -> None:
    """identify through the index (rebuilt when stale) == the exact path, and the index is current."""
    from speakerid.enroll.index import SpeakerIndex, cohort_key, index_path

    with SpeakerDB(db, model, threshold=0.0) as reader:
        fast, exact = reader.identify(wav, top_k=10), reader.identify(wav, top_k=10, exact=True)
        token = reader.store.token(reader.store.reader())
    assert [(m.speaker, m.score) for m in fast.candidates] == [(m.speaker, m.score) for m in exact.candidates]
    index = SpeakerIndex.open(index_path(db))
    assert index is not None and index.is_current(token, cohort_key(model.cohort))
    assert index.n == len(SpeakerDB(db).list())


def test_two_processes_enrolling_at_once(setup, tmp_path):
    _, exp, _, wavs, _ = setup
    db = tmp_path / "concurrent.db"
    first = _fork(str(exp), str(db), "alice", [str(wavs["a1"]), str(wavs["a2"])], "utterances")
    second = None
    try:
        _wait_stopped(first)  # inside its transaction, holding the write lock
        second = _fork(str(exp), str(db), "bob", [str(wavs["b1"]), str(wavs["c1"])], None)
        time.sleep(2.0)
        assert second.is_alive(), "the second writer did not wait for the first one's lock"
        os.kill(first.pid, signal.SIGCONT)
    finally:
        for p in (first, second):
            if p is not None:
                p.join(timeout=120)
    assert [first.exitcode, second.exitcode] == [0, 0]
    assert _speaker_state(db, "alice") == (2, 2) and _speaker_state(db, "bob") == (2, 2)
