"""The scoring seam: every path that scores reads the backend registry, so a new backend is one
class and one registry entry (docs/ARCHITECTURE.md, "Where to add")."""
from __future__ import annotations

import numpy as np
import pytest

from speakerid.cli.main import main
from speakerid.enroll.model import SpeakerModel
from speakerid.enroll.speaker_db import SpeakerDB
from speakerid.enroll.records import SpeakerDBError
from speakerid.scoring import backend as B
from speakerid.scoring.calibrate import Calibration
from speakerid.scoring.embeddings import save_embeddings
from speakerid.scoring.norm import normalise_scores
from speakerid.scoring.plda import PLDA
from speakerid.scoring.trial_scores import EmbeddingTable, score_trials

DIM = 16


class NegSquaredDistance(B.ScoringBackend):
    """A backend only this test knows: minus the squared distance of the unit vectors (= 2 cos - 2)."""

    name = "negdist"

    @classmethod
    def create(cls, res):
        return cls()

    def score_pairs(self, enroll, test, e_index, t_index):
        d = enroll[e_index].astype(np.float64) - test[t_index]
        return -np.einsum("ij,ij->i", d, d)


def _speakers(rng, n_spk=6, per=4):
    centres = rng.standard_normal((n_spk, DIM))
    emb = np.concatenate([c + 0.3 * rng.standard_normal((per, DIM)) for c in centres])
    names = [f"s{i}" for i in range(n_spk) for _ in range(per)]
    return centres, emb.astype(np.float32), names


def _trials(tmp_path, rng):
    centres, emb, names = _speakers(rng)
    ids = [f"{n}/u{i}" for i, n in enumerate(names)]
    save_embeddings(tmp_path / "emb.npz", ids, emb)
    lines = [f"{a} {b} {'target' if a.split('/')[0] == b.split('/')[0] else 'nontarget'}"
             for i, a in enumerate(ids) for b in ids[i + 1:]]
    (tmp_path / "trials").write_text("\n".join(lines) + "\n")
    return ids, emb


def test_a_backend_added_to_the_registry_only_reaches_every_scoring_path(tmp_path, monkeypatch):
    monkeypatch.setitem(B.BACKENDS, "negdist", NegSquaredDistance)
    rng = np.random.default_rng(0)
    ids, emb = _trials(tmp_path, rng)
    # 1. trial-list scoring: the CLI's choices come from the registry
    assert main(["score", "--trials", str(tmp_path / "trials"), "--embeddings", str(tmp_path / "emb.npz"),
                 "--scoring", "negdist", "--output", str(tmp_path / "s.txt")]) == 0
    rows = [line.split() for line in (tmp_path / "s.txt").read_text().splitlines()]
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    row = {k: v for k, v in zip(ids, unit)}
    for e, t, s, _ in rows[:50]:
        assert float(s) == pytest.approx(2 * float(row[e] @ row[t]) - 2, abs=1e-5)
    # 2. calibration fitted on (and naming) that backend's scores
    assert main(["calibrate", "--scores", str(tmp_path / "s.txt"), "--output", str(tmp_path / "cal.json"),
                 "--score-kind", "negdist"]) == 0
    cal = Calibration.load(tmp_path / "cal.json")
    assert cal.score == "negdist"
    # 3. the speaker DB's decision reads the backend's name from the model's calibration
    model = SpeakerModel(None, "fp", calibration=cal, source="m")
    with SpeakerDB(tmp_path / "db.sqlite", model) as db:
        db.add_embeddings([i.split("/")[0] for i in ids], emb)
        rule = db.decision()
        assert rule.kind == "negdist" and rule.calibration is cal
        r = db.verify_embedding("s0", emb[0])
        assert r.score_kind == "negdist" and r.backend_score == pytest.approx(2 * r.score - 2, abs=1e-5)
        assert r.llr == pytest.approx(cal.a * r.backend_score + cal.b, abs=1e-6)
        top = db.identify_embedding(emb[5], top_k=3)  # not an index-ranked backend: scored exactly
        assert top.score_kind == "negdist" and top.candidates[0].speaker == "s1"


