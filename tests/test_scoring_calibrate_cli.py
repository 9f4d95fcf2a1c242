"""Calibration (logistic regression -> LLR), plots, and the score / eval / calibrate commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from speakerid.cli.main import main
from speakerid.scoring.calibrate import Calibration, CalibrationError, fit_calibration
from speakerid.scoring.embeddings import save_embeddings
from speakerid.scoring.metrics import compute_cllr, compute_eer
from speakerid.scoring.trials import read_scores, write_scores


def _gaussian_scores(seed, n_tar, n_non, mu1=2.0, mu0=-1.0, sd=1.5):
    rng = np.random.default_rng(seed)
    s = np.concatenate([rng.normal(mu1, sd, n_tar), rng.normal(mu0, sd, n_non)])
    return s, np.r_[np.ones(n_tar, int), np.zeros(n_non, int)]


def test_fit_recovers_the_true_llr_of_gaussian_scores():
    # equal-variance Gaussians: LLR(s) = (mu1-mu0)/sd^2 * s + (mu0^2-mu1^2)/(2 sd^2)
    mu1, mu0, sd = 2.0, -1.0, 1.5
    a_true, b_true = (mu1 - mu0) / sd**2, (mu0**2 - mu1**2) / (2 * sd**2)
    s, lab = _gaussian_scores(0, 4000, 16000, mu1, mu0, sd)  # training prior 0.2 is removed
    cal = fit_calibration(s, lab)
    assert cal.prior == pytest.approx(0.2)
    assert cal.a == pytest.approx(a_true, rel=0.06) and cal.b == pytest.approx(b_true, abs=0.12)
    weighted = fit_calibration(s, lab, prior=0.01)  # reweighted fit: same LLR model
    assert weighted.a == pytest.approx(a_true, rel=0.1) and weighted.b == pytest.approx(b_true, abs=0.3)
    # calibrating raw scores with a wrong scale improves Cllr; order (hence EER) is unchanged
    raw = 0.1 * s + 3.0
    llr = fit_calibration(raw, lab).apply(raw)
    true_cllr = compute_cllr(a_true * s + b_true, lab)
    assert compute_cllr(llr, lab) == pytest.approx(true_cllr, abs=0.01)
    assert compute_cllr(raw, lab) > true_cllr + 0.2
    assert compute_eer(llr, lab)[0] == pytest.approx(compute_eer(raw, lab)[0])


def test_perfectly_separated_dev_scores_give_a_finite_map():
    cal = fit_calibration([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0])
    assert np.isfinite([cal.a, cal.b]).all() and cal.a > 0


def test_calibration_json_round_trip_and_errors(tmp_path):
    cal = Calibration(2.5, -1.0, 0.3, 10, 20)
    cal.save(tmp_path / "cal.json")
    assert Calibration.load(tmp_path / "cal.json") == cal
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CalibrationError, match="bad.json: not a JSON file"):
        Calibration.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(CalibrationError, match="other.json: not a speakerid"):
        Calibration.load(tmp_path / "other.json")


def test_commands_score_eval_calibrate(tmp_path, capsys):
    rng = np.random.default_rng(3)
    spk = rng.standard_normal((8, 12))
    ids = [f"s{i % 8}/v/{i:03d}" for i in range(80)]
    emb = spk[np.arange(80) % 8] + 0.9 * rng.standard_normal((80, 12))
    save_embeddings(tmp_path / "emb.npz", ids, emb)
    save_embeddings(tmp_path / "cohort.npz", [f"c{i}" for i in range(30)], rng.standard_normal((30, 12)))
    pairs = rng.integers(0, 80, (600, 2))
    trials = tmp_path / "trials.txt"
    trials.write_text("".join(f"{int(a % 8 == b % 8)} {ids[a]}.wav {ids[b]}.wav\n" for a, b in pairs if a != b))
    d = str(tmp_path)

    assert main(["score", "--trials", str(trials), "--embeddings", f"{d}/emb.npz", "--cohort", f"{d}/cohort.npz",
                 "--norm", "asnorm", "--top-k", "10", "--output", f"{d}/scores.txt"]) == 0
    assert main(["eval", "--scores", f"{d}/scores.txt", "--json", "--det", f"{d}/det.png", "--hist", f"{d}/hist.png"]) == 0
    metrics = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert 0 <= metrics["eer"] < 0.3 and {"min_dcf_0.01", "min_dcf_0.05"} <= set(metrics)
    for png in ("det.png", "hist.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # labels from --trials when the score file has none
    sl = read_scores(f"{d}/scores.txt")
    write_scores(f"{d}/nolabels.txt", sl.enroll, sl.test, sl.scores)
    assert main(["eval", "--scores", f"{d}/nolabels.txt", "--trials", str(trials), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["eer"] == metrics["eer"]

    assert main(["calibrate", "--scores", f"{d}/scores.txt", "--output", f"{d}/cal.json"]) == 0
    assert main(["calibrate", "--apply", f"{d}/cal.json", "--scores", f"{d}/scores.txt", "--output", f"{d}/scores.cal"]) == 0
    out = capsys.readouterr().out
    assert "before" in out and "after" in out
    assert main(["eval", "--scores", f"{d}/scores.cal", "--calibrated", "--json"]) == 0
    cal_metrics = json.loads(capsys.readouterr().out)
    assert cal_metrics["cllr"] < 1.0 and "act_dcf_0.01" in cal_metrics
    assert cal_metrics["eer"] == pytest.approx(metrics["eer"], abs=2e-3)  # monotone map (6-decimal files)

    # user errors: one line naming the file and line, exit status 2
    (tmp_path / "bad.txt").write_text("1 a b\n1 a\n")
    assert main(["score", "--trials", f"{d}/bad.txt", "--embeddings", f"{d}/emb.npz", "--output", f"{d}/x.txt"]) == 2
    err = capsys.readouterr().err
    assert f"{d}/bad.txt:2:" in err and err.count("\n") == 1
    assert not (tmp_path / "x.txt").exists()


@pytest.mark.parametrize("command", ["score", "eval", "calibrate"])
def test_help_shows_an_example(command, capsys):
    assert main([command, "--help"]) == 0
    assert f"example:\n  speakerid {command}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "lines, problem",
    [
        (["a b 0.1 target", "a c 0.5 target", "a d 0.9 target"], "no non-target"),
        (["a b 0.5 target", "a c 0.5 nontarget", "a d 0.5 nontarget"], "all dev scores are equal"),
    ],
    ids=["one-class", "all-equal"],
)
def test_calibrate_unfittable_scores_name_the_score_file(tmp_path, capsys, lines, problem):
    from speakerid.cli.main import main

    path = tmp_path / "dev_scores.txt"
    path.write_text("\n".join(lines) + "\n")
    assert main(["calibrate", "--scores", str(path), "--output", str(tmp_path / "cal.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{path}: cannot fit a calibration:" in err and problem in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "cal.json").exists()
