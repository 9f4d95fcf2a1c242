#!/usr/bin/env python3
"""Scoring, calibration and default operating point of the packaged model, chosen on the dev split.

    python recipes/pretrained/local/decide.py exp/campplus_fp16 data/speech/dev/trials \
        exp/campplus_fp16/cohort_candidate.npz --target-fa 0.01 --table ../../benchmarks/results_scoring.md

1. The cohort candidate (made by ``recipes/starter/local/make_cohort.py``): the mean embedding of
   every licensed training speaker (all five CC0 / CC BY / MIT corpora, so it covers their channels).
2. Dev scores by cosine and by each cohort backend (AS-norm, CSLS) at each top-k of ``--top-k``,
   twice: with the cohort as it ships, and leaving each trial's corpus out of the cohort (the trials
   of corpus C are normalised by the cohort speakers of the OTHER corpora: what a corpus the cohort
   never saw gets, the case of every user's own speech).
3. The rule: a cohort backend is eligible when, as shipped, its pooled minDCF (P_target 0.01) and
   its pooled miss rate at the ``--target-fa`` operating point are no worse than cosine's, and its
   leave-corpus-out minDCF is no worse either; among the eligible, the lowest leave-corpus-out pooled
   EER is kept (the cross-corpus score shift that pooled EER measures is what normalisation is for);
   none eligible: cosine, no cohort.
4. The kept backend's cohort (``EXP/cohort.npz`` with its ``top_k``), calibration (``speakerid
   calibrate``'s fit, the operating point at ``--target-fa`` of the dev non-target trials,
   ``EXP/calibration.json``), ``EXP/dev_eval.json`` and ``EXP/decision.json`` (every candidate's
   figures and the choice, for the model card); ``--table``: the same as a markdown table.

Corpus of an id: the text before the first ``_`` of its speaker folder (``../shared/data``'s
``<corpus>_<speaker>`` layout).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from speakerid.experiment import write_cohort  # noqa: E402
from speakerid.scoring.calibrate import calibrate_score_file, fit_calibration, with_operating_point  # noqa: E402
from speakerid.scoring.embeddings import load_embeddings  # noqa: E402
from speakerid.scoring.metrics import bayes_threshold, compute_metrics  # noqa: E402
from speakerid.scoring.trial_scores import EmbeddingTable, score_trials  # noqa: E402
from speakerid.scoring.trials import read_trial_list, write_scores  # noqa: E402

COHORT_BACKENDS = ("asnorm", "csls")


def corpus_of(utt_or_speaker: str) -> str:
    return utt_or_speaker.split("/")[0].split("_")[0]


def dev_scores(trials, table: EmbeddingTable, cohort_ids: np.ndarray, cohort: np.ndarray, scoring: str,
               top_k: int, leave_corpus_out: bool) -> np.ndarray:
    """Scores of every dev trial; ``leave_corpus_out``: each corpus's trials against the cohort less its speakers."""
    if not leave_corpus_out:
        return score_trials(trials.enroll, trials.test, table, cohort=None if scoring == "cosine" else cohort,
                            scoring=scoring, top_k=top_k)
    corpus = np.array([corpus_of(u) for u in trials.enroll])
    cohort_corpus = np.array([corpus_of(s) for s in cohort_ids])
    out = np.empty(len(trials), dtype=np.float64)
    for c in np.unique(corpus):
        m = corpus == c
        out[m] = score_trials(trials.enroll[m], trials.test[m], table, cohort=cohort[cohort_corpus != c],
                              scoring=scoring, top_k=top_k)
    return out


def figures(scores: np.ndarray, labels: np.ndarray, target_fa: float, long: np.ndarray) -> dict[str, float]:
    """Pooled EER, minDCF (0.01), the FA / miss rates at the ``target_fa`` operating point, and the
    pooled EER of the ``long`` trials only."""
    m = compute_metrics(scores, labels, p_targets=(0.01,))
    cal = with_operating_point(fit_calibration(scores, labels), scores, labels, target_fa)
    accept = cal.apply(scores) >= bayes_threshold(cal.default_p_target)
    return {"eer": float(m.eer), "min_dcf_0.01": float(m.min_dcf[0.01][0]), "fa": float(accept[~labels].mean()),
            "miss": float((~accept[labels]).mean()), "eer_long": float(compute_metrics(scores[long], labels[long],
                                                                                          p_targets=()).eer)}


def choose(results: dict[str, dict]) -> str:
    """The kept candidate's name by the rule of the module docstring."""
    base = results["cosine"]
    eligible = [name for name, r in results.items() if name != "cosine"
                and r["shipped"]["min_dcf_0.01"] <= base["shipped"]["min_dcf_0.01"]
                and r["shipped"]["miss"] <= base["shipped"]["miss"]
                and r["held_out"]["min_dcf_0.01"] <= base["held_out"]["min_dcf_0.01"]]
    return min(eligible, key=lambda n: (results[n]["held_out"]["eer"], n), default="cosine")


