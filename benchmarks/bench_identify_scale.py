"""Identify among N enrolled speakers, N = 1e3 .. 1e6: DB build time (batch), identify and verify
latency (API; CLI at one N), peak memory, beside a numpy brute force over the same matrix.

Each DB holds N-1 random unit vectors (192-d, the starter's dimension) plus one planted genuine
speaker: the starter's embedding of ``speakerid/pretrained/examples/speaker_a_1.flac``; the probe
is its embedding of ``speaker_a_test.flac`` (the same speaker, another recording). The starter's
fingerprint, AS-norm cohort and calibration are used, so decisions are the real ones.

Every measurement runs in its own subprocess (peak memory = that process's ``ru_maxrss``):

- ``build``: ``SpeakerDB.add_embeddings`` of all N rows (one transaction; SQLite + index);
- ``query``: ``SpeakerDB.identify_embedding`` (top 5, through the index) and
  ``verify_embedding`` medians; peak RSS and its rise over the process before the DB was
  opened; then, in the same process and run, the peer: ``M @ t`` + ``np.argpartition`` top 5
  over the same float32 matrix loaded into RAM;
- ``before`` (``--before DIR``: a checkout of the code before the index, e.g. a clone of main):
  the same identify / verify through that code (its per-call read of every row), and at
  N <= ``--before-build-max`` its per-speaker build;
- ``cli`` (``--cli-n``): ``speakerid identify --model starter`` on the probe clip, wall time
  of the whole command (torch import, model load, embedding, search), this code and ``--before``.

    python benchmarks/bench_identify_scale.py --sizes 1000 10000 100000 --before /tmp/main19 --cli-n 100000
    python benchmarks/bench_identify_scale.py --sizes 1000000
    python benchmarks/bench_identify_scale.py --report     # results_identify_scale.json -> .txt

Results are appended to ``benchmarks/results_identify_scale.json`` (one record per step) and
``--report`` writes the table. Run the timed part under ``flock -x /tmp/cpu.lock`` on a shared
machine; threads: ``--threads`` (default 1) for BLAS/OpenMP in every child; glibc malloc.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results_identify_scale.json"
EXAMPLES = ROOT / "speakerid" / "pretrained" / "examples"
ENROL_CLIP, PROBE_CLIP = EXAMPLES / "speaker_a_1.flac", EXAMPLES / "speaker_a_test.flac"
GENUINE = "genuine"
TOP_K = 5
P_TARGET = 0.5  # the demo's setting: the starter's calibrated LLRs rarely reach the 0.01 threshold


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _median_ms(fn, reps: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times), out


# --------------------------------------------------------------------------- children
def _prepare(work: Path) -> dict:
    """The starter's fingerprint and the genuine speaker's enrolment and probe embeddings (torch)."""
    from speakerid.enroll.model import SpeakerModel
    from speakerid.experiment import resolve_model_source

    model = SpeakerModel.from_experiment("starter")
    emb = model.embed([ENROL_CLIP, PROBE_CLIP])
    np.save(work / "genuine.npy", emb)
    prep = {"fingerprint": model.fingerprint, "starter": str(resolve_model_source("starter")), "dim": int(emb.shape[1])}
    (work / "prep.json").write_text(json.dumps(prep))
    return prep


def _light_model(work: Path, code_root: Path):
    """A SpeakerModel of the starter's fingerprint, cohort and calibration, without torch; its
    ``embed`` answers the probe embedding (so the ``before`` code's identify(path) runs too)."""
    try:
        from speakerid.enroll.model import SpeakerModel
        from speakerid.scoring.backend import unit_vectors
    except ModuleNotFoundError:  # the code before the index (--before): flat modules
        from speakerid.enroll_scoring import _unit as unit_vectors

        from speakerid.enroll import SpeakerModel
    from speakerid.scoring.calibrate import Calibration

    prep = json.loads((work / "prep.json").read_text())
    starter = Path(prep["starter"])
    with np.load(starter / "cohort.npz", allow_pickle=False) as z:
        cohort = unit_vectors(z["embeddings"].astype(np.float32))
    probe = np.load(work / "genuine.npy")[1:2]
    model = SpeakerModel(None, prep["fingerprint"], calibration=Calibration.load(starter / "calibration.json"),
                         source="starter", cohort=cohort)
    model.embed = lambda paths: probe
    return model, probe[0]


def _vectors(n: int, dim: int, genuine: np.ndarray, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb[n // 2] = genuine
    names = [f"s{i:07d}" for i in range(n)]
    names[n // 2] = GENUINE
    return names, emb


def child_build(work: Path, n: int) -> dict:
    from speakerid.enroll.speaker_db import SpeakerDB

    model, _ = _light_model(work, ROOT)
    names, emb = _vectors(n, int(model.cohort.shape[1]), np.load(work / "genuine.npy")[0])
    db_path = work / f"n{n}.db"
    for p in (db_path, Path(f"{db_path}.index")):
        p.unlink(missing_ok=True)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    with SpeakerDB(db_path, model) as db:
        db.add_embeddings(names, emb)
    build_s = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = usage.ru_utime + usage.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    return {"build_s": build_s, "cpu_s": cpu_s, "db_mb": db_path.stat().st_size / 2**20,
            "index_mb": os.stat(f"{db_path}.index").st_blocks * 512 / 2**20, "peak_mb": _rss_mb()}


def child_query(work: Path, n: int, reps: int) -> dict:
    from speakerid.enroll.speaker_db import SpeakerDB

    model, probe = _light_model(work, ROOT)
    base = _current_rss_mb()
    # exact: the matrix product (with faiss installed, the default "auto" would rank through the
    # ANN codes from 50,000 speakers; bench_identify_ann.py measures that)
    db = SpeakerDB(work / f"n{n}.db", model, p_target=P_TARGET, search="exact")
    t0 = time.perf_counter()
    first = db.identify_embedding(probe, top_k=TOP_K)
    first_ms = 1000 * (time.perf_counter() - t0)
    ident_ms, res = _median_ms(lambda: db.identify_embedding(probe, top_k=TOP_K), reps)
    verify_ms, ver = _median_ms(lambda: db.verify_embedding(GENUINE, probe), max(reps, 20))
    peak = _rss_mb()
    matrix_mb = n * probe.size * 4 / 2**20
    # the peer, same process and run: the same float32 matrix in RAM, one product, a partition
    m = np.array(db._index.matrix)
    t = probe.astype(np.float32)

    def brute() -> np.ndarray:
        s = m @ t
        top = np.argpartition(-s, TOP_K - 1)[:TOP_K]
        return top[np.argsort(-s[top])]

    peer_ms, top = _median_ms(brute, reps)
    return {"identify_ms": ident_ms, "identify_first_ms": first_ms, "verify_ms": verify_ms, "peer_ms": peer_ms,
            "ratio": ident_ms / peer_ms, "answer": res.decision, "top": res.candidates[0].speaker, "first": first.decision, "verify_accept": ver.accept,
            "peer_top": db.store.names_of(db.store.reader(), [int(db._index.rowids[top[0]])])[int(db._index.rowids[top[0]])],
            "peak_mb": peak, "base_mb": base, "rise_mb": peak - base, "matrix_mb": matrix_mb,
            "peak_over_matrix": peak / matrix_mb, "rise_over_matrix": (peak - base) / matrix_mb, "reps": reps}


def child_before(work: Path, n: int, reps: int, build_max: int) -> dict:
    """Identify / verify through the code on PYTHONPATH (the code before the index)."""
    from speakerid.enroll import SpeakerDB  # the public name, in both layouts

    model, probe = _light_model(work, ROOT)
    out = {}
    if n <= build_max:
        names, emb = _vectors(n, probe.size, np.load(work / "genuine.npy")[0])
        db_path = work / f"before_n{n}.db"
        db_path.unlink(missing_ok=True)
        rows = iter(emb)
        model.embed = lambda paths: next(rows)[None, :]
        t0 = time.perf_counter()
        with SpeakerDB(db_path, model) as db:
            for name in names:
                db.enroll(name, ["x.wav"])
        out["build_s"] = time.perf_counter() - t0
        model.embed = lambda paths: probe[None, :]
    base = _current_rss_mb()
    db = SpeakerDB(work / f"n{n}.db", model, p_target=P_TARGET)
    ident_ms, res = _median_ms(lambda: db.identify("probe.wav", top_k=TOP_K), reps)
    verify_ms, ver = _median_ms(lambda: db.verify(GENUINE, "probe.wav"), max(reps, 20))
    out.update({"identify_ms": ident_ms, "verify_ms": verify_ms, "answer": res.decision, "top": res.candidates[0].speaker,
                "verify_accept": ver.accept, "peak_mb": _rss_mb(), "base_mb": base, "reps": reps})
    return out


def _has_search_option() -> bool:
    """Whether the code on PYTHONPATH has ``identify --search`` (the ANN option; not the code before the index)."""
    try:
        import speakerid.enroll.ann  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def child_cli(work: Path, n: int, reps: int) -> dict:
    argv = [sys.executable, "-m", "speakerid", "identify", "--model", "starter", "--db", str(work / f"n{n}.db"),
            "--top-k", str(TOP_K), "--p-target", str(P_TARGET), "--json", str(PROBE_CLIP)]
    if _has_search_option():
        argv[-1:-1] = ["--search", "exact"]  # the matrix product, as the query step (auto: a graph build at first)
    times, peaks, answer = [], [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        # cwd=work: `python -m` puts the working directory first on sys.path, so from the repo root
        # it would run this checkout whatever PYTHONPATH names
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work)
        _, status, usage = os.wait4(proc.pid, 0)
        times.append(time.perf_counter() - t0)
        out, err = proc.stdout.read(), proc.stderr.read()
        if status != 0:
            raise SystemExit(f"identify CLI failed: {err.strip()[-500:]}")
        answer = json.loads(out)["candidates"][0]["speaker"] + "/" + json.loads(out)["decision"]
        peaks.append(usage.ru_maxrss / 1024)
    return {"cli_s": statistics.median(times), "cli_peak_mb": max(peaks), "answer": answer, "reps": reps}


# --------------------------------------------------------------------------- driver
def _run_child(args: argparse.Namespace, what: str, n: int, code_root: Path, **extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code_root), SPEAKERID_THREADS=str(args.threads),
               OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", what, "--n", str(n), "--work", str(args.work),
           "--reps", str(args.reps if n < 10**6 else max(5, args.reps // 3)),
           "--before-build-max", str(args.before_build_max)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{what} n={n} failed:\n{proc.stderr[-3000:]}")
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    rec.update({"what": what, "n": n, "code": str(code_root), "threads": args.threads, "lock": args.lock,
                "time": time.strftime("%Y-%m-%d %H:%M:%S"), **extra})
    print(json.dumps(rec), flush=True)
    if what == "prepare":
        return rec
    with open(args.results, "a") as f:
        f.write(json.dumps(rec) + "\n")
    return rec


def report(results: Path) -> str:
    recs = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    # one table from one way of holding the machine: the latest record's (a quiet run's rows are
    # not set beside a busy run's); the json keeps every record
    held = recs[-1].get("lock", "flock -x") if recs else None
    recs = [r for r in recs if r.get("lock", "flock -x") == held]
    last = {}
    for r in recs:  # the latest record of each (what, n, code)
        last[(r["what"], r["n"], "before" if r["code"] != str(ROOT) and r["what"] in ("before", "cli") else "new")] = r
    sizes = sorted({n for (_, n, _) in last})
    lines = ["# python benchmarks/bench_identify_scale.py (see its docstring); medians; "
             f"threads {recs[-1]['threads'] if recs else '?'} per process; glibc malloc; machine held by: "
             + ", ".join(sorted({str(r.get('lock', 'flock -x')) for r in last.values()})),
             "", "| N | build (batch) | DB / index MB | identify API | numpy brute force | ratio | identify first call | "
             "verify API | peak MB (rise over start) | peak / matrix (rise / matrix) | top / answer |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        b, q = last.get(("build", n, "new")), last.get(("query", n, "new"))
        if not (b and q):
            continue
        cpu = f" ({b['cpu_s']:.0f} s CPU)" if "cpu_s" in b else ""
        lines.append(f"| {n:,} | {b['build_s']:.2f} s{cpu} | {b['db_mb']:.0f} / {b['index_mb']:.0f} | {q['identify_ms']:.2f} ms | "
                     f"{q['peer_ms']:.2f} ms | {q['ratio']:.2f}x | {q['identify_first_ms']:.1f} ms | {q['verify_ms']:.2f} ms | "
                     f"{q['peak_mb']:.0f} ({q['rise_mb']:.0f}) | {q['peak_over_matrix']:.2f}x ({q['rise_over_matrix']:.2f}x) | "
                     f"{q['top']}/{q['answer']} |")
    before = [(n, last[("before", n, "before")]) for n in sizes if ("before", n, "before") in last]
    if before:
        lines += ["", "Before (the code without the index, same DBs, same run of this script):", "",
                  "| N | build (one transaction per speaker) | identify API | verify API | peak MB | identify speed-up | top / answer |",
                  "|---|---|---|---|---|---|---|"]
        for n, r in before:
            q = last.get(("query", n, "new"))
            build = f"{r['build_s']:.1f} s" if "build_s" in r else "-"
            up = f"{r['identify_ms'] / q['identify_ms']:.0f}x" if q else "-"
            lines.append(f"| {n:,} | {build} | {r['identify_ms']:.1f} ms | {r['verify_ms']:.2f} ms | {r['peak_mb']:.0f} | {up} | {r['top']}/{r['answer']} |")
    clis = [(k, r) for k, r in last.items() if k[0] == "cli"]
    if clis:
        lines += ["", "`speakerid identify --model starter` on the probe clip, whole command (torch import, model "
                  "load, embedding, search):", "", "| N | code | wall time | peak MB | top / answer |", "|---|---|---|---|---|"]
        for (_, n, code), r in sorted(clis, key=lambda kv: (kv[0][1], kv[0][2] != "new")):
            lines.append(f"| {n:,} | {'this' if code == 'new' else 'before'} | {r['cli_s']:.2f} s | {r['cli_peak_mb']:.0f} | {r['answer']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 100000])
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_identify_scale"))
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--before", type=Path, help="root of the code before the index (PYTHONPATH for 'before' runs)")
    p.add_argument("--before-reps", type=int, default=3)
    p.add_argument("--before-build-max", type=int, default=1000)
    p.add_argument("--cli-n", type=int, nargs="*", default=[])
    p.add_argument("--cli-reps", type=int, default=3)
    p.add_argument("--steps", nargs="*", default=["build", "query", "before", "cli"],
                   help="which steps to run (default all; build is needed once per --work and N)")
    p.add_argument("--lock", default="flock -x", help="how the machine was held, recorded with the results")
    p.add_argument("--report", action="store_true")
    p.add_argument("--child", choices=["prepare", "build", "query", "before", "cli"], help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        out = {"prepare": lambda: _prepare(a.work), "build": lambda: child_build(a.work, a.n),
               "query": lambda: child_query(a.work, a.n, a.reps),
               "before": lambda: child_before(a.work, a.n, a.reps, a.before_build_max),
               "cli": lambda: child_cli(a.work, a.n, a.reps)}[a.child]()
        print(json.dumps(out))
        return 0
    if a.report:
        text = report(a.results)
        a.results.with_suffix(".txt").write_text(text)
        print(text)
        return 0
    a.work.mkdir(parents=True, exist_ok=True)
    if not (a.work / "prep.json").exists():
        _run_child(a, "prepare", 0, ROOT)
    for n in a.sizes:
        if "build" in a.steps:
            _run_child(a, "build", n, ROOT)
        if "query" in a.steps:
            _run_child(a, "query", n, ROOT)
        if a.before and "before" in a.steps:
            b = argparse.Namespace(**{**vars(a), "reps": a.before_reps})
            _run_child(b, "before", n, a.before)
        if n in a.cli_n and "cli" in a.steps:
            c = argparse.Namespace(**{**vars(a), "reps": a.cli_reps})
            _run_child(c, "cli", n, ROOT)
            if a.before:
                _run_child(argparse.Namespace(**{**vars(c), "reps": 1}), "cli", n, a.before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
