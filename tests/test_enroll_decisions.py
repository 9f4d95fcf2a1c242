"""Decisions a person can trust (issue 9 item 4): calibration reachability, AS-norm cohort,
score rules over every enrolment embedding, open-set identify, verify --trials, list/remove
and --json, the short-speech warning, the packaged-model default."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from _use_helpers import make_tiny_experiment, voice
from speakerid.cli.main import main
from speakerid.enroll.speaker_db import SpeakerDB
from speakerid.enroll.model import SpeakerModel
from speakerid.enroll.records import SpeakerDBError
from speakerid.enroll.rules import score_pairs
from speakerid.scoring.backend import ASNormBackend
from speakerid.experiment import PACKAGED_DIR, resolve_model_source
from speakerid.scoring.calibrate import Calibration, decision_problem
from speakerid.scoring.embeddings import save_embeddings
from speakerid.scoring.norm import normalise_scores


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("enroll_decisions")
    exp = make_tiny_experiment(root / "exp", seed=0)
    wavs = {
        "a1": voice(root / "wav" / "a1.wav", 110, seed=1),
        "a2": voice(root / "wav" / "a2.wav", 115, seed=2, tilt=1.6),
        "a3": voice(root / "wav" / "a3.wav", 105, seed=5, tilt=0.7),
        "b1": voice(root / "wav" / "b1.wav", 240, seed=3, tilt=0.5),
        "b2": voice(root / "wav" / "b2.wav", 230, seed=6, tilt=0.6),
        "c1": voice(root / "wav" / "c1.wav", 180, seed=4, tilt=2.0, seconds=1.2),
    }
    cohort_wavs = [voice(root / "cohort" / f"k{i}.wav", 90 + 17 * i, seed=100 + i, tilt=0.5 + 0.1 * i) for i in range(8)]
    model = SpeakerModel.from_experiment(exp)
    cohort_emb = model.embed(cohort_wavs)
    return root, exp, wavs, model, cohort_emb


def _copy_exp(exp: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "model.pt"):
        shutil.copy(exp / name, dst / name)
    return dst


def _enrolled(tmp_path: Path, model, wavs) -> Path:
    db = tmp_path / "s.db"
    with SpeakerDB(db, model) as d:
        d.enroll("alice", [wavs["a1"], wavs["a2"], wavs["a3"]])
        d.enroll("bob", [wavs["b1"]])
    return db


# --------------------------------------------------------------------------- calibration
def test_unreachable_and_degenerate_calibration_in_calibrate(tmp_path, capsys, caplog):
    """calibrate: a fit whose LLR over cosine [-1, 1] never reaches -logit(0.01) is saved with a
    warning naming the file and the reachable priors; a negative slope is an error, nothing saved."""
    rng = np.random.default_rng(0)
    tar, non = rng.normal(0.2, 0.2, 300), rng.normal(0.1, 0.2, 300)
    scores = tmp_path / "dev.txt"
    scores.write_text("".join(f"e{i} t{i} {s:.6f} {lab}\n" for i, (s, lab) in
                              enumerate([(s, "target") for s in tar] + [(s, "nontarget") for s in non])))
    out = tmp_path / "cal.json"
    with caplog.at_level(logging.WARNING):
        assert main(["calibrate", "--scores", str(scores), "--output", str(out)]) == 0
    warned = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert warned and str(out) in warned[0] and "P_target 0.01" in warned[0] and "--p-target in [" in warned[0]
    d = json.loads(out.read_text())
    assert d["score"] == "cosine" and d["a"] > 0
    # inverted labels: slope < 0 -> error naming the score file; nothing written
    inverted = tmp_path / "inv.txt"
    inverted.write_text(scores.read_text().replace("nontarget", "X").replace("target", "nontarget").replace("X", "target"))
    capsys.readouterr()
    assert main(["calibrate", "--scores", str(inverted), "--output", str(tmp_path / "inv.json")]) == 2
    err = capsys.readouterr().err
    assert "degenerate" in err and str(inverted) in err and not (tmp_path / "inv.json").exists()
    # the score kind is stored and read back
    assert main(["calibrate", "--scores", str(scores), "--output", str(out), "--score-kind", "asnorm"]) == 0
    assert Calibration.load(out).score == "asnorm"


def test_old_calibration_files_mean_cosine(tmp_path):
    old = {"format": "speakerid-calibration", "version": 1, "kind": "linear", "a": 10.0, "b": -5.0, "prior": 0.5}
    (tmp_path / "c.json").write_text(json.dumps(old))
    cal = Calibration.load(tmp_path / "c.json")
    assert cal.score == "cosine" and cal.score_min is None
    assert decision_problem(cal, 0.01, "c.json") is None  # 10 - 5 = 5 > 4.595: reachable


def test_verify_says_when_the_bayes_threshold_is_unreachable(setup, tmp_path, capsys):
    """The case of the issue: llr = 9.09 cos - 6.39 can never reach -logit(0.01) = 4.6."""
    root, exp, wavs, model, _ = setup
    exp2 = _copy_exp(exp, tmp_path / "exp")
    Calibration(9.09, -6.39, 0.5).save(exp2 / "calibration.json")
    db = _enrolled(tmp_path, model, wavs)
    argv = ["verify", "--model", str(exp2), "--db", str(db), "--speaker", "alice", str(wavs["a1"])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert str(exp2 / "calibration.json") in err and "unreachable" in err and "--p-target" in err and "--threshold" in err
    assert main(argv[:-1] + ["--p-target", "0.5", str(wavs["a1"])]) == 0  # reachable prior: decides
    assert main(argv[:-1] + ["--threshold", "0", str(wavs["a1"])]) == 0
    assert main(["identify", "--model", str(exp2), "--db", str(db), str(wavs["a1"])]) == 2
    assert "unreachable" in capsys.readouterr().err
    Calibration(-3.0, 1.0, 0.5).save(exp2 / "calibration.json")
    assert main(argv) == 2
    assert "degenerate" in capsys.readouterr().err


# --------------------------------------------------------------------------- AS-norm cohort
def test_cohort_asnorm_scores_and_calibration_kind(setup, tmp_path):
    root, exp, wavs, model, cohort = setup
    exp2 = _copy_exp(exp, tmp_path / "exp")
    save_embeddings(exp2 / "cohort.npz", [f"k{i}" for i in range(len(cohort))], cohort)
    db = _enrolled(tmp_path, model, wavs)
    with SpeakerDB(db, exp2, threshold=0.0) as d:
        assert d.model.cohort is not None and d.model.cohort.shape == cohort.shape
        r = d.verify("alice", wavs["c1"])
        assert r.score_kind == "asnorm" and r.decision_score == r.asnorm  # uncalibrated with a cohort: AS-norm decides
        # by hand with the scoring module: the unit mean of alice's three embeddings vs c1
        e = model.embed([wavs["a1"], wavs["a2"], wavs["a3"]]).astype(np.float64)
        m = e.mean(0) / np.linalg.norm(e.mean(0))
        t = model.embed([wavs["c1"]])
        cos = float(m @ t[0])
        ref = normalise_scores(np.array([cos]), m[None].astype(np.float32), t, np.array([0]), np.array([0]),
                               d.model.cohort, "asnorm", 300)[0]
        assert r.score == pytest.approx(cos, abs=1e-5) and r.asnorm == pytest.approx(ref, abs=1e-4)
    # a calibration fitted on cosine applies to the cosine, even with a cohort
    Calibration(10.0, -5.0, 0.5).save(exp2 / "calibration.json")
    with SpeakerDB(db, exp2, p_target=0.5) as d:
        r = d.verify("alice", wavs["c1"])
        assert r.score_kind == "cosine" and r.llr == pytest.approx(10 * r.score - 5, abs=1e-5)
    Calibration(2.0, -1.0, 0.5, score="asnorm", score_min=-2.0, score_max=6.0).save(exp2 / "calibration.json")
    with SpeakerDB(db, exp2, p_target=0.5) as d:
        r = d.verify("alice", wavs["c1"])
        assert r.score_kind == "asnorm" and r.llr == pytest.approx(2 * r.asnorm - 1, abs=1e-5)
        assert r.accept == (r.llr >= 0)
    (exp2 / "cohort.npz").unlink()  # an AS-norm calibration without its cohort: say so
    with pytest.raises(SpeakerDBError, match="calibration.json: fitted on asnorm scores, but .*cohort.npz"):
        SpeakerDB(db, exp2).verify("alice", wavs["c1"])


def test_cohort_names_its_top_k_and_csls_decides_verify_and_identify(setup, tmp_path):
    """A cohort.npz with ``top_k`` and a calibration fitted on CSLS (the default model's set-up): verify's
    score is the cosine less half the two sides' top-k cohort means, and identify ranked through the speaker
    index gives the exact path's answer and scores."""
    from speakerid.experiment import read_cohort_top_k, write_cohort

    root, exp, wavs, model, cohort = setup
    exp2 = _copy_exp(exp, tmp_path / "exp")
    write_cohort(exp2, [f"k{i}" for i in range(len(cohort))], cohort, top_k=3)
    assert read_cohort_top_k(exp2) == 3
    Calibration(4.0, -1.0, 0.5, score="csls", score_min=-1.0, score_max=1.0).save(exp2 / "calibration.json")
    db = _enrolled(tmp_path, model, wavs)
    with SpeakerDB(db, exp2, p_target=0.5) as d:
        assert d.model.cohort_top_k == 3
        r = d.verify("alice", wavs["c1"])
        e = model.embed([wavs["a1"], wavs["a2"], wavs["a3"]]).astype(np.float64)
        m = (e.mean(0) / np.linalg.norm(e.mean(0))).astype(np.float32)
        t = model.embed([wavs["c1"]])[0]
        top = [np.sort(d.model.cohort @ x)[-3:].mean() for x in (m, t)]
        want = float(m @ t) - 0.5 * (top[0] + top[1])
        assert r.score_kind == "csls" and r.backend_score == pytest.approx(want, abs=1e-4)
        assert r.llr == pytest.approx(4 * want - 1, abs=2e-4) and r.asnorm is None
        fast, exact = d.identify(wavs["a2"], top_k=2), d.identify(wavs["a2"], top_k=2, exact=True)
        assert [c.speaker for c in fast.candidates] == [c.speaker for c in exact.candidates] == ["alice", "bob"]
        assert [c.llr for c in fast.candidates] == pytest.approx([c.llr for c in exact.candidates], abs=1e-9)
        assert fast.score_kind == "csls"
    # the DB's speaker index holds the statistics at the cohort's own top-k (a key that names k)
    from speakerid.enroll.index import SpeakerIndex, index_path
    from speakerid.scoring.norm import cohort_statistics

    index = SpeakerIndex.open(index_path(db))
    assert index.header.cohort.endswith("-k3")
    rows = index.rows()
    np.testing.assert_allclose(rows.mu, cohort_statistics(rows.vectors, d.model.cohort, 3)[0], atol=1e-6)
    with np.load(exp2 / "cohort.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(exp2 / "cohort.npz", **{**arrays, "top_k": np.int64(1)})
    with pytest.raises(Exception, match=r"cohort.npz: 'top_k' must be one integer >= 2, got 1"):
        SpeakerDB(db, exp2).verify("alice", wavs["c1"])


# --------------------------------------------------------------------------- score rules
def test_db_keeps_every_embedding_and_scores_by_rule(setup, tmp_path):
    _, _, wavs, model, cohort = setup
    db = _enrolled(tmp_path, model, wavs)
    refs = model.embed([wavs["a1"], wavs["a2"], wavs["a3"]]).astype(np.float64)
    t = model.embed([wavs["c1"]])[0].astype(np.float64)
    cos = refs @ t
    mean = refs.mean(0) / np.linalg.norm(refs.mean(0))
    expect = {"mean": float(mean @ t), "max": float(cos.max()), "topk": float(np.sort(cos)[-2:].mean())}
    for rule, value in expect.items():
        with SpeakerDB(db, model, threshold=0.0, score_rule=rule, score_top_k=2) as d:
            np.testing.assert_allclose(d.references(["alice"])[0].refs, refs, atol=1e-6)
            r = d.verify("alice", wavs["c1"])
            assert r.rule == rule and r.score == pytest.approx(value, abs=1e-5)
    # AS-norm with max: every reference normalised, then the best
    s = score_pairs([refs], t[None], [0], [0], "max", 2, ASNormBackend(cohort, 300))
    per_ref = normalise_scores(cos, refs.astype(np.float32), t[None].astype(np.float32), np.arange(3), np.zeros(3, int),
                               cohort, "asnorm", 300)
    assert s.asnorm[0] == pytest.approx(per_ref.max(), abs=1e-6)
    with pytest.raises(SpeakerDBError, match="unknown score rule"):
        SpeakerDB(db, model, score_rule="median")


# --------------------------------------------------------------------------- identify, trials, list/remove
def test_identify_is_open_set(setup, tmp_path, capsys):
    _, exp, wavs, model, _ = setup
    db = _enrolled(tmp_path, model, wavs)
    with SpeakerDB(db, model, threshold=0.5) as d:
        r = d.identify(wavs["b1"], top_k=2)
        assert r.decision == "bob" and r.candidates[0].accept
    with SpeakerDB(db, model, threshold=1.5) as d:  # nobody reaches it: unknown, candidates still listed
        r = d.identify(wavs["b1"], top_k=2)
        assert r.decision == "unknown" and [m.speaker for m in r.candidates][0] == "bob" and len(r.candidates) == 2
    assert main(["identify", "--model", str(exp), "--db", str(db), "--threshold", "1.5", "--top-k", "1", "--json", str(wavs["b1"])]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decision"] == "unknown" and len(out["candidates"]) == 1 and out["candidates"][0]["speaker"] == "bob"
    assert main(["identify", "--model", str(exp), "--db", str(db), "--threshold", "1.5", str(wavs["b1"])]) == 0
    assert capsys.readouterr().out.startswith("unknown")
    with pytest.raises(SpeakerDBError, match="no decision threshold"):  # open-set needs a threshold
        SpeakerDB(db, model).identify(wavs["b1"])


def test_verify_trials_file(setup, tmp_path, capsys, monkeypatch):
    _, exp, wavs, model, _ = setup
    db = _enrolled(tmp_path, model, wavs)
    monkeypatch.chdir(wavs["a1"].parent)  # relative paths are relative to the current directory
    trials = tmp_path / "trials.txt"
    rows = [("alice", "a1.wav", "target"), ("alice", "b2.wav", "nontarget"), ("bob", "b2.wav", "target"),
            ("bob", str(wavs["c1"]), "nontarget")]
    trials.write_text("".join(f"{s} {t} {lab}\n" for s, t, lab in rows))
    out = tmp_path / "scores.txt"
    argv = ["verify", "--model", str(exp), "--db", str(db), "--threshold", "0.5", "--trials", str(trials),
            "--output", str(out), "--json", "--no-progress"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trials"] == 4 and summary["accepted"] + summary["rejected"] == 4
    lines = [line.split() for line in out.read_text().splitlines()]
    assert [(f[0], f[3]) for f in lines] == [(s, lab) for s, _, lab in rows]
    decisions = [line.split() for line in Path(f"{out}.decisions").read_text().splitlines()]
    with SpeakerDB(db, model, threshold=0.5) as d:
        for (spk, test, _), f, dec in zip(rows, lines, decisions):
            single = d.verify(spk, wavs["a1"].parent / test)
            assert float(f[2]) == pytest.approx(single.decision_score, abs=1e-5)
            assert dec[3] == ("accept" if single.accept else "reject")
    # the score file is what speakerid eval reads
    assert main(["eval", "--scores", str(out), "--json"]) == 0
    capsys.readouterr()
    # the text summary counts the errors too, as --json does
    assert main([a for a in argv if a != "--json"]) == 0
    text = capsys.readouterr().out
    assert f"{summary['false_accepts']} false accepts, {summary['misses']} misses" in text
    # unknown speakers and missing files are found before any audio work, naming the trial file
    trials.write_text("carol a1.wav\n")
    assert main(argv) == 2 and "no enrolled speaker 'carol'" in capsys.readouterr().err
    trials.write_text("alice nothere.wav\n")
    assert main(argv) == 2 and f"{trials}: 1 audio file(s) not found" in capsys.readouterr().err


def test_list_and_remove_commands_with_json(setup, tmp_path, capsys):
    _, exp, wavs, _, _ = setup
    db = str(tmp_path / "cli.db")
    assert main(["enroll", "--model", str(exp), "--db", db, "--speaker", "alice", "--json", str(wavs["a1"]), str(wavs["a2"])]) == 0
    assert json.loads(capsys.readouterr().out)["num_utts"] == 2
    assert main(["enroll", "--model", str(exp), "--db", db, "--speaker", "bob", str(wavs["b1"])]) == 0
    capsys.readouterr()
    assert main(["list", "--db", db, "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [(s["speaker"], s["num_utts"]) for s in listing] == [("alice", 2), ("bob", 1)]
    assert main(["remove", "--db", db, "bob", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"removed": ["bob"]}
    assert main(["list", "--db", db]) == 0
    assert capsys.readouterr().out.startswith("alice\t2 file(s)")
    assert main(["remove", "--db", db, "bob"]) == 2
    assert "no enrolled speaker 'bob'" in capsys.readouterr().err


# --------------------------------------------------------------------------- short speech, packaged model
def test_short_speech_warning_names_the_file(setup, tmp_path, caplog):
    _, _, wavs, model, _ = setup
    sr = 16000
    x, _ = sf.read(wavs["a1"], dtype="float32")
    short = tmp_path / "mostly_silence.wav"
    sf.write(short, np.concatenate([np.zeros(sr), x[: int(0.3 * sr)], np.zeros(2 * sr)]), sr)
    with caplog.at_level(logging.WARNING, logger="speakerid.enroll.speaker_db"):
        model.embed([wavs["a1"]])
        assert not caplog.records
        model.embed([short])
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and str(short) in msgs[0] and "speech after silence trimming" in msgs[0]


def test_model_defaults_to_the_packaged_default_and_starter_stays(tmp_path, capsys):
    from speakerid.cli.main import build_parser
    from speakerid.pretrained import DEFAULT_MODEL

    args = build_parser().parse_args(["verify", "--db", "x.db", "--speaker", "a", "t.wav"])
    assert args.model == DEFAULT_MODEL == "campplus"
    assert resolve_model_source(tmp_path) == tmp_path
    assert resolve_model_source("starter") == PACKAGED_DIR / "starter"
    assert (PACKAGED_DIR / "starter" / "model.pt").is_file()


def test_enrolment_embeds_under_the_experiments_segment_policy(tmp_path):
    """A model trained on trimmed audio (features.trim_silence) is embedded trimmed by the DB too,
    as `extract` embeds it (one embedding rule); the policy is part of the fingerprint."""
    from speakerid.config import load_config, save_config
    from speakerid.inference import SegmentPolicy, embed_files, load_experiment

    exp = make_tiny_experiment(tmp_path / "exp")
    wav = voice(tmp_path / "v.wav", 140.0, seconds=1.5)
    x, sr = sf.read(wav, dtype="float32")
    padded = tmp_path / "padded.wav"  # 2 s of digital silence before and after the voice
    sf.write(padded, np.concatenate([np.zeros(2 * sr, np.float32), x, np.zeros(2 * sr, np.float32)]), sr)
    plain = SpeakerModel.from_experiment(exp)
    cfg = load_config(exp / "config.yaml")
    cfg.features.trim_silence = True
    save_config(cfg, exp / "config.yaml")
    trimmed = SpeakerModel.from_experiment(exp)
    assert trimmed.policy.trim_silence and not plain.policy.trim_silence
    assert trimmed.fingerprint != plain.fingerprint
    extractor, _ = load_experiment(exp)
    ref = embed_files(extractor, [padded], SegmentPolicy(trim_silence=True)).numpy()[0]
    ref /= np.linalg.norm(ref)
    np.testing.assert_allclose(trimmed.embed([padded])[0], ref, atol=1e-5)
    assert np.abs(plain.embed([padded])[0] - ref).max() > 1e-3
