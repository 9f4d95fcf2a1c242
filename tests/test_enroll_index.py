"""The speaker index beside the speaker DB (speakerid/enroll/index.py, enroll_sync.py) and batch
enrolment: indexed identify == the exact path, the index in step with SQLite after enroll /
remove / external edits / SIGKILL at each write step, growth, and `enroll --batch`."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from speakerid.cli.main import main
from speakerid.enroll.speaker_db import SpeakerDB
from speakerid.enroll.model import SpeakerModel
from speakerid.enroll.records import SpeakerDBError
from speakerid.enroll.index import INDEX_SUFFIX, SpeakerIndex, cohort_key, index_path
from speakerid.scoring.calibrate import Calibration

DIM = 16
FP = "f" * 64


def unit_vectors(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _model(cohort: bool = True, calibrated: bool = False) -> SpeakerModel:
    """A model without an extractor: enough to enrol precomputed embeddings and identify them."""
    rng = np.random.default_rng(7)
    cal = Calibration(a=2.0, b=-1.0, prior=0.5, score="asnorm" if cohort else "cosine") if calibrated else None
    return SpeakerModel(None, FP, calibration=cal, source="test-model",
                        cohort=unit_vectors(rng.standard_normal((40, DIM))).astype(np.float32) if cohort else None)


def _speakers(n: int, seed: int = 0, per: int = 1) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    names = [f"spk{i:05d}" for i in range(n) for _ in range(per)]
    return names, rng.standard_normal((n * per, DIM)).astype(np.float32)


def _same(db: SpeakerDB, probe: np.ndarray, top_k: int = 10) -> list[tuple[str, float]]:
    fast = db.identify_embedding(probe, top_k=top_k)
    exact = db.identify_embedding(probe, top_k=top_k, exact=True)
    got = [(m.speaker, m.decision_score) for m in fast.candidates]
    want = [(m.speaker, m.decision_score) for m in exact.candidates]
    assert [g[0] for g in got] == [w[0] for w in want]
    np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], rtol=0, atol=1e-6)
    assert (fast.decision, fast.threshold) == (exact.decision, exact.threshold)
    return got


def _current(db_path: Path, model: SpeakerModel) -> SpeakerIndex:
    with SpeakerDB(db_path) as db:
        token = db.store.token(db.store.reader())
    index = SpeakerIndex.open(index_path(db_path))
    assert index is not None and index.is_current(token, cohort_key(model.cohort)), "index out of step"
    return index


@pytest.mark.parametrize("cohort, calibrated, per", [(True, True, 1), (True, False, 3), (False, False, 2)])
def test_indexed_identify_equals_exact(tmp_path, cohort, calibrated, per):
    model = _model(cohort, calibrated)
    names, emb = _speakers(300, per=per)
    with SpeakerDB(tmp_path / "s.db", model, threshold=None if calibrated else 0.3) as db:
        assert db.add_embeddings(names, emb) == {"speakers": 300, "embeddings": 300 * per}
        rng = np.random.default_rng(1)
        for i in (0, 17, 299):  # planted genuine probes
            probe = unit_vectors(emb[i * per : (i + 1) * per]).mean(axis=0) + 0.1 * rng.standard_normal(DIM)
            assert _same(db, probe)[0][0] == f"spk{i:05d}"
        _same(db, rng.standard_normal(DIM), top_k=300)  # every speaker ranked
    index = _current(tmp_path / "s.db", model)
    assert index.n == 300 and index.matrix.dtype == np.float32 and index.matrix.flags.c_contiguous


def test_index_follows_enroll_remove_and_growth(tmp_path):
    model = _model()
    names, emb = _speakers(50)
    db_path = tmp_path / "s.db"
    with SpeakerDB(db_path, model, threshold=0.0) as db:
        db.add_embeddings(names[:10], emb[:10])
        capacity = _current(db_path, model).header.capacity
        db.add_embeddings(names[10:20], emb[10:20])  # appended in place
        db.add_embeddings(["spk00003"], emb[40:41])  # an enrolled speaker: its row is rewritten in place
        db.remove("spk00005")
        db.remove("spk00019")
        index = _current(db_path, model)
        assert index.header.capacity == capacity and index.n == 18
        more, more_emb = _speakers(capacity, seed=3)
        db.add_embeddings([f"x{n}" for n in more], more_emb)  # past the capacity: a new file
        index = _current(db_path, model)
        assert index.n == 18 + capacity and index.header.capacity > capacity
        probe = emb[40] + emb[3]
        assert _same(db, probe)[0][0] == "spk00003"
        assert "spk00005" not in [m.speaker for m in db.identify_embedding(emb[5], top_k=50).candidates]
    # the rows of the index are the speakers of SQLite, with their unit mean vectors
    with SpeakerDB(db_path, model) as db:
        names_now = {s.name for s in db.list()}
        conn = db.store.reader()
        rowid_name = dict(conn.execute("SELECT rowid, name FROM speakers"))
        assert {rowid_name[r] for r in index.rowids.tolist()} == names_now
        for r, vec in zip(index.rowids[:5].tolist(), index.matrix[:5]):
            np.testing.assert_allclose(vec, db.speaker_embedding(rowid_name[r]), atol=1e-6)


def test_stale_missing_and_foreign_edits_are_rebuilt(tmp_path, caplog):
    model = _model()
    names, emb = _speakers(40)
    db_path = tmp_path / "s.db"
    with SpeakerDB(db_path, model, threshold=0.0) as db:
        db.add_embeddings(names, emb)
    # another program edits the rows: the triggers give the DB a new token
    conn = sqlite3.connect(db_path)
    conn.execute("DELETE FROM speakers WHERE name = 'spk00001'")
    conn.execute("DELETE FROM utterances WHERE speaker = 'spk00001'")
    conn.commit()
    conn.close()
    for damage in ("edited", "missing", "garbage", "another cohort"):
        if damage == "missing":
            index_path(db_path).unlink()
        elif damage == "garbage":
            index_path(db_path).write_bytes(b"SPKIDX01" + b"\x00" * 100)
        caplog.clear()
        other = _model() if damage != "another cohort" else SpeakerModel(None, FP, cohort=unit_vectors(emb[:30]), source="m2")
        with caplog.at_level(logging.WARNING), SpeakerDB(db_path, other, threshold=0.0) as db:
            assert "spk00001" not in [name for name, _ in _same(db, emb[1], top_k=39)]
        assert "rebuilt from the DB (39 speakers)" in caplog.text, damage
        _current(db_path, other)


def test_stale_index_that_cannot_be_written_is_rebuilt_in_memory(tmp_path, monkeypatch, caplog):
    import speakerid.enroll.sync as enroll_sync

    model = _model()
    names, emb = _speakers(20)
    db_path = tmp_path / "s.db"
    with SpeakerDB(db_path, model, threshold=0.0) as db:
        db.add_embeddings(names, emb)
    index_path(db_path).unlink()

    def read_only_folder(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(enroll_sync, "write_index", read_only_folder)
    with caplog.at_level(logging.WARNING), SpeakerDB(db_path, model, threshold=0.0) as db:
        _same(db, emb[2])
        _same(db, emb[3])  # the in-memory index is reused, not rebuilt again
    assert caplog.text.count("rebuilt from the DB") == 1 and "kept in memory" in caplog.text
    assert not index_path(db_path).exists()


def _writer_child(db_path: Path, stop_at: str, action: str) -> None:
    """A forked writer that SIGSTOPs itself after write step ``stop_at`` (then is killed)."""
    import speakerid.enroll.index as enroll_index

    def stop_here(name: str) -> None:
        if name == stop_at:
            os.kill(os.getpid(), signal.SIGSTOP)

    enroll_index.write_step = stop_here
    try:
        with SpeakerDB(db_path, _model()) as db:
            if action == "remove":
                db.remove("spk00004")
            elif action == "update":
                db.add_embeddings(["spk00002", "new"], np.ones((2, DIM), np.float32))
            else:  # more rows than the file has room for: a new index file
                names, emb = _speakers(5000, seed=9)
                db.add_embeddings([f"n{x}" for x in names], emb)
    finally:
        os._exit(0)


STEPS = {
    "remove": ["speakers", "token", "index-invalidated", "index-rows", "index-header"],
    "update": ["speakers", "utterances", "token", "index-invalidated", "index-rows", "index-header"],
    "grow": ["utterances", "token", "index-file"],
}


@pytest.mark.parametrize("action, stop_at", [(a, s) for a, steps in STEPS.items() for s in steps])
def test_sigkill_at_each_write_step_leaves_db_and_index_agreeing(tmp_path, action, stop_at):
    model = _model()
    names, emb = _speakers(30)
    db_path = tmp_path / "s.db"
    with SpeakerDB(db_path, model) as db:
        db.add_embeddings(names, emb)
        before = [(s.name, s.num_utts) for s in db.list()]
    pid = os.fork()
    if pid == 0:
        _writer_child(db_path, stop_at, action)
    try:
        while True:  # until the child stopped itself inside its transaction
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            assert state not in ("Z", "X"), "the child ended before it stopped itself"
            if state in ("T", "t"):
                break
            time.sleep(0.01)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    with SpeakerDB(db_path, model, threshold=0.0) as db:  # the killed writer's transaction is rolled back
        assert [(s.name, s.num_utts) for s in db.list()] == before
        for i in (2, 4, 7):
            _same(db, emb[i])
    assert _current(db_path, model).n == 30


def test_batch_enrolment_cli_is_one_transaction(tmp_path, capsys, monkeypatch):
    from _use_helpers import make_tiny_experiment, voice

    exp = make_tiny_experiment(tmp_path / "exp")
    wavs = [voice(tmp_path / "w" / f"{k}.wav", f0, seed=k) for k, f0 in enumerate((110, 150, 240, 300))]
    listing = tmp_path / "enrol list.txt"
    listing.write_text(f"# speaker file\nalice {wavs[0]}\n\nbob {wavs[1]}\nalice {wavs[2]}\ncarol {wavs[3]}\n")
    db = tmp_path / "b.db"
    assert main(["enroll", "--model", str(exp), "--db", str(db), "--batch", str(listing), "--json", "--no-progress"]) == 0
    assert '"speakers": 3, "embeddings": 4' in capsys.readouterr().out
    with SpeakerDB(db, exp, threshold=0.0) as d:
        assert [(s.name, s.num_utts) for s in d.list()] == [("alice", 2), ("bob", 1), ("carol", 1)]
        one = SpeakerDB(tmp_path / "one.db", exp)
        one.enroll("alice", [wavs[0], wavs[2]])  # the same embeddings as enrolling them one by one
        np.testing.assert_allclose(d.speaker_embedding("alice"), one.speaker_embedding("alice"), atol=1e-6)
        assert d.identify(wavs[3]).candidates[0].speaker == "carol"
        assert [m.speaker for m in d.identify(wavs[1], top_k=3).candidates] == \
            [m.speaker for m in d.identify(wavs[1], top_k=3, exact=True).candidates]
    # a bad file in the list: nothing of the batch is written, one line naming the file
    bad = tmp_path / "bad.txt"
    bad.write_text(f"dave {wavs[0]}\nerin {tmp_path / 'nope.wav'}\n")
    assert main(["enroll", "--model", str(exp), "--db", str(db), "--batch", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.wav" in err
    bad.write_text("dave\n")
    assert main(["enroll", "--model", str(exp), "--db", str(db), "--batch", str(bad)]) == 2
    assert f"{bad}:1" in capsys.readouterr().err
    assert [s.name for s in SpeakerDB(db).list()] == ["alice", "bob", "carol"]
    assert main(["identify", "--model", str(exp), "--db", str(db), "--threshold", "0", "--exact", str(wavs[3])]) == 0
    assert capsys.readouterr().out.splitlines()[1].split("\t")[1] == "carol"


def test_precomputed_embeddings_are_checked(tmp_path):
    with SpeakerDB(tmp_path / "s.db", _model()) as db:
        with pytest.raises(SpeakerDBError, match="row 1 has NaN"):
            db.add_embeddings(["a", "b"], np.array([[1.0] * DIM, [np.nan] * DIM]))
        with pytest.raises(SpeakerDBError, match="2 rows, 1 speaker names"):
            db.add_embeddings(["a"], np.ones((2, DIM)))
        with pytest.raises(SpeakerDBError, match="dimension 8"):
            db.add_embeddings(["a"], np.ones((1, 8)))
        with pytest.raises(SpeakerDBError, match="invalid speaker name"):
            db.add_embeddings(["a\x01b"], np.ones((1, DIM)))
    assert not (tmp_path / "s.db").exists() or SpeakerDB(tmp_path / "s.db").list() == []
    assert not Path(f"{tmp_path / 's.db'}{INDEX_SUFFIX}").exists()


def test_db_of_an_older_speakerid_gets_its_index_at_the_next_write(tmp_path, caplog):
    model = _model()
    names, emb = _speakers(25)
    db_path = tmp_path / "s.db"
    with SpeakerDB(db_path, model, threshold=0.0) as db:
        db.add_embeddings(names[:20], emb[:20])
    conn = sqlite3.connect(db_path)  # as written before speaker indexes: no token, no index file
    conn.execute("DELETE FROM meta WHERE key = 'index_token'")
    conn.commit()
    conn.close()
    index_path(db_path).unlink()
    with caplog.at_level(logging.WARNING), SpeakerDB(db_path, model, threshold=0.0) as db:
        _same(db, emb[3])
        assert "predates speaker indexes" in caplog.text and not index_path(db_path).exists()
        db.add_embeddings(names[20:], emb[20:])  # the next writer stores a token and builds the index
        assert _current(db_path, model).n == 25
        _same(db, emb[22])
