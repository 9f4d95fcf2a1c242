#!/usr/bin/env python3
"""Scoring, calibration and default operating point of the packaged model, chosen on the dev split.

    python recipes/pretrained/local/decide.py exp/campplus_fp16 data/speech/dev/trials \
        exp/campplus_fp16/cohort_candidate.npz --target-fa 0.01

1. The AS-norm cohort candidate (made by ``recipes/starter/local/make_cohort.py``): the mean
   embedding of every licensed training speaker (all five CC0 / CC BY / MIT corpora, so the
   cohort covers their channels).
2. Dev scores by cosine and by AS-norm (top 300), each calibrated with its operating point at
   ``--target-fa``; AS-norm is kept (``EXP/cohort.npz``) only when it lowers the pooled dev miss
   rate at that operating point (the decision the model ships), else it ships without a cohort.
   EER and minDCF of both are recorded too.
3. Calibration (``speakerid calibrate``'s fit) on the kept scores with the default operating
   point at ``--target-fa`` of the dev non-target trials (``EXP/calibration.json``);
   ``EXP/dev_eval.json`` (EER / minDCF of the kept scores) and ``EXP/decision.json`` (both
   options' figures and the choice, for the model card).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from speakerid.scoring.calibrate import calibrate_score_file, fit_calibration, with_operating_point  # noqa: E402
from speakerid.scoring.trial_scores import score_files  # noqa: E402
from speakerid.scoring.evaluate import evaluate_score_file  # noqa: E402
from speakerid.scoring.metrics import bayes_threshold  # noqa: E402
from speakerid.scoring.labelled_scores import read_labelled_scores


def operating_rates(scores: Path, target_fa: float) -> dict[str, float]:
    """Pooled FA and miss rates of a dev score file at its own ``target_fa`` operating point."""
    sl = read_labelled_scores(scores)
    lab = np.asarray(sl.labels, dtype=bool)
    cal = with_operating_point(fit_calibration(sl.scores, lab), sl.scores, lab, target_fa)
    accept = cal.apply(sl.scores) >= bayes_threshold(cal.default_p_target)
    return {"fa": float(accept[~lab].mean()), "miss": float((~accept[lab]).mean())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("exp", type=Path, help="experiment dir with emb_dev/ and emb_train/")
    p.add_argument("trials", type=Path, help="labelled dev trials")
    p.add_argument("cohort", type=Path, help="AS-norm cohort candidate (.npz of training-speaker means)")
    p.add_argument("--target-fa", type=float, default=0.01)
    p.add_argument("--top-k", type=int, default=300)
    a = p.parse_args(argv)
    candidate = a.cohort
    figures = {}
    for kind in ("cosine", "asnorm"):
        out = a.exp / f"scores_dev_{kind}.txt"
        score_files(a.trials, a.exp / "emb_dev", out, cohort=candidate if kind == "asnorm" else None,
                    scoring="asnorm" if kind == "asnorm" else "none", top_k=a.top_k)
        figures[kind] = {**evaluate_score_file(str(out)).to_dict(), **operating_rates(out, a.target_fa)}
    kind = "asnorm" if figures["asnorm"]["miss"] < figures["cosine"]["miss"] else "cosine"
    cohort = a.exp / "cohort.npz"
    if kind == "asnorm":
        cohort.write_bytes(candidate.read_bytes())
    else:
        cohort.unlink(missing_ok=True)
    cal, report = calibrate_score_file(a.exp / f"scores_dev_{kind}.txt", a.exp / "calibration.json",
                                       score_kind=kind, target_fa=a.target_fa)
    (a.exp / "dev_eval.json").write_text(json.dumps(figures[kind], indent=2) + "\n")
    decision = {"kept": kind, "figures": figures, "target_fa": a.target_fa, "calibration": cal.to_dict(),
                "calibration_report": report}
    (a.exp / "decision.json").write_text(json.dumps(decision, indent=2) + "\n")
    for k, f in figures.items():
        print(f"{k:7s} pooled dev EER {f['eer'] * 100:.2f} %  minDCF0.01 {f['min_dcf_0.01']:.3f}  at "
              f"{a.target_fa:g} FA: FA {f['fa'] * 100:.2f} %, miss {f['miss'] * 100:.2f} %")
    print(f"kept: {kind}; llr = {cal.a:.4f} * score + {cal.b:.4f}; default P_target {cal.default_p_target:.4g} "
          f"({a.target_fa:g} false accepts on the dev trials)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
