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


def _median_times(fns: dict, repeats: int) -> dict[str, float]:
    """Run every function once per repeat, interleaved (load swings hit all alike); medians."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


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
        # cosine scores of float32 embeddings: float32 values (packed 32-bit keys)
        "cosine-like float32 scores": np.tanh(0.3 * base).astype(np.float32),
        # float64 scores inside (-1, 1), e.g. cosine scores read back from a text file (packed 64-bit keys)
        "float64 scores in (-1, 1)": np.tanh(0.3 * base),
        # wide-range float64 (AS-norm / LLR-like): no lossless packing, sorted-merge fallback
        "float64 wide-range scores": 3.0 * base,
    }
    print(f"== metrics: EER + minDCF@0.01 + minDCF@0.05 on {n:,} trials ({labels.sum():,} targets), "
          f"median of {repeats} interleaved repeats")
    for i, (name, s) in enumerate(cases.items()):
        fns = {
            "np.argsort(scores)": lambda s=s: np.argsort(s),
            "compute_metrics (all three)": lambda s=s: compute_metrics(s, labels),
        }
        if i == 0:
            fns["sklearn roc_curve + EER + 1 minDCF"] = lambda s=s: sklearn_route(s, labels)
        t = _median_times(fns, repeats)
        floor = t["np.argsort(scores)"]
        print(f"-- {name}")
        for k, v in t.items():
            print(f"   {k:<36} {v:7.3f} s   ratio to argsort {v / floor:5.2f}x")
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
    save_embeddings(d / "cohort.npz", [f"c{i}" for i in range(n_cohort)], rng.standard_normal((n_cohort, dim)).astype(np.float32))
    e = rng.integers(0, n_emb, n_trials)
    t = rng.integers(0, n_emb, n_trials)
    lab = (spk[e] == spk[t]).astype(int)
    with open(d / "trials.txt", "w") as f:
        f.writelines(f"{x} {a}.wav {b}.wav\n" for x, a, b in zip(lab.tolist(), ids[e].tolist(), ids[t].tolist()))


def _scoring_child(d: Path, norm: str, top_k: int) -> None:
    """One `speakerid score` run in this (fresh) process; prints a JSON line."""
    from speakerid.scoring.cosine import score_files

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    score_files(d / "trials.txt", d / "emb.npz", d / f"scores_{norm}.txt",
                cohort=d / "cohort.npz" if norm != "none" else None, norm=norm, top_k=top_k)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"norm": norm, "wall_s": wall, "peak_rss_mib": peak / 1024, "after_imports_mib": base / 1024}))


def bench_scoring(n_trials: int, n_emb: int, dim: int, n_cohort: int, top_k: int) -> None:
    print(f"== scoring: {n_trials:,} trials over {n_emb:,} embeddings of dim {dim}; cohort {n_cohort:,}, "
          f"AS-norm top-k {top_k} (`score_files` end to end: read, score, write; one child process each)")
    with tempfile.TemporaryDirectory(prefix="bench_scoring_") as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        _make_scoring_inputs(d, n_trials, n_emb, dim, n_cohort)
        print(f"   inputs written in {time.perf_counter() - t0:.1f} s "
              f"(trial list {os.path.getsize(d / 'trials.txt') / 2**20:.0f} MiB)")
        for norm in ("none", "asnorm"):
            out = subprocess.run(
                [sys.executable, __file__, "_child", "--dir", str(d), "--norm", norm, "--top-k", str(top_k)],
                check=True, capture_output=True, text=True,
            ).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            label = "cosine" if norm == "none" else f"AS-norm (top-{top_k})"
            print(f"   {label:<18} wall {r['wall_s']:6.2f} s   peak RSS {r['peak_rss_mib']:7.0f} MiB "
                  f"(after imports {r['after_imports_mib']:.0f} MiB)   limit 4096 MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["metrics", "scoring", "all", "_child"])
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
    if args.mode == "_child":
        _scoring_child(Path(args.dir), args.norm, args.top_k)
        return
    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')}  "
          f"command: python benchmarks/bench_scoring.py {' '.join(sys.argv[1:])}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"numpy {np.__version__}, load average {os.getloadavg()[0]:.2f}")
    if args.mode in ("metrics", "all"):
        bench_metrics(args.n, max(3, args.repeats))
    if args.mode in ("scoring", "all"):
        bench_scoring(args.trials, args.embeddings, args.dim, args.cohort, args.top_k)


if __name__ == "__main__":
    main()