def test_asnorm_backend_is_the_normalisation_of_the_cosine(tmp_path):
    rng = np.random.default_rng(1)
    e, t = B.unit_vectors(rng.standard_normal((5, DIM))), B.unit_vectors(rng.standard_normal((7, DIM)))
    cohort = B.unit_vectors(rng.standard_normal((40, DIM))).astype(np.float32)
    ei, ti = rng.integers(0, 5, 30), rng.integers(0, 7, 30)
    cos = B.build_backend("cosine", B.BackendResources()).score_pairs(e, t, ei, ti)
    np.testing.assert_allclose(cos, np.einsum("ij,ij->i", e[ei], t[ti]), atol=1e-12)
    res = B.BackendResources(cohort=cohort, top_k=10)
    got = B.build_backend("asnorm", res).score_pairs(e, t, ei, ti)
    want = normalise_scores(cos, e.astype(np.float32), t.astype(np.float32), ei, ti, cohort, "asnorm", 10)
    np.testing.assert_allclose(got, want, atol=1e-5)
    got = B.build_backend("csls", res).score_pairs(e, t, ei, ti)
    np.testing.assert_allclose(got, normalise_scores(cos, e.astype(np.float32), t.astype(np.float32), ei, ti, cohort,
                                                     "csls", 10), atol=1e-5)
    assert B.BACKENDS["csls"].uses_cohort and B.build_backend("csls", res).top_k == 10
    # .score: row-paired embeddings of any length, the same scores as score_pairs
    paired = B.build_backend("csls", res).score(3 * e[ei], t[ti])
    np.testing.assert_allclose(paired, got, atol=1e-5)
    with pytest.raises(ValueError, match="must pair row by row"):
        B.build_backend("cosine", res).score(e, t)
    for name in ("snorm", "csls"):
        with pytest.raises(B.BackendError, match="needs a cohort"):
            B.build_backend(name, B.BackendResources())
    with pytest.raises(B.BackendError, match="unknown scoring backend 'nope'"):
        B.build_backend("nope", B.BackendResources())


def _plda(rng, tmp_path):
    centres, emb, names = _speakers(rng, n_spk=40, per=5)
    labels = np.array([int(n[1:]) for n in names])
    plda = PLDA.fit(B.unit_vectors(emb.astype(np.float64)), labels)
    plda.save(tmp_path / "plda.npz")
    return plda


def test_plda_backend_in_trial_scoring_and_the_speaker_db(tmp_path):
    rng = np.random.default_rng(2)
    plda = _plda(rng, tmp_path)
    ids, emb = _trials(tmp_path, rng)
    table = EmbeddingTable(np.array(ids), emb)
    e_ids, t_ids = np.array(ids[:6]), np.array(ids[6:12])
    got = score_trials(e_ids, t_ids, table, scoring="plda", plda=tmp_path / "plda.npz")
    unit = B.unit_vectors(emb.astype(np.float64))
    want = np.diag(plda.score_matrix(unit[:6], unit[6:12]))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(B.BackendError, match="plda.npz"):
        score_trials(e_ids, t_ids, table, scoring="plda")
    # the DB: a model dir with plda.npz scores by PLDA when asked (threshold given: no calibration for it)
    model = SpeakerModel(None, "fp", source=str(tmp_path), exp_dir=tmp_path)
    with SpeakerDB(tmp_path / "db.sqlite", model, scoring="plda", threshold=0.0) as db:
        db.add_embeddings([i.split("/")[0] for i in ids], emb)
        r = db.verify_embedding("s1", emb[5])
        assert r.score_kind == "plda" and r.accept
        assert r.backend_score == pytest.approx(float(plda.score_matrix(B.unit_vectors(unit[4:8].mean(0, keepdims=True)),
                                                                        unit[5:6])[0, 0]), abs=1e-4)
        assert db.identify_embedding(emb[9], top_k=2).decision == "s2"
    with SpeakerDB(tmp_path / "db.sqlite", SpeakerModel(None, "fp", source="bare"), scoring="plda", threshold=0.0) as db:
        with pytest.raises(SpeakerDBError, match="plda.npz"):
            db.verify_embedding("s1", emb[5])