def markdown(results: dict[str, dict], kept: str, command: str, short: list[str]) -> str:
    def pct(x: float) -> str:
        return f"{100 * x:.2f}%"

    rows = ["| scoring | top-k | pooled EER | minDCF | FA / miss at 1 % FA | corpus held out of the cohort: EER | minDCF | "
            "FA / miss | EER without the short-clip corpora |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        s, h = r["shipped"], r["held_out"]
        mark = " **(kept)**" if name == kept else ""
        rows.append(f"| {r['scoring']}{mark} | {r['top_k'] or '-'} | {pct(s['eer'])} | {s['min_dcf_0.01']:.3f} | "
                    f"{pct(s['fa'])} / {pct(s['miss'])} | {pct(h['eer'])} | {h['min_dcf_0.01']:.3f} | "
                    f"{pct(h['fa'])} / {pct(h['miss'])} | {pct(h['eer_long'])} |")
    return (f"# `{command}`\n\nDev split of the default model, pooled over its corpora. Left: the cohort as it ships; "
            "right: each corpus's trials normalised by the cohort speakers of the other corpora (a corpus the cohort "
            "never saw). Rule (recipes/pretrained/local/decide.py): a cohort backend is eligible when its minDCF "
            "(both columns) and its misses at the 1 %-FA operating point are no worse than cosine's; the eligible one "
            "with the lowest held-out pooled EER is kept. Last column: the held-out pooled EER without the corpora of "
            f"clips of 1 s or less ({', '.join(short)}): what normalisation gains there comes from lining those "
            "corpora's scores up with the others'.\n\n" + "\n".join(rows) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("exp", type=Path, help="experiment dir with emb_dev/")
    p.add_argument("trials", type=Path, help="labelled dev trials")
    p.add_argument("cohort", type=Path, help="cohort candidate (.npz of training-speaker means)")
    p.add_argument("--target-fa", type=float, default=0.01)
    p.add_argument("--top-k", type=int, nargs="+", default=[20, 50, 100, 300])
    p.add_argument("--table", type=Path, help="also write the candidates as a markdown table here")
    p.add_argument("--short-corpora", nargs="*", default=["fsdd", "speechcommands"],
                   help="corpora of clips of 1 s or less: an extra EER column without them (not part of the rule)")
    a = p.parse_args(argv)
    trials = read_trial_list(a.trials)
    labels = np.asarray(trials.labels, dtype=bool)
    table = EmbeddingTable.load(a.exp / "emb_dev")
    cohort_ids, cohort = load_embeddings(a.cohort)
    cohort_ids = np.asarray(cohort_ids)
    long = ~np.isin(np.array([corpus_of(u) for u in trials.enroll]), a.short_corpora)
    results: dict[str, dict] = {}
    scores: dict[str, np.ndarray] = {}
    for scoring, k in [("cosine", None)] + [(b, k) for b in COHORT_BACKENDS for k in a.top_k]:
        name = scoring if k is None else f"{scoring}{k}"
        scores[name] = dev_scores(trials, table, cohort_ids, cohort, scoring, k or 0, leave_corpus_out=False)
        held = scores[name] if scoring == "cosine" else dev_scores(trials, table, cohort_ids, cohort, scoring, k,
                                                                   leave_corpus_out=True)
        results[name] = {"scoring": scoring, "top_k": k, "shipped": figures(scores[name], labels, a.target_fa, long),
                         "held_out": figures(held, labels, a.target_fa, long)}
        r = results[name]
        print(f"{name:10s} EER {100 * r['shipped']['eer']:5.2f} %  minDCF {r['shipped']['min_dcf_0.01']:.3f}  "
              f"miss {100 * r['shipped']['miss']:5.2f} %  | held out: EER {100 * r['held_out']['eer']:5.2f} %  "
              f"minDCF {r['held_out']['min_dcf_0.01']:.3f}")
    kept = choose(results)
    kind, top_k = results[kept]["scoring"], results[kept]["top_k"]
    cohort_file = a.exp / "cohort.npz"
    if kind == "cosine":
        cohort_file.unlink(missing_ok=True)
    else:
        write_cohort(a.exp, cohort_ids, cohort, top_k=top_k)
    score_file = a.exp / "scores_dev.txt"
    write_scores(score_file, trials.enroll, trials.test, scores[kept], trials.labels)
    cal, report = calibrate_score_file(score_file, a.exp / "calibration.json", score_kind=kind, target_fa=a.target_fa)
    (a.exp / "dev_eval.json").write_text(json.dumps(results[kept]["shipped"], indent=2) + "\n")
    decision = {"kept": kind, "top_k": top_k, "candidate": kept, "figures": results, "target_fa": a.target_fa,
                "calibration": cal.to_dict(), "calibration_report": report}
    (a.exp / "decision.json").write_text(json.dumps(decision, indent=2) + "\n")
    if a.table:
        repo = str(Path(__file__).resolve().parents[3]) + "/"
        args = " ".join(sys.argv[1:] if argv is None else argv).replace(repo, "../../")
        a.table.write_text(markdown(results, kept, f"(cd recipes/pretrained && python local/decide.py {args})",
                                    a.short_corpora))
    print(f"kept: {kind}" + (f" (top {top_k})" if top_k else "") + f"; llr = {cal.a:.4f} * score + {cal.b:.4f}; "
          f"default P_target {cal.default_p_target:.4g} ({a.target_fa:g} false accepts on the dev trials)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
