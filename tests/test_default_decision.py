"""The measured default operating point (issue 15 item 4): ``speakerid calibrate --target-fa`` stores
the prior whose Bayes threshold accepts that fraction of the dev non-targets; verify / identify use
it when no --p-target / --threshold is given; enrolment warns below the minimum speech."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from speakerid.cli.main import main
from speakerid.enroll.model import MIN_ENROLL_SPEECH_S, SpeakerModel
from speakerid.enroll.speaker_db import SpeakerDB
from speakerid.scoring.calibrate import Calibration, fit_calibration, threshold_at_fa, with_operating_point
from speakerid.scoring.metrics import bayes_threshold

from _use_helpers import make_tiny_experiment, voice


def _dev_scores(tmp_path: Path, n: int = 2000, seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tar, non = rng.normal(0.6, 0.15, n), rng.normal(0.1, 0.15, n)
    scores = np.concatenate([tar, non])
    labels = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    path = tmp_path / "dev.txt"
    path.write_text("".join(f"e{i} t{i} {s:.6f} {'target' if lab else 'nontarget'}\n"
                            for i, (s, lab) in enumerate(zip(scores, labels))))
    return path, np.round(scores, 6), labels


@pytest.mark.parametrize("target", [0.001, 0.01, 0.05, 0.2])
def test_threshold_at_fa_accepts_that_fraction(target: float) -> None:
    rng = np.random.default_rng(1)
    llr = rng.normal(size=5000)
    lab = rng.random(5000) < 0.3
    thr = threshold_at_fa(llr, lab, target)
    fa = (llr[~lab] >= thr).mean()
    assert target - 1 / (~lab).sum() <= fa <= target
    # stored as a prior and read back, the threshold accepts the same trials (midway, not one ulp above)
    back = bayes_threshold(1.0 / (1.0 + np.exp(thr)))
    np.testing.assert_array_equal(llr >= back, llr >= thr)
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        threshold_at_fa(llr, lab, 0.0)


def test_threshold_at_fa_survives_the_prior_round_trip() -> None:
    """0.3147003514591191 is a value whose next float, turned into a prior and back, lands on it: a
    threshold one ulp above the 1 %-th non-target then accepted it too (2 % false accepts)."""
    llr = np.concatenate([[2.0, 0.3147003514591191], -np.linspace(0.1, 3.0, 98)])
    lab = np.zeros(100, dtype=bool)
    thr = threshold_at_fa(llr, lab, 0.01)
    assert (llr >= thr).sum() == 1 and (llr >= bayes_threshold(1.0 / (1.0 + np.exp(thr)))).sum() == 1


def test_calibrate_target_fa_round_trip(tmp_path: Path, capsys) -> None:
    path, scores, labels = _dev_scores(tmp_path)
    out = tmp_path / "cal.json"
    assert main(["calibrate", "--scores", str(path), "--target-fa", "0.01", "--output", str(out)]) == 0
    assert "default operating point: P_target" in capsys.readouterr().out
    cal = Calibration.load(out)
    assert cal.target_fa == 0.01 and 0 < cal.default_p_target < 1
    fa = (cal.apply(scores[~labels]) >= bayes_threshold(cal.default_p_target)).mean()
    assert 0.009 <= fa <= 0.01
    same = with_operating_point(fit_calibration(scores, labels), scores, labels, 0.01)
    assert same.default_p_target == pytest.approx(cal.default_p_target, rel=1e-6)
    assert main(["calibrate", "--apply", str(out), "--scores", str(path), "--target-fa", "0.01", "--output",
                 str(tmp_path / "x")]) == 2
    assert "--target-fa only apply when fitting" in capsys.readouterr().err
    bad = json.loads(out.read_text())
    bad["default_p_target"] = 1.5
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="default_p_target must be in"):
        Calibration.load(tmp_path / "bad.json")


def test_verify_uses_the_models_operating_point(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    exp = make_tiny_experiment(tmp_path / "exp")
    wavs = [voice(tmp_path / f"a{i}.wav", 110 + 5 * i, seed=i) for i in range(3)]
    Calibration(a=10.0, b=-5.0, prior=0.5, default_p_target=0.2, target_fa=0.01).save(exp / "calibration.json")
    with SpeakerDB(tmp_path / "s.db", exp) as db:
        db.enroll("alice", wavs[:2])
        r = db.verify("alice", wavs[2])
    assert r.threshold == pytest.approx(bayes_threshold(0.2))
    assert "default operating point" in r.threshold_source and "1% false accepts" in r.threshold_source
    with SpeakerDB(tmp_path / "s.db", exp, p_target=0.05) as db:  # a given prior wins
        assert db.verify("alice", wavs[2]).threshold == pytest.approx(bayes_threshold(0.05))
    cal = json.loads((exp / "calibration.json").read_text())
    del cal["default_p_target"], cal["target_fa"]
    (exp / "calibration.json").write_text(json.dumps(cal))  # no operating point: P_target 0.01 as before
    with SpeakerDB(tmp_path / "s.db", exp) as db:
        assert db.verify("alice", wavs[2]).threshold == pytest.approx(bayes_threshold(0.01))


def test_enrolment_below_the_minimum_speech_warns(tmp_path: Path, caplog) -> None:
    exp = make_tiny_experiment(tmp_path / "exp")
    short = voice(tmp_path / "short.wav", 120, seconds=1.0)
    long = [voice(tmp_path / f"l{i}.wav", 120, seconds=MIN_ENROLL_SPEECH_S / 2 + 0.5, seed=i) for i in range(2)]
    model = SpeakerModel.from_experiment(exp)
    with SpeakerDB(tmp_path / "s.db", model) as db, caplog.at_level(logging.WARNING, logger="speakerid.enroll.speaker_db"):
        db.enroll("enough", long)
        assert not caplog.records
        db.enroll("little", [short])
    msgs = [r.getMessage() for r in caplog.records if "enrol more audio" in r.getMessage()]
    assert len(msgs) == 1 and "'little'" in msgs[0] and str(short) in msgs[0]
