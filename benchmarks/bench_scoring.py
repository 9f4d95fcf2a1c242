"""Scoring benchmarks (run on demand; results in benchmarks/results_scoring.txt).

Modes:
  metrics  EER + minDCF@0.01 + minDCF@0.05 on 10^7 random trials against ONE np.argsort of the
           same scores (the floor for exact metrics: they need the sorted order), and the usual
           route (sklearn roc_curve, then EER and one minDCF), all in the same run; medians of
           --repeats interleaved repeats, printed as times and ratios to argsort.
  scoring  `speakerid score` end to end (read trial list + embeddings, score, write) on 10^6
           trials over 20,000 embeddings of dimension 256: cosine, and AS-norm with a 5,000
           utterance cohort. Each run is a separate child process that reports its wall time and
           its peak resident memory (resource.getrusage ru_maxrss).

  python benchmarks/bench_scoring.py metrics [--n 10000000] [--repeats 3]
  python benchmarks/bench_scoring.py scoring [--trials 1000000] [--embeddings 20000] [--dim 256] [--cohort 5000]
  python benchmarks/bench_scoring.py all
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from speakerid.scoring.metrics import compute_metrics


def _median_times(fns: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Run every function once per repeat, interleaved (load swings hit all alike).

    Returns the median (wall, CPU) seconds of each. All timed code is single-threaded, so on
    an idle machine wall == CPU; on a shared one the CPU time (time.process_time) is the
    fairer figure, as it leaves out the time the process waited for a core.
    """
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append((time.perf_counter() - w0, time.process_time() - c0))
    return {k: (float(np.median([w for w, _ in v])), float(np.median([c for _, c in v]))) for k, v in times.items()}


