#!/usr/bin/env python3
"""Starter model vs Resemblyzer 0.1.4 on the same speaker-disjoint dev trials, per corpus.

    python benchmarks/bench_starter.py --data recipes/starter/data/speech/dev \
        --system starter=recipes/starter/exp/starter/emb_dev_trim \
        --cohort starter=speakerid/pretrained/starter/cohort.npz \
        --out benchmarks/results_starter.md

Each ``--system NAME=EMB`` is an embeddings file or dir (``speakerid extract`` output) of the
dev data; Resemblyzer's embeddings (its own ``preprocess_wav``: resample, volume norm, webrtc
VAD trimming; then ``embed_utterance``) are computed here from the dev ``wav.scp`` and cached
(``--resemblyzer-cache``). ``--cohort NAME=NPZ`` adds the AS-norm'd scores of that system
(top-k 300 of the cohort's speaker means). Every system is scored by cosine on the trials.

Metrics per corpus (the speaker id's prefix) and pooled: EER, minDCF at P_target 0.01 and 0.05,
and at the default operating point -- llr >= -logit(0.01) (the Bayes threshold at P_target
0.01) after a linear calibration fit on the pooled dev scores of that system -- the
false-accept and miss rates. When no dev score reaches that threshold, the point at
P_target 0.05 is reported instead (and the table says so).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speakerid.data.datadir import read_data_dir  # noqa: E402
from speakerid.scoring.calibrate import fit_calibration  # noqa: E402
from speakerid.scoring.embeddings import load_embeddings, lookup_ids, save_embeddings  # noqa: E402
from speakerid.scoring.metrics import bayes_threshold, compute_metrics  # noqa: E402
from speakerid.scoring.norm import normalise_scores  # noqa: E402
from speakerid.scoring.trials import read_trials  # noqa: E402


def resemblyzer_embeddings(wav: dict[str, str], cache: Path) -> tuple[list[str], np.ndarray]:
    """Resemblyzer utterance embeddings of every utterance (cached in ``cache``)."""
    if cache.exists():
        ids, emb = load_embeddings(cache)
        if set(ids) >= set(wav):
            return ids, emb
    from resemblyzer import VoiceEncoder, preprocess_wav
    from tqdm import tqdm

    enc = VoiceEncoder("cpu", verbose=False)
    ids = sorted(wav)
    out = []
    for u in tqdm(ids, desc="resemblyzer", mininterval=10):
        w = preprocess_wav(Path(wav[u]))
        if w.size < 1600:  # VAD left (almost) nothing: embed the raw resampled audio
            import librosa

            w, _ = librosa.load(wav[u], sr=16000)
        out.append(enc.embed_utterance(w))
    emb = np.stack(out).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_embeddings(cache, ids, emb)
    return ids, emb


def unit_vectors(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def score(ids: list[str], emb: np.ndarray, trials: list, cohort: np.ndarray | None, method: str = "asnorm",
          top_k: int = 300) -> np.ndarray:
    """Cosine scores of the trials, normalised by ``method`` (``asnorm``, ``csls``) against ``cohort`` when given."""
    emb = unit_vectors(emb.astype(np.float32))
    e = lookup_ids(ids, np.array([t[0] for t in trials]))
    t = lookup_ids(ids, np.array([t[1] for t in trials]))
    s = np.einsum("ij,ij->i", emb[e], emb[t]).astype(np.float64)
    if cohort is not None:
        s = normalise_scores(s, emb, emb, e, t, unit_vectors(cohort.astype(np.float32)), method, top_k)
    return s


def rates(llr: np.ndarray, lab: np.ndarray, thr: float) -> tuple[float, float]:
    """(false-accept rate, miss rate) of ``llr >= thr``."""
    acc = llr >= thr
    return float(acc[~lab].mean()) if (~lab).any() else float("nan"), float((~acc[lab]).mean()) if lab.any() else float("nan")


def evaluate(name: str, s: np.ndarray, lab: np.ndarray, corpus: np.ndarray) -> dict:
    cal = fit_calibration(s, lab)
    llr = cal.apply(s)
    p_op = 0.01 if (llr >= bayes_threshold(0.01)).any() else 0.05
    thr = bayes_threshold(p_op)
    out = {"calibration": {"a": cal.a, "b": cal.b}, "operating_p_target": p_op, "corpora": {}}
    for c in ["pooled", *sorted(set(corpus))]:
        m = slice(None) if c == "pooled" else corpus == c
        met = compute_metrics(s[m], lab[m], p_targets=(0.01, 0.05))
        fa, miss = rates(llr[m], lab[m], thr)
        out["corpora"][c] = {
            "eer": met.eer, "min_dcf_0.01": met.min_dcf[0.01][0], "min_dcf_0.05": met.min_dcf[0.05][0],
            "fa": fa, "miss": miss, "n_target": int(lab[m].sum()), "n_nontarget": int((~lab[m]).sum()),
        }
    return out


def table(results: dict[str, dict]) -> str:
    names = list(results)
    corpora = list(next(iter(results.values()))["corpora"])
    lines = ["| corpus | trials (tgt/non) | " + " | ".join(f"{n} EER | {n} minDCF0.01" for n in names) + " |"]
    lines.append("|" + "---|" * (2 + 2 * len(names)))
    for c in corpora:
        r0 = results[names[0]]["corpora"][c]
        cells = [f"{results[n]['corpora'][c]['eer']*100:.2f}% | {results[n]['corpora'][c]['min_dcf_0.01']:.3f}" for n in names]
        lines.append(f"| {c} | {r0['n_target']}/{r0['n_nontarget']} | " + " | ".join(cells) + " |")
    lines += ["", "Default operating point (calibrated on the pooled dev scores, accept when llr >= -logit(P_target)):", ""]
    lines.append("| corpus | " + " | ".join(f"{n} FA | {n} miss" for n in names) + " |")
    lines.append("|" + "---|" * (1 + 2 * len(names)))
    for c in corpora:
        cells = [f"{results[n]['corpora'][c]['fa']*100:.2f}% | {results[n]['corpora'][c]['miss']*100:.2f}%" for n in names]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {n}: operating point P_target {results[n]['operating_p_target']:g}, calibration llr = "
              f"{results[n]['calibration']['a']:.3f} * score + {results[n]['calibration']['b']:.3f}" for n in names]
    return "\n".join(lines) + "\n"


def load_systems(specs: list[str], data: Path, cache: Path, with_resemblyzer: bool) -> dict[str, tuple[list[str], np.ndarray]]:
    """``NAME=EMB`` embeddings (``speakerid extract`` outputs), plus Resemblyzer's of ``data``'s wav.scp."""
    systems: dict[str, tuple[list[str], np.ndarray]] = {}
    for spec in specs:
        name, path = spec.split("=", 1)
        ids, emb = load_embeddings(path)
        systems[name] = (list(ids), emb)
    if with_resemblyzer:
        systems["resemblyzer"] = resemblyzer_embeddings(dict(read_data_dir(data).wav), cache)
    return systems


def add_dev_args(p: argparse.ArgumentParser, cache: str) -> None:
    """The options both dev-split benchmarks share (this one and bench_default_model.py)."""
    p.add_argument("--data", type=Path, required=True, help="dev data dir with wav.scp and trials")
    p.add_argument("--system", action="append", default=[], metavar="NAME=EMB", help="embeddings of a system")
    p.add_argument("--cohort", action="append", default=[], metavar="NAME=NPZ", help="AS-norm cohort of a system")
    p.add_argument("--resemblyzer-cache", type=Path, default=Path(cache))
    p.add_argument("--no-resemblyzer", action="store_true")
    p.add_argument("--out", type=Path, help="markdown table (and the .json beside it)")


def dev_trials(data: Path) -> tuple[list[tuple[str, str, bool]], np.ndarray, np.ndarray]:
    """(trials, labels, corpus of each trial) of a dev data dir's ``trials``."""
    trials = [(e, t, bool(lab)) for e, t, lab in read_trials(data / "trials")]
    return trials, np.array([t[2] for t in trials]), np.array([t[0].split("_", 1)[0] for t in trials])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dev_args(p, "/tmp/speakerid_bench_starter/resemblyzer.npz")
    a = p.parse_args(argv)
    t0 = time.time()
    trials, lab, corpus = dev_trials(a.data)
    systems = load_systems(a.system, a.data, a.resemblyzer_cache, not a.no_resemblyzer)
    cohorts = dict(spec.split("=", 1) for spec in a.cohort)
    results: dict[str, dict] = {}
    for name, (ids, emb) in systems.items():
        results[name] = evaluate(name, score(ids, emb, trials, None), lab, corpus)
        if name in cohorts:
            coh = np.load(cohorts[name])["embeddings"]
            results[f"{name}+asnorm"] = evaluate(name, score(ids, emb, trials, coh), lab, corpus)
    text = table(results)
    text += f"\n_{len(trials)} trials of {a.data}; {time.time() - t0:.0f} s wall._\n"
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text("# `python benchmarks/" + Path(__file__).name + " " + " ".join(sys.argv[1:] if argv is None else argv) + "`\n\n" + text)
        a.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
