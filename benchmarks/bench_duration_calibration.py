#!/usr/bin/env python3
"""Can a duration-aware calibration (quality measure functions) bring the default decision's
pooled misses at 1 % false accepts down? Linear logistic calibrations on the dev scores with the
log durations of the two sides as extra inputs, against the score alone, in one run.

    python benchmarks/bench_duration_calibration.py \
        --scores recipes/pretrained/exp/campplus_fp16/scores_dev_cosine.txt \
        --scores recipes/pretrained/exp/campplus_fp16/scores_dev_asnorm.txt \
        --utt2dur recipes/pretrained/data/speech/dev/utt2dur --out benchmarks/results_duration_calibration.md

(the score files and utt2dur are written by ``bash recipes/pretrained/run.sh --stage 2 --stop-stage 3``.)
Every calibration is fitted and measured on the same trials (in-sample: an upper bound of what
the inputs can give); the threshold accepts 1 % of the pooled non-target trials; the table gives
the pooled and per-corpus miss rates at it. Calibration inputs, with d_min / d_max the shorter /
longer side's duration: ``s``; ``s, log d_min``; ``s, log d_min, s log d_min``; ``s, log d_min,
log d_max, s log d_min, s log d_max`` (the quality-measure functions of NIST SRE systems).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

FORMS = {
    "s": lambda s, a, b: np.c_[s],
    "s, log d_min": lambda s, a, b: np.c_[s, a],
    "s, log d_min, s log d_min": lambda s, a, b: np.c_[s, a, s * a],
    "s, log d_min/max and products": lambda s, a, b: np.c_[s, a, b, s * a, s * b],
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scores", action="append", type=Path, required=True, help="labelled score file (repeatable)")
    p.add_argument("--utt2dur", type=Path, required=True)
    p.add_argument("--fa", type=float, default=0.01)
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    dur = {u: float(d) for u, d in (line.split() for line in a.utt2dur.read_text().splitlines() if line.strip())}
    lines = [f"# Duration-aware calibration at {a.fa:.0%} pooled false accepts (in-sample)", "",
             "Command: `python benchmarks/bench_duration_calibration.py " + " ".join(f"--scores {s}" for s in a.scores)
             + f" --utt2dur {a.utt2dur}`", ""]
    for path in a.scores:
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        s = np.array([float(r[2]) for r in rows])
        y = np.array([r[3] == "target" for r in rows])
        d = np.array([[dur[r[0]], dur[r[1]]] for r in rows])
        lo, hi = np.log(d.min(axis=1)), np.log(d.max(axis=1))
        corpus = np.array([r[0].split("_", 1)[0] for r in rows])
        names = sorted(set(corpus))
        lines += [f"## {path.name}", "", "| calibration inputs | pooled FA | pooled miss | " + " | ".join(names) + " |",
                  "|---|---|---|" + "---|" * len(names)]
        for form, make in FORMS.items():
            x = make(s, lo, hi)
            llr = LogisticRegression(C=1e4, max_iter=5000).fit(x, y).decision_function(x)
            thr = np.quantile(llr[~y], 1 - a.fa)
            miss = {c: (llr[y & (corpus == c)] < thr).mean() for c in names}
            lines.append(f"| {form} | {(llr[~y] >= thr).mean():.2%} | {(llr[y] < thr).mean():.1%} | "
                         + " | ".join(f"{miss[c]:.1%}" for c in names) + " |")
        share = {c: (y & (corpus == c)).sum() / y.sum() for c in names}
        lines += ["", "target trials per corpus: " + ", ".join(f"{c} {share[c]:.0%}" for c in names), ""]
    text = "\n".join(lines)
    print(text)
    if a.out:
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
