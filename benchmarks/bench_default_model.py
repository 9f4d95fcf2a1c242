#!/usr/bin/env python3
"""The default model against the starter and Resemblyzer 0.1.4 on one dev split, per corpus, in one run.

    python benchmarks/bench_default_model.py --data recipes/pretrained/data/speech/dev \
        --system starter=recipes/pretrained/exp/starter/emb_dev \
        --cohort starter=speakerid/pretrained/starter/cohort.npz \
        --system campplus=recipes/pretrained/exp/campplus/emb_dev ... \
        --default campplus_fp16 --out benchmarks/results_default_model.md

(``bash recipes/pretrained/run.sh --stage 4 --stop-stage 4`` runs it with every system.) Each
``--system NAME=EMB`` is a ``speakerid extract`` output of the dev data dir; ``--cohort NAME=NPZ``
adds that system's AS-norm'd scores (top 300) as ``NAME+asnorm``; ``--normed NAME+KIND=NPZ`` its
scores normalised by KIND (``asnorm``, ``csls``) against a model's ``cohort.npz`` (its ``top_k``); Resemblyzer's embeddings are
computed here (``benchmarks/bench_starter.py``'s rule, cached). Every system is scored on the same
trials, EER and minDCF (P_target 0.01) per corpus and pooled.

Operating point (the rule the packaged model ships, :func:`speakerid.scoring.calibrate.with_operating_point`):
a linear calibration fit on the pooled dev scores of that system, then the threshold at which 1 %
of the pooled dev non-target trials is accepted; its false-accept (FA) and miss rates per corpus.
Fit and threshold come from the same trials they are measured on, so the pooled FA is 1 % by
construction; the held-out columns show what a corpus the threshold never saw gets: for each
corpus, calibration and threshold fit on the OTHER corpora's trials only (leave one corpus out).

Minimum speech: ``enroll`` / ``verify`` / ``identify`` warn about a file with less than
``MIN_SPEECH_S`` (1.5 s) of speech after silence trimming (:func:`speakerid.features.vad.speech_seconds`),
and the default decision is promised for clips above it. ``--speech-cache`` (each dev file's seconds
of speech, computed once with the product's own trimming) adds the FA / miss rates at the same
operating point (fit on ALL pooled trials, as shipped) on the trials whose two files both meet the
minimum, per corpus.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_starter import add_dev_args, dev_trials, load_systems, rates, score  # noqa: E402

from speakerid.enroll.model import MIN_SPEECH_S  # noqa: E402
from speakerid.scoring.calibrate import fit_calibration, threshold_at_fa  # noqa: E402
from speakerid.scoring.metrics import compute_metrics  # noqa: E402

TARGET_FA = 0.01


def operating_rates(s: np.ndarray, lab: np.ndarray, fit: np.ndarray, apply: np.ndarray) -> tuple[float, float]:
    """(FA, miss) on the ``apply`` trials at the 1 %-FA threshold of a calibration fit on the ``fit`` trials."""
    cal = fit_calibration(s[fit], lab[fit])
    thr = threshold_at_fa(cal.apply(s[fit]), lab[fit], TARGET_FA)
    return rates(cal.apply(s[apply]), lab[apply], thr)


def dev_speech_seconds(data: Path, cache: Path) -> dict[str, float]:
    """Seconds of speech after silence trimming of each utterance of ``data``'s wav.scp (16 kHz), cached."""
    if cache.exists():
        with np.load(cache) as z:
            return dict(zip(z["ids"].tolist(), z["seconds"].tolist()))
    from tqdm import tqdm

    from speakerid.audio import load_audio
    from speakerid.data.datadir import read_kv
    from speakerid.features.vad import speech_seconds

    scp = read_kv(data / "wav.scp")
    seconds = {u: speech_seconds(load_audio(path, 16000)[0], 16000)
               for u, path in tqdm(scp.items(), desc="speech seconds", unit="file")}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, ids=np.array(list(seconds)), seconds=np.array(list(seconds.values())))
    return seconds


