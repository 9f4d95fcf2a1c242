#!/usr/bin/env python3
"""speakerid serve: verify throughput and latency against the CLI and the Python API, one run.

    python benchmarks/bench_serve.py                       # defaults: 1, 4, 16 clients, 10 s each
    python benchmarks/bench_serve.py --seconds 3 --cli-calls 2 --api-clips 32   # a quick check

Loopback only; stops by itself. Starts ``speakerid serve`` as a subprocess on a free port over
a temp dir (one key, one profile enrolled from the two packaged clips of speaker A), then for
each number of clients runs that many threads that POST ``/v1/profiles/{id}/verify`` with 3 s
WAV clips (cut from the packaged test clips) back to back for ``--seconds``: throughput
(verifies/s) and p50 / p99 latency. With ``--compare-unbatched`` (default) the highest client
count is rerun against a server started with ``--max-batch 1`` (micro-batching off). Then,
with the server stopped, the same work in one Python process: the same clips embedded by
:meth:`SpeakerModel.embed_batches` (batches of 16) and scored by :meth:`SpeakerDB.verify_embedding`
(clips/s), and ``--cli-calls`` runs of ``speakerid verify`` (one process per call: torch import,
model load, embed, score). Writes ``--out`` (markdown) with the goals: served verify p50 <= 0.3 s
at 1 client; throughput at 16 clients >= 0.8x the Python API's batched throughput. The server
and the API use the same ``--threads``.
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
EXAMPLES = REPO / "speakerid" / "pretrained" / "examples"

from speakerid.serve.launch import free_port, start_server, stop_server  # noqa: E402


def start(root: Path, port: int, threads: int, max_batch: int, backend: str = "auto") -> subprocess.Popen:
    return start_server(root, port, "--threads", str(threads), "--max-batch", str(max_batch), "--queue-size", "256",
                        "--backend", backend, timeout=120)


def load(clients: int, seconds: float, url: str, headers: dict, clips: list[bytes]) -> dict:
    import httpx

    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = [float("inf")]  # set once every client is warm
    barrier = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        with httpx.Client(timeout=120) as c:
            c.post(url, content=clips[i % len(clips)], headers=headers)  # warm-up, not counted
            barrier.wait()
            k = i
            while time.perf_counter() < stop_at[0]:
                t = time.perf_counter()
                r = c.post(url, content=clips[k % len(clips)], headers=headers)
                d = time.perf_counter() - t
                k += 1
                with lock:
                    if r.status_code == 200:
                        lat.append(d)
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    a = np.array(lat) if lat else np.array([np.nan])
    return {"clients": clients, "requests": len(lat), "errors": errors[0], "wall_s": wall,
            "throughput": len(lat) / wall, "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--seconds", type=float, default=10.0, help="measuring time per client count (default 10)")
    ap.add_argument("--clip-seconds", type=float, default=3.0)
    ap.add_argument("--cli-calls", type=int, default=3)
    ap.add_argument("--api-clips", type=int, default=64)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--max-batch", type=int, default=16)
    from speakerid.encoder_runtime import BACKENDS, DEFAULT_BACKEND

    ap.add_argument("--backend", choices=list(BACKENDS), default=DEFAULT_BACKEND,
                    help="encoder runtime of the server and the API (default auto, speakerid's: onnxruntime on the CPU)")
    ap.add_argument("--no-compare-unbatched", dest="compare_unbatched", action="store_false")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results_serve.md"))
    a = ap.parse_args()
    import httpx

    from speakerid.serve.keys import KeyStore

    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    clip_paths, clips = [], []
    for name in ("speaker_a_test.flac", "speaker_b_test.flac"):
        wave, sr = sf.read(str(EXAMPLES / name), dtype="float32")
        wave = wave[: int(a.clip_seconds * sr)]
        buf = io.BytesIO()
        sf.write(buf, wave, sr, format="WAV", subtype="PCM_16")
        clips.append(buf.getvalue())
        clip_paths.append(tmp / (name.replace(".flac", "_3s.wav")))
        clip_paths[-1].write_bytes(clips[-1])
    root = tmp / "srv"
    info, key = KeyStore(root).create("bench")
    h = {"Authorization": f"Bearer {key}"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start(root, port, a.threads, a.max_batch, a.backend)
    rows = []
    try:
        pid = httpx.post(f"{base}/v1/profiles", headers=h, json={"display_name": "A"}).json()["id"]
        for name in ("speaker_a_1.flac", "speaker_a_2.flac"):
            r = httpx.post(f"{base}/v1/profiles/{pid}/enrollments", content=(EXAMPLES / name).read_bytes(),
                           headers={**h, "Content-Type": "audio/flac"}, timeout=120)
            r.raise_for_status()
        url = f"{base}/v1/profiles/{pid}/verify"
        vh = {**h, "Content-Type": "audio/wav"}
        for c in [int(x) for x in a.clients.split(",")]:
            rows.append({"server": f"batched (max {a.max_batch})", **load(c, a.seconds, url, vh, clips)})
            print(rows[-1], flush=True)
        metrics = httpx.get(f"{base}/metrics", headers=h).text
        batches = [ln for ln in metrics.splitlines() if ln.startswith("speakerid_embed_")]
    finally:
        stop_server(proc)
    top = max(int(x) for x in a.clients.split(","))
    if a.compare_unbatched:
        proc = start(root, port, a.threads, 1, a.backend)
        try:
            rows.append({"server": "unbatched (max 1)", **load(top, a.seconds, url, vh, clips)})
            print(rows[-1], flush=True)
        finally:
            stop_server(proc)

    # the Python API in this process: batched embedding + SpeakerDB scoring
    import torch

    torch.set_num_threads(a.threads)
    from speakerid.enroll.speaker_db import SpeakerDB
    from speakerid.enroll.model import SpeakerModel

    model = SpeakerModel.from_experiment("campplus", backend=a.backend)
    db = SpeakerDB(root / "tenants" / f"{info.tenant_id}.db", model)
    paths = [clip_paths[i % 2] for i in range(a.api_clips)]
    model.embed_batches(paths[:16], 16, progress=False)  # warm-up
    t = time.perf_counter()
    emb = model.embed_batches(paths, 16, progress=False)
    decisions = [db.verify_embedding(pid, e).accept for e in emb]
    api_s = time.perf_counter() - t
    api_tp = len(paths) / api_s
    print({"api_clips_per_s": api_tp, "accepts": sum(decisions)}, flush=True)

    cli_times = []
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for i in range(a.cli_calls):
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "speakerid", "verify", "--db", str(db.path), "--speaker", pid, "--json",
                            "--threads", str(a.threads), str(clip_paths[i % 2])], capture_output=True, text=True, env=env)
        cli_times.append(time.perf_counter() - t)
        assert r.returncode in (0, 1), r.stderr
    db.close()
    load_after = os.getloadavg()

    one = next((r for r in rows if r["clients"] == 1 and r["server"].startswith("batched")), None)
    sixteen = next((r for r in rows if r["clients"] == top and r["server"].startswith("batched")), None)
    lines = [
        "# speakerid serve: verify throughput and latency",
        "",
        f"`python benchmarks/bench_serve.py --clients {a.clients} --seconds {a.seconds:g} --cli-calls {a.cli_calls} "
        f"--api-clips {a.api_clips} --threads {a.threads} --backend {a.backend}`; {a.clip_seconds:g} s WAV clips, packaged `campplus`, "
        f"loopback; {os.cpu_count()} CPUs; load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        "(other jobs on the machine inflate every figure; compare within one run).",
        "",
        "| server | clients | verifies | errors | throughput (verify/s) | p50 (s) | p99 (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['server']} | {r['clients']} | {r['requests']} | {r['errors']} | {r['throughput']:.2f} | "
                     f"{r['p50']:.3f} | {r['p99']:.3f} |")
    lines += [
        "",
        f"- Python API, one process (`SpeakerModel.embed_batches`, batches of 16, + `SpeakerDB.verify_embedding`): "
        f"{api_tp:.2f} clips/s ({len(paths)} clips in {api_s:.2f} s).",
        f"- `speakerid verify`, one process per call: {', '.join(f'{t:.1f}' for t in cli_times)} s per call "
        f"({1 / np.mean(cli_times):.3f} verify/s).",
        f"- server's embedding counters after the batched runs: {'; '.join(batches)}.",
        "",
        "Goals:",
        "",
        f"- served verify p50 at 1 client <= 0.3 s: {one['p50']:.3f} s: {'met' if one and one['p50'] <= 0.3 else 'NOT met'}."
        if one else "- p50 at 1 client: not measured.",
        f"- throughput at {top} clients >= 0.8x the Python API's: {sixteen['throughput']:.2f} / {api_tp:.2f} = "
        f"{sixteen['throughput'] / api_tp:.2f}x: {'met' if sixteen['throughput'] >= 0.8 * api_tp else 'NOT met'}."
        if sixteen else "",
    ]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
