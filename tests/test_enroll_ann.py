"""Approximate identify (speakerid/enroll/ann.py: faiss-scanned binary codes beside the speaker DB)
against the exact path: the same top-1 on clustered data, the codes caught up after enrol /
remove / re-enrolment, rebuilt when too stale or not whole, kill -9 states (a graph file older
than the index, an index rebuilt under a current graph), and the modes without faiss."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from speakerid.cli.main import main
from speakerid.enroll import ann as ann_mod
from speakerid.enroll.ann import AnnIndex, ann_path
from speakerid.enroll.index import SpeakerIndex, ProbeStats, index_path
from speakerid.enroll.model import SpeakerModel
from speakerid.enroll.records import SpeakerDBError
from speakerid.enroll.speaker_db import SpeakerDB
from speakerid.scoring.calibrate import Calibration

HAVE_FAISS = ann_mod.faiss_module() is not None
needs_faiss = pytest.mark.skipif(not HAVE_FAISS, reason="faiss is not installed (pip install faiss-cpu)")

DIM = 32
FP = "a" * 64


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _model(cohort: bool = True) -> SpeakerModel:
    rng = np.random.default_rng(5)
    cal = Calibration(a=2.0, b=-1.0, prior=0.5, score="asnorm") if cohort else None
    return SpeakerModel(None, FP, calibration=cal, dev_threshold=None if cohort else 0.6, source="test-model",
                        cohort=_unit(rng.standard_normal((60, DIM))).astype(np.float32) if cohort else None)


def _clustered(n: int, clusters: int = 40, spread: float = 0.35, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Speakers in ``clusters`` groups (neighbours close to each other: the hard case for a graph)."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((clusters, DIM)))
    emb = _unit(centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, DIM)) / np.sqrt(DIM) * 3)
    return [f"spk{i:05d}" for i in range(n)], emb.astype(np.float32)


def _probe(emb: np.ndarray, i: int, rng, noise: float = 0.15) -> np.ndarray:
    return _unit(emb[i] + noise * rng.standard_normal(DIM))


def _db(path, model, search="ann", **kw) -> SpeakerDB:
    return SpeakerDB(path, model, search=search, ann_min_speakers=kw.pop("ann_min_speakers", 1), **kw)


def _agree(ann_db: SpeakerDB, exact_db: SpeakerDB, probe: np.ndarray, top_k: int = 5) -> tuple[bool, float]:
    """Whether ANN and exact (``exact_db``: search="exact") give the same top-1 (and decision), and the overlap of their top-k sets."""
    a = ann_db.identify_embedding(probe, top_k=top_k)
    e = exact_db.identify_embedding(probe, top_k=top_k)  # the index's matrix product (== exact=True: test_enroll_index)
    assert ann_db.searcher.last == "ann"
    same = a.candidates[0].speaker == e.candidates[0].speaker and a.decision == e.decision
    if same:  # an answer found is scored exactly as on the exact path
        assert a.candidates[0].decision_score == pytest.approx(e.candidates[0].decision_score, abs=1e-6)
    overlap = len({m.speaker for m in a.candidates} & {m.speaker for m in e.candidates}) / top_k
    return same, overlap


def _graph_token(db_path) -> str:
    ann, why = AnnIndex.load(ann_path(db_path))
    assert ann is not None, why
    return ann.token


def _index_token(db_path) -> str:
    return SpeakerIndex.open(index_path(db_path)).header.token


def test_rank_rows_equals_rank(tmp_path):
    names, emb = _clustered(500)
    with SpeakerDB(tmp_path / "s.db", _model()) as db:
        db.add_embeddings(names, emb)
    index = SpeakerIndex.open(index_path(tmp_path / "s.db"))
    t = _unit(np.random.default_rng(1).standard_normal(DIM)).astype(np.float32)
    for stats in (None, ProbeStats("asnorm", 0.1, 0.05), ProbeStats("csls", 0.1, 0.05)):
        np.testing.assert_array_equal(index.rank_rows(t, np.arange(index.n)[::-1], 20, stats), index.rank(t, 20, stats))


@needs_faiss
@pytest.mark.parametrize("cohort", [True, False])
def test_ann_identify_agrees_with_exact(tmp_path, cohort):
    model = _model(cohort)
    names, emb = _clustered(3000)
    rng = np.random.default_rng(2)
    with _db(tmp_path / "s.db", model) as db, SpeakerDB(tmp_path / "s.db", model, search="exact") as ex:
        db.add_embeddings(names, emb)
        results = [_agree(db, ex, _probe(emb, i, rng)) for i in rng.choice(3000, 60, replace=False)]
        results += [_agree(db, ex, _unit(rng.standard_normal(DIM))) for _ in range(20)]  # impostors
        assert ex.searcher.last == "exact"
    assert all(same for same, _ in results), [i for i, (s, _) in enumerate(results) if not s]
    assert np.mean([o for _, o in results]) >= 0.95
    assert _graph_token(tmp_path / "s.db") == _index_token(tmp_path / "s.db")


@needs_faiss
def test_graph_caught_up_after_enroll_remove_reenrol(tmp_path):
    model = _model()
    names, emb = _clustered(2000)
    rng = np.random.default_rng(3)
    path = tmp_path / "s.db"
    with _db(path, model) as db, SpeakerDB(path, model, search="exact") as ex:
        db.add_embeddings(names, emb)
        assert _agree(db, ex, _probe(emb, 7, rng))[0]
        built = db.searcher.ann.codes.ntotal
        # a new speaker, a removed one, a re-enrolled one (its mean moves): the codes are stale
        new = _unit(rng.standard_normal(DIM)).astype(np.float32)
        db.add_embeddings(["newcomer"], new[None])
        db.remove("spk00007")
        other = _unit(rng.standard_normal(DIM)).astype(np.float32)
        db.add_embeddings(["spk00011"], other[None])
        assert _graph_token(path) != _index_token(path)
        for probe in (new, emb[7], (emb[11] + other) / 2, _probe(emb, 500, rng)):
            assert _agree(db, ex, probe)[0]
        assert db.identify_embedding(new).candidates[0].speaker == "newcomer"
        assert "spk00007" not in {m.speaker for m in db.identify_embedding(emb[7], top_k=20).candidates}
        ann = db.searcher.ann
        assert ann.codes.ntotal == built + 2 and int((ann.labels < 0).sum()) == 2  # appended, tombstoned
    assert _graph_token(path) == _index_token(path)
    with _db(path, model) as again:  # a new process reads the caught-up file: nothing rebuilt
        again.identify_embedding(new)
        assert again.searcher.ann.codes.ntotal == built + 2


@needs_faiss
def test_graph_rebuilt_when_too_stale(tmp_path, caplog):
    model = _model()
    names, emb = _clustered(200)
    path = tmp_path / "s.db"
    with _db(path, model) as db, SpeakerDB(path, model, search="exact") as ex:
        db.add_embeddings(names, emb)
        db.identify_embedding(emb[0])
        for name in names[:60]:  # more than REBUILD_FRACTION of the speakers
            db.remove(name)
        with caplog.at_level(logging.WARNING, logger="speakerid.enroll.ann"):
            assert _agree(db, ex, emb[100])[0]
        assert "too many changes since it was built" in caplog.text
        assert db.searcher.ann.codes.ntotal == 140 and not (db.searcher.ann.labels < 0).any()


def _corrupt(path, how: str) -> None:
    raw = bytearray(path.read_bytes())
    if how == "truncated":
        raw = raw[: len(raw) // 2]
    elif how == "flipped":
        raw[len(raw) // 3] ^= 0xFF
    elif how == "empty":
        raw = bytearray()
    elif how == "garbage":
        raw = bytearray(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif how == "trailer":
        raw[-30] ^= 0x01
    path.write_bytes(bytes(raw))


@needs_faiss
@pytest.mark.parametrize("how", ["truncated", "flipped", "empty", "garbage", "trailer"])
def test_corrupt_graph_file_is_rebuilt(tmp_path, caplog, how):
    model = _model()
    names, emb = _clustered(600)
    path = tmp_path / "s.db"
    with _db(path, model) as db:
        db.add_embeddings(names, emb)
        db.identify_embedding(emb[1])
    _corrupt(ann_path(path), how)
    with _db(path, model) as db, SpeakerDB(path, model, search="exact") as ex, \
            caplog.at_level(logging.WARNING, logger="speakerid.enroll.ann"):
        assert _agree(db, ex, _probe(emb, 3, np.random.default_rng(4)))[0]
    assert f"{ann_path(path)}: ANN index not a whole ANN index file" in caplog.text
    assert _graph_token(path) == _index_token(path)


@needs_faiss
def test_kill9_states(tmp_path):
    """A graph file older than the index (a reader killed before writing it back, or a copy from a
    backup), and an index rebuilt from SQLite under a current graph (rows in another order)."""
    model = _model()
    names, emb = _clustered(1500)
    path = tmp_path / "s.db"
    rng = np.random.default_rng(6)
    with _db(path, model) as db:
        db.add_embeddings(names, emb)
        db.identify_embedding(emb[0])
    old = tmp_path / "old.codes"
    shutil.copy(ann_path(path), old)
    with _db(path, model) as db:
        db.remove("spk00003")
        db.add_embeddings(["late"], emb[3:4])  # same vector, another speaker: a new row
        db.identify_embedding(emb[5])
    shutil.copy(old, ann_path(path))  # the codes file goes back to the older state
    with _db(path, model) as db, SpeakerDB(path, model, search="exact") as ex:
        for i in (3, 5, 900):
            assert _agree(db, ex, _probe(emb, i, rng, 0.05))[0]
        assert db.identify_embedding(emb[3]).candidates[0].speaker == "late"
    assert _graph_token(path) == _index_token(path)
    # the speaker index removed (rebuilt from SQLite with the same token; rows may be reordered)
    index_path(path).unlink()
    with _db(path, model) as db, SpeakerDB(path, model, search="exact") as ex:
        for i in (3, 5, 900, 1499):
            assert _agree(db, ex, _probe(emb, i, rng, 0.05))[0]


@needs_faiss
def test_auto_uses_the_graph_from_the_threshold(tmp_path):
    model = _model()
    names, emb = _clustered(300)
    path = tmp_path / "s.db"
    with SpeakerDB(path, model) as db:
        db.add_embeddings(names, emb)
        db.identify_embedding(emb[0])
        assert db.searcher.mode == "auto" and db.searcher.last == "exact" and not ann_path(path).exists()
    with _db(path, model, search="auto", ann_min_speakers=300) as db:
        assert db.identify_embedding(emb[0]).candidates[0].speaker == "spk00000"
        assert db.searcher.last == "ann" and ann_path(path).exists()
    with SpeakerDB(path, model, search="ann", score_rule="max") as db:  # rules the index cannot rank: exact
        assert db.identify_embedding(emb[0]).candidates[0].speaker == "spk00000"
        assert db.searcher.last == "exact"


def test_without_faiss(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ann_mod, "faiss_module", lambda: None)
    model = _model()
    names, emb = _clustered(200)
    path = tmp_path / "s.db"
    with SpeakerDB(path, model, search="auto", ann_min_speakers=1) as db:  # auto: silently exact
        db.add_embeddings(names, emb)
        assert db.identify_embedding(emb[9]).candidates[0].speaker == "spk00009"
        assert db.searcher.last == "exact"
    with pytest.raises(SpeakerDBError, match=r"pip install faiss-cpu"):
        SpeakerDB(path, model, search="ann")
    with pytest.raises(SpeakerDBError, match="unknown search"):
        SpeakerDB(path, model, search="hnsw")
    wav = tmp_path / "t.wav"
    wav.write_bytes(b"")
    assert main(["identify", "--db", str(path), "--search", "ann", str(wav)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install faiss-cpu" in err
