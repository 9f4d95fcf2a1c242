"""Fixed work beside busy processes: the thread policy before (torch defaults) and after.

Work (each timed inside its own process, imports excluded):
  * extract: ``extract_embeddings`` of 200 utterances of ../shared/data/speech (the first 200
    audio files in sorted path order) with a randomly initialised encoder of the mini config;
  * train: 30 training steps of recipes/mini/conf/ecapa_circle.yaml (6 epochs x 5 PK batches on
    a 40-speaker synthetic corpus, features computed on the fly).
Conditions: alone, beside 1 and beside 3 competing processes (2 torch threads each, a loop of
small matmuls/convolutions, torch defaults: the neighbours a shared server has).
Extraction runs the encoder by ``--backend`` (default ``auto``, speakerid's default: onnxruntime
on the CPU; ``torch``: eager); its graph is exported in the untimed warm-up run, into the work dir.
Before timing: the audio files are read once and each kind runs once, untimed (warm caches).
Policies: ``old`` = torch defaults (``SPEAKERID_THREADS=torch``: no thread setting, OpenMP's
default spin-waiting); ``new`` = speakerid's thread policy (threads = usable CPUs / worker
processes, idle OpenMP threads sleep); ``one`` = the same with one thread (``SPEAKERID_THREADS=1``,
what the training recipes set). Ratios = median time beside k / median time alone, same
policy, same run. Allocator: glibc malloc.

  python benchmarks/bench_contention.py [--repeats 1] [--policies old new one] [--backend auto|torch] [--out benchmarks/results_contention.txt]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "recipes" / "mini" / "conf" / "ecapa_circle.yaml"


def _child_env(policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.pop("SPEAKERID_THREADS", None)
    if policy == "old":
        env["SPEAKERID_THREADS"] = "torch"
    elif policy == "one":
        env["SPEAKERID_THREADS"] = "1"
    return env


# ------------------------------------------------------------------ children
def child_compete() -> None:
    from speakerid.data.jobs import die_with_parent  # before torch; SPEAKERID_THREADS=torch here: torch defaults

    die_with_parent()
    import torch

    torch.set_num_threads(2)
    a, w = torch.randn(64, 256), torch.randn(256, 256)
    x, k = torch.randn(4, 32, 400), torch.randn(32, 32, 5)
    while True:
        for _ in range(50):
            a = torch.tanh(a @ w) * 0.5
            torch.nn.functional.conv1d(x, k, padding=2)


def child_extract(work: Path, backend: str = "auto") -> float:
    import speakerid  # noqa: F401  (first: sets the OpenMP wait policy unless told not to)
    from speakerid.extract import extract_embeddings

    out = work / f"emb-{os.getpid()}"
    t = time.perf_counter()
    extract_embeddings(work / "exp", work / "extract_data", out, device="cpu", progress=False, backend=backend)
    return time.perf_counter() - t


def child_train(work: Path) -> float:
    import speakerid  # noqa: F401
    from speakerid.config import load_config
    from speakerid.train.trainer import train

    cfg = load_config(CONFIG, overrides=["epochs=6", "max_steps_per_epoch=5", "data.use_cached_features=false",
                                         "average_last=1", "keep_checkpoints=1"])
    t = time.perf_counter()
    train(cfg, work / "synth" / "train", work / f"exp-train-{os.getpid()}")
    return time.perf_counter() - t


# ------------------------------------------------------------------ setup
def prepare(work: Path, shared: Path) -> None:
    import torch

    from speakerid.config import load_config, save_config
    from speakerid.data.datadir import write_data_dir
    from speakerid.models import build_encoder

    wavs = sorted(p for p in shared.rglob("*") if p.suffix.lower() in (".wav", ".flac"))[:200]
    if len(wavs) < 200:
        raise SystemExit(f"{shared}: fewer than 200 audio files")
    for p in wavs:  # page cache warm before the first timed run (a cold first run is not "alone")
        p.read_bytes()
    wav = {f"u{i:03d}": str(p) for i, p in enumerate(wavs)}
    write_data_dir(work / "extract_data", wav, {u: u for u in wav})
    cfg = load_config(CONFIG)
    torch.manual_seed(0)
    (work / "exp").mkdir(parents=True, exist_ok=True)
    save_config(cfg, work / "exp" / "config.yaml")
    torch.save(build_encoder(cfg).state_dict(), work / "exp" / "model.pt")
    subprocess.run([sys.executable, str(REPO / "data_prep" / "synthetic.py"), str(work / "synth"), "--force",
                    "--speakers", "40", "--utts", "8", "--dev-speakers", "0"], check=True, capture_output=True)
    if not (work / "synth" / "train").is_dir():  # no split asked: the data dir is the output itself
        (work / "synth" / "train").symlink_to(work / "synth")


def timed(kind: str, policy: str, work: Path, competitors: int, backend: str = "auto") -> float:
    comps = [subprocess.Popen([sys.executable, __file__, "--child", "compete"], env=_child_env("old"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(competitors)]
    try:
        time.sleep(1.0 if comps else 0.0)  # let the neighbours start
        res = subprocess.run([sys.executable, __file__, "--child", kind, "--work", str(work), "--backend", backend],
                             env=_child_env(policy),
                             capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"{kind}/{policy} failed:\n{res.stderr[-3000:]}")
        return float(res.stdout.strip().splitlines()[-1])
    finally:
        for c in comps:
            c.kill()
            c.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", choices=["compete", "extract", "train"], help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--policies", nargs="+", default=["old", "new", "one"], choices=["old", "new", "one"])
    ap.add_argument("--kinds", nargs="+", default=["extract", "train"], choices=["extract", "train"])
    # speakerid.encoder_runtime.BACKENDS, named here: the children parse these arguments too, and
    # must import speakerid (its thread policy) before anything imports torch
    ap.add_argument("--backend", choices=["auto", "torch", "onnxruntime"], default="auto",
                    help="what runs the encoder in the extract kind (speakerid.encoder_runtime)")
    ap.add_argument("--competitors", nargs="+", type=int, default=[0, 1, 3])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data" / "speech")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results_contention.txt")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout still stops the competitors (finally)
    if a.child == "compete":
        child_compete()
        return
    if a.child:
        print(f"{child_extract(a.work, a.backend) if a.child == 'extract' else child_train(a.work):.4f}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["SPEAKERID_CACHE"] = str(work / "cache")  # the children's exported graphs
        prepare(work, a.shared)
        times: dict[str, list[float]] = {}
        for kind in a.kinds:  # one untimed run of each kind alone: caches and lazy imports warm
            timed(kind, "new", work, 0, a.backend)
        for kind in a.kinds:
            for policy in a.policies:
                for k in a.competitors:
                    key = f"{kind}/{policy}/beside{k}"
                    times[key] = [timed(kind, policy, work, k, a.backend) for _ in range(a.repeats)]
                    print(f"{key}: {statistics.median(times[key]):.2f} s", flush=True)
    lines = [f"# python benchmarks/bench_contention.py --repeats {a.repeats} --policies {' '.join(a.policies)} "
             f"--kinds {' '.join(a.kinds)} --backend {a.backend}  "
             f"({time.strftime('%Y-%m-%d %H:%M')} UTC, "
             f"{len(os.sched_getaffinity(0))} CPUs, glibc malloc)", "kind     policy  alone_s  beside1_s  ratio1  beside3_s  ratio3"]
    for kind in a.kinds:
        for policy in a.policies:
            med = {k: statistics.median(times[f"{kind}/{policy}/beside{k}"]) for k in a.competitors}
            base = med.get(0)
            cells = [f"{kind:<8} {policy:<7} {base:7.2f}"]
            for k in a.competitors[1:]:
                cells.append(f"{med[k]:9.2f}  {med[k] / base:6.2f}x")
            lines.append("  ".join(cells))
    lines.append("raw: " + json.dumps(times))
    text = "\n".join(lines) + "\n"
    print(text)
    a.out.write_text(text)


if __name__ == "__main__":
    main()
