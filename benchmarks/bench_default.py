#!/usr/bin/env python3
"""CPU embedding throughput of the default CAM++ model: speakerid (torch and onnxruntime backends)
against 3D-Speaker's own eager model code, in the same process.

    flock -x /tmp/cpu.lock python benchmarks/bench_default.py --model EXP --out benchmarks/results_default.txt

``EXP`` is a CAM++ experiment dir (``speakerid import --from 3dspeaker``, or the packaged default
model's name). The peer is 3D-Speaker's ``speakerlab.models.campplus.DTDNN.CAMPPlus`` and its
``speakerlab.process.processor.FBank`` (80 bins, mean over time subtracted) from the PyPI package
``speakerlab-slim`` (``pip install --no-deps speakerlab-slim==0.1.0``: its ``modelscope`` requirement
is not needed for the model code), loaded with the same weights (3D-Speaker's state-dict names are
speakerid's). Each system turns waveforms (``--seconds`` long, 16 kHz) into embeddings, front end
included: the peer one FBank call per waveform then one batched forward; speakerid
:func:`speakerid.inference.embed_waves` (batched fbank, segment policy, encoder). Batch 1 and 32,
1 and 2 intra-op threads (torch and onnxruntime alike), eval + no_grad; the systems alternate
within every repeat so that load from other processes hits all alike; medians of ``--repeats``
per-waveform milliseconds, and the ratio peer / ours (> 1: speakerid is faster). Also printed:
the max relative difference of the embeddings against the peer's. Allocator: glibc malloc.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speakerid.inference import SegmentPolicy, embed_waves, load_experiment  # noqa: E402


def peer_model(state: dict[str, torch.Tensor], embed_dim: int):
    """3D-Speaker's CAM++ and FBank (speakerlab-slim) with ``state`` loaded."""
    from speakerlab.models.campplus.DTDNN import CAMPPlus
    from speakerlab.process.processor import FBank

    model = CAMPPlus(feat_dim=80, embedding_size=embed_dim)
    model.load_state_dict(state)
    return model.eval(), FBank(80, sample_rate=16000, mean_nor=True)


def peer_embed(model, fbank, waves: list[torch.Tensor]) -> torch.Tensor:
    feats = torch.stack([fbank(w.unsqueeze(0)) for w in waves])
    return model(feats)


def timed(fn) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="CAM++ experiment dir or packaged model name")
    p.add_argument("--seconds", type=float, default=3.0, help="waveform length, rounded to 0.1 s (default 3 s, a typical test clip)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, help="also write the table here")
    a = p.parse_args(argv)

    torch.manual_seed(0)
    policy = SegmentPolicy()
    # a whole number of 0.1 s (whole frames), so that both see the same frames
    frames = max(10, round(a.seconds * 10) * 10)
    samples = 400 + 160 * (frames - 1)
    lines = [
        f"# command: python benchmarks/bench_default.py {' '.join(sys.argv[1:] if argv is None else argv)}",
        f"# torch {torch.__version__}, {platform.machine()}, allocator glibc malloc, {frames} frames ({samples} samples) per waveform, "
        f"repeats {a.repeats}, medians of per-waveform ms; peer = speakerlab-slim CAMPPlus + FBank (eager)",
        f"# {'batch':>5} {'thr':>3} {'peer ms':>9} {'torch ms':>9} {'ort ms':>9} {'peer/torch':>10} {'peer/ort':>9}",
    ]
    print("\n".join(lines), flush=True)
    diffs: dict[str, float] = {}
    for threads in a.threads:
        torch.set_num_threads(threads)
        ours, _ = load_experiment(a.model)
        fast, _ = load_experiment(a.model, backend="onnxruntime")  # its session takes torch's thread count
        model, fbank = peer_model(ours.encoder.state_dict(), ours.embed_dim)
        for batch in a.batches:
            waves = [0.1 * torch.randn(samples) for _ in range(batch)]
            systems = {
                "peer": lambda: peer_embed(model, fbank, waves),
                "torch": lambda: embed_waves(ours, waves, policy, batch_size=batch),
                "ort": lambda: embed_waves(fast, waves, policy, batch_size=batch),
            }
            times: dict[str, list[float]] = {k: [] for k in systems}
            with torch.no_grad():
                outs = {k: f() for k, f in systems.items()}  # warm-up
                for _ in range(a.repeats):
                    for k, f in systems.items():
                        t, _ = timed(f)
                        times[k].append(1e3 * t / batch)
            for k in ("torch", "ort"):
                diffs[k] = max(diffs.get(k, 0.0), rel_diff(outs[k], outs["peer"]))
            med = {k: statistics.median(v) for k, v in times.items()}
            line = (f"  {batch:>5} {threads:>3} {med['peer']:9.1f} {med['torch']:9.1f} {med['ort']:9.1f} "
                    f"{med['peer'] / med['torch']:10.2f} {med['peer'] / med['ort']:9.2f}")
            print(line, flush=True)
            lines.append(line)
    tail = f"# max relative embedding difference to the peer: torch {diffs['torch']:.1e}, onnxruntime {diffs['ort']:.1e}"
    print(tail)
    lines.append(tail)
    if a.out:
        a.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