def evaluate(s: np.ndarray, lab: np.ndarray, corpus: np.ndarray, enough: np.ndarray | None = None) -> dict:
    """Metrics per corpus; ``enough`` (trials whose two files meet MIN_SPEECH_S) adds the FA /
    miss rates on those trials at the operating point fit on all trials."""
    everything = np.ones_like(lab)
    out: dict = {"corpora": {}}
    for c in ["pooled", *sorted(set(corpus))]:
        m = everything if c == "pooled" else corpus == c
        met = compute_metrics(s[m], lab[m], p_targets=(0.01, 0.05))
        fa, miss = operating_rates(s, lab, everything, m)
        row = {"eer": met.eer, "min_dcf_0.01": met.min_dcf[0.01][0], "min_dcf_0.05": met.min_dcf[0.05][0],
               "fa": fa, "miss": miss, "n_target": int(lab[m].sum()), "n_nontarget": int((~lab[m]).sum())}
        if c != "pooled":
            row["fa_heldout"], row["miss_heldout"] = operating_rates(s, lab, ~m, m)
        if enough is not None:
            e = m & enough
            row["n_target_min_speech"], row["n_nontarget_min_speech"] = int(lab[e].sum()), int((~lab[e]).sum())
            if lab[e].any() and (~lab[e]).any():
                row["fa_min_speech"], row["miss_min_speech"] = operating_rates(s, lab, everything, e)
        out["corpora"][c] = row
    return out


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def table(results: dict[str, dict], default: str | None) -> str:
    names = list(results)
    corpora = list(next(iter(results.values()))["corpora"])
    lines = ["EER / minDCF (P_target 0.01):", "",
             "| corpus | trials (tgt/non) | " + " | ".join(names) + " |", "|" + "---|" * (2 + len(names))]
    for c in corpora:
        r0 = results[names[0]]["corpora"][c]
        cells = [f"{_pct(results[n]['corpora'][c]['eer'])} / {results[n]['corpora'][c]['min_dcf_0.01']:.3f}" for n in names]
        lines.append(f"| {c} | {r0['n_target']}/{r0['n_nontarget']} | " + " | ".join(cells) + " |")
    lines += ["", "FA / miss at the 1 %-FA operating point (calibration and threshold fit on the pooled dev trials):", "",
              "| corpus | " + " | ".join(names) + " |", "|" + "---|" * (1 + len(names))]
    for c in corpora:
        cells = [f"{_pct(results[n]['corpora'][c]['fa'])} / {_pct(results[n]['corpora'][c]['miss'])}" for n in names]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    if default:
        r = results[default]["corpora"]
        lines += ["", f"Default model ({default}), leave one corpus out: calibration and threshold fit on the other "
                  "corpora's trials, FA / miss on the held-out corpus:", "",
                  "| corpus | FA | miss |", "|---|---|---|"]
        lines += [f"| {c} | {_pct(r[c]['fa_heldout'])} | {_pct(r[c]['miss_heldout'])} |" for c in corpora if c != "pooled"]
    if any("n_target_min_speech" in results[n]["corpora"]["pooled"] for n in names):
        lines += ["", f"FA / miss at the same operating point (fit on all pooled trials) on the trials whose two files "
                  f"both have >= {MIN_SPEECH_S} s of speech after silence trimming (the product's minimum: "
                  "below it enroll / verify warn); trials kept (tgt/non) from the first system:", "",
                  "| corpus | trials kept (tgt/non) | " + " | ".join(names) + " |", "|" + "---|" * (2 + len(names))]
        for c in corpora:
            r0 = results[names[0]]["corpora"][c]
            cells = [f"{_pct(results[n]['corpora'][c]['fa_min_speech'])} / {_pct(results[n]['corpora'][c]['miss_min_speech'])}"
                     if "fa_min_speech" in results[n]["corpora"][c] else "-" for n in names]
            lines.append(f"| {c} | {r0['n_target_min_speech']}/{r0['n_nontarget_min_speech']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dev_args(p, "/tmp/speakerid_bench_default/resemblyzer.npz")
    p.add_argument("--normed", action="append", default=[], metavar="NAME+KIND=NPZ",
                   help="a system's scores normalised by KIND (asnorm, csls) against a cohort.npz, at its top_k")
    p.add_argument("--default", help="the shipped system (NAME, NAME+asnorm or a --normed name): adds its "
                                     "leave-one-corpus-out table")
    p.add_argument("--speech-cache", type=Path,
                   help="npz of each dev file's seconds of speech (computed when absent): adds the minimum-speech table")
    a = p.parse_args(argv)
    t0 = time.time()
    trials, lab, corpus = dev_trials(a.data)
    systems = load_systems(a.system, a.data, a.resemblyzer_cache, not a.no_resemblyzer)
    cohorts = dict(spec.split("=", 1) for spec in a.cohort)
    enough = None
    if a.speech_cache:
        seconds = dev_speech_seconds(a.data, a.speech_cache)
        enough = np.array([min(seconds[e], seconds[t]) >= MIN_SPEECH_S for e, t, _ in trials])
    def normalised(name: str, kind: str, npz: str, top_k: int | None = None) -> dict:
        """``name``'s scores normalised by ``kind`` against the cohort ``npz`` (at ``top_k``, else the file's, else 300)."""
        with np.load(npz, allow_pickle=False) as z:
            cohort, own_k = z["embeddings"], int(z["top_k"]) if "top_k" in z.files else 300
        ids, emb = systems[name]
        return evaluate(score(ids, emb, trials, cohort, kind, top_k or own_k), lab, corpus, enough)

    results: dict[str, dict] = {}
    for name, (ids, emb) in systems.items():
        results[name] = evaluate(score(ids, emb, trials, None), lab, corpus, enough)
        if name in cohorts:
            results[f"{name}+asnorm"] = normalised(name, "asnorm", cohorts[name], top_k=300)
    for spec in a.normed:
        label, npz = spec.split("=", 1)
        name, kind = label.rsplit("+", 1)
        if name not in systems:
            p.error(f"--normed {spec}: no --system {name}")
        results[label] = normalised(name, kind, npz)
    if a.default and a.default not in results:
        p.error(f"--default {a.default}: not one of {', '.join(results)}")
    text = table(results, a.default)
    text += f"\n_{len(trials)} trials of {a.data}; {time.time() - t0:.0f} s wall._\n"
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        cmd = " ".join(sys.argv[1:] if argv is None else argv)
        a.out.write_text(f"# `python benchmarks/{Path(__file__).name} {cmd}`\n\n{text}")
        a.out.with_suffix(".json").write_text(json.dumps({"default": a.default, "systems": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