def sklearn_route(scores: np.ndarray, labels: np.ndarray, p_target: float = 0.01) -> tuple[float, float]:
    """The common recipe: roc_curve, EER by linear interpolation at the FPR/FNR crossing, minDCF."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    i = int(np.argmax(fpr >= fnr))  # first point past the crossing (fpr rises, fnr falls)
    g0, g1 = fnr[i - 1] - fpr[i - 1], fpr[i] - fnr[i]
    a = g0 / (g0 + g1)
    eer = fpr[i - 1] + a * (fpr[i] - fpr[i - 1])
    dcf = np.min(p_target * fnr + (1 - p_target) * fpr) / min(p_target, 1 - p_target)
    return float(eer), float(dcf)


def bench_metrics(n: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    labels = rng.random(n) < 0.5
    base = rng.standard_normal(n) + 2.0 * labels
    cases = {
        # cosine scores of float32 embeddings: float32 values (one int64 packed sort)
        "cosine-like float32 scores": np.tanh(0.3 * base).astype(np.float32),
        # float64 scores of both signs (AS-norm scores, LLRs, scores read from text): two-part packing
        "float64 scores (AS-norm / LLR-like)": 3.0 * base,
    }
    print(f"== metrics: EER + minDCF@0.01 + minDCF@0.05 on {n:,} trials ({labels.sum():,} targets); "
          f"medians of {repeats} interleaved repeats; ratio = time / time of np.argsort(scores)")
    for i, (name, s) in enumerate(cases.items()):
        fns = {
            "np.argsort(scores)": lambda s=s: np.argsort(s),
            "compute_metrics (all three)": lambda s=s: compute_metrics(s, labels),
            "  same, plain argsort route": lambda s=s: compute_metrics(s, labels, method="argsort"),
        }
        if i == 0:
            fns["sklearn roc_curve + EER + 1 minDCF"] = lambda s=s: sklearn_route(s, labels)
        t = _median_times(fns, repeats)
        floor_w, floor_c = t["np.argsort(scores)"]
        print(f"-- {name}")
        for k, (w, c) in t.items():
            print(f"   {k:<36} wall {w:6.3f} s ({w / floor_w:4.2f}x)   cpu {c:6.3f} s ({c / floor_c:4.2f}x)")
        m = compute_metrics(s, labels)
        line = f"   EER {100 * m.eer:.4f}%  minDCF@0.01 {m.min_dcf[0.01][0]:.5f}  minDCF@0.05 {m.min_dcf[0.05][0]:.5f}"
        if i == 0:
            eer_sk, dcf_sk = sklearn_route(s, labels)
            line += f"  | |EER - sklearn| {abs(m.eer - eer_sk):.1e}  |minDCF@0.01 - sklearn| {abs(m.min_dcf[0.01][0] - dcf_sk):.1e}"
        print(line)


# --------------------------------------------------------------------------------------
# scoring at scale


def _make_scoring_inputs(d: Path, n_trials: int, n_emb: int, dim: int, n_cohort: int) -> None:
    from speakerid.scoring.embeddings import save_embeddings

    rng = np.random.default_rng(0)
    n_spk = max(2, n_emb // 20)
    spk = rng.integers(0, n_spk, n_emb)
    ids = np.array([f"id{s:05d}/vid{i:07d}/{i % 100:05d}" for i, s in enumerate(spk)])
    centres = rng.standard_normal((n_spk, dim)).astype(np.float32)
    emb = centres[spk] + rng.standard_normal((n_emb, dim)).astype(np.float32)
    save_embeddings(d / "emb.npz", ids.tolist(), emb)
    cohort = rng.standard_normal((n_cohort, dim)).astype(np.float32)
    save_embeddings(d / "cohort.npz", [f"c{i}" for i in range(n_cohort)], cohort)
    e = rng.integers(0, n_emb, n_trials)
    t = rng.integers(0, n_emb, n_trials)
    lab = (spk[e] == spk[t]).astype(int)
    with open(d / "trials.txt", "w") as f:
        f.writelines(f"{x} {a}.wav {b}.wav\n" for x, a, b in zip(lab.tolist(), ids[e].tolist(), ids[t].tolist()))


def _scoring_child(d: Path, norm: str, top_k: int) -> None:
    """One `speakerid score` run in this (fresh) process; prints a JSON line."""
    from speakerid.scoring.trial_scores import score_files

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    score_files(d / "trials.txt", d / "emb.npz", d / f"scores_{norm}.txt",
                cohort=d / "cohort.npz" if norm != "none" else None, scoring=norm, top_k=top_k)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    # the vectorised part alone (ids -> rows, normalise, dot products, norm), files already read
    from speakerid.scoring.trial_scores import EmbeddingTable, score_trials
    from speakerid.scoring.embeddings import load_embeddings
    from speakerid.scoring.trials import read_trial_list

    trials = read_trial_list(d / "trials.txt")
    table = EmbeddingTable.load(d / "emb.npz")
    cohort = load_embeddings(d / "cohort.npz")[1] if norm != "none" else None
    t0 = time.perf_counter()
    score_trials(trials.enroll, trials.test, table, cohort=cohort, scoring=norm, top_k=top_k)
    compute = time.perf_counter() - t0
    print(json.dumps({"norm": norm, "wall_s": wall, "compute_s": compute, "peak_rss_mib": peak / 1024,
                      "after_imports_mib": base / 1024}))


def bench_scoring(n_trials: int, n_emb: int, dim: int, n_cohort: int, top_k: int) -> None:
    print(f"== scoring: {n_trials:,} trials over {n_emb:,} embeddings of dim {dim}; cohort {n_cohort:,}, "
          f"AS-norm top-k {top_k} (`score_files` end to end: read, score, write; one child process each)")
    with tempfile.TemporaryDirectory(prefix="bench_scoring_") as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        # inputs are made in a child too: Linux carries a parent's peak RSS over into the
        # ru_maxrss of the children it spawns, so this process must stay small
        subprocess.run(
            [sys.executable, __file__, "_make", "--dir", str(d), "--trials", str(n_trials),
             "--embeddings", str(n_emb), "--dim", str(dim), "--cohort", str(n_cohort)],
            check=True,
        )
        print(f"   inputs written in {time.perf_counter() - t0:.1f} s "
              f"(trial list {os.path.getsize(d / 'trials.txt') / 2**20:.0f} MiB)")
        for norm in ("none", "asnorm"):
            out = subprocess.run(
                [sys.executable, __file__, "_child", "--dir", str(d), "--norm", norm, "--top-k", str(top_k)],
                check=True, capture_output=True, text=True,
            ).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            label = "cosine" if norm == "none" else f"AS-norm (top-{top_k})"
            print(f"   {label:<18} wall {r['wall_s']:6.2f} s (scoring alone, files read: {r['compute_s']:5.2f} s)   "
                  f"peak RSS {r['peak_rss_mib']:5.0f} MiB "
                  f"(after imports {r['after_imports_mib']:.0f} MiB)   limit 4096 MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["metrics", "scoring", "all", "_child", "_make"])
    ap.add_argument("--n", type=int, default=10_000_000, help="trials for the metrics benchmark")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trials", type=int, default=1_000_000)
    ap.add_argument("--embeddings", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--cohort", type=int, default=5_000)
    ap.add_argument("--top-k", type=int, default=300)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--norm", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode == "_make":
        _make_scoring_inputs(Path(args.dir), args.trials, args.embeddings, args.dim, args.cohort)
        return
    if args.mode == "_child":
        _scoring_child(Path(args.dir), args.norm, args.top_k)
        return
    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')}  "
          f"command: python benchmarks/bench_scoring.py {' '.join(sys.argv[1:])}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"numpy {np.__version__}, load average {os.getloadavg()[0]:.2f}")
    if args.mode in ("scoring", "all"):  # first, while this process is still small
        bench_scoring(args.trials, args.embeddings, args.dim, args.cohort, args.top_k)
    if args.mode in ("metrics", "all"):
        bench_metrics(args.n, max(3, args.repeats))


if __name__ == "__main__":
    main()
