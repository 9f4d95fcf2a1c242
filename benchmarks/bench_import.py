#!/usr/bin/env python3
"""Inference speed of speakerid's imported architectures vs the peer's own model code, on CPU.

For each architecture the peer model (WeSpeaker's code from wespeaker-unofficial, loaded without
its CLI by ``speakerid.interop.peer``, or SpeechBrain's ECAPA_TDNN) gets random weights, is saved
as the peer saves it and imported with ``speakerid.interop.import_model``; both encoders then embed the same fbank batches
(200 frames x 80 bins; batch 1 and 32) with ``eval()`` + ``no_grad`` at 1 and 2 intra-op threads.
The two are timed in the same process, alternating within every repeat so that load from other
processes hits both alike; medians of ``--repeats`` are printed with the ratio peer / speakerid
(> 1: speakerid is faster) and the max relative embedding difference. Then the imported
experiment is exported to TorchScript and ONNX (``speakerid.export``: each reloaded and checked
against the eager model), and the check's result is printed.

Allocator: glibc malloc (the default; jemalloc is not installed here). Run under the CPU lock:

    flock /tmp/speakerid_cpu.lock python benchmarks/bench_import.py --repeats 3 | tee benchmarks/results_import.txt
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # _peers: random BN stats, WeSpeaker's save format

# name: (wespeaker module or "speechbrain", constructor, model_args)
ARCHS = {
    "resnet34": ("resnet", "ResNet34", {"feat_dim": 80, "embed_dim": 256, "pooling_func": "TSTP", "two_emb_layer": False}),
    "ecapa_tdnn GLOB c512": ("ecapa_tdnn", "ECAPA_TDNN_GLOB_c512", {"feat_dim": 80, "embed_dim": 192, "pooling_func": "ASTP"}),
    "ecapa_tdnn GLOB c1024": ("ecapa_tdnn", "ECAPA_TDNN_GLOB_c1024", {"feat_dim": 80, "embed_dim": 192, "pooling_func": "ASTP"}),
    "campplus": ("campplus", "CAMPPlus", {"feat_dim": 80, "embed_dim": 512, "pooling_func": "TSTP"}),
    "redimnet B2": ("redimnet", "ReDimNetB2", {"feat_dim": 72, "embed_dim": 192, "pooling_func": "ASTP", "two_emb_layer": False}),
    # SpeechBrain's ECAPA_TDNN as in speechbrain/spkrec-ecapa-voxceleb (C=1024, MFA 3072)
    "speechbrain ecapa c1024": ("speechbrain", "ECAPA_TDNN", {"channels": [1024, 1024, 1024, 1024, 3072]}),
}


def build_and_import(arch: str, tmp: Path):
    """(peer model in eval mode with random weights, imported speakerid experiment dir)."""
    from _peers import randomize, save_speechbrain, save_wespeaker

    from speakerid.interop import import_model
    from speakerid.interop.peer import wespeaker_models

    module, ctor, model_args = ARCHS[arch]
    torch.manual_seed(0)
    if module == "speechbrain":
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

        peer = randomize(ECAPA_TDNN(80, lin_neurons=192, channels=model_args["channels"]), 1)
        ckpt, config = save_speechbrain(peer, model_args["channels"], tmp / "sb")
        return peer, import_model("speechbrain", tmp / "exp", checkpoint=ckpt, config=config)
    peer = randomize(getattr(wespeaker_models(module), ctor)(**model_args), 1)
    ckpt, config = save_wespeaker(peer, ctor, model_args, tmp / "ws")
    config.write_text(config.read_text().replace("num_mel_bins: 80", f"num_mel_bins: {model_args['feat_dim']}"))
    return peer, import_model("wespeaker", tmp / "exp", checkpoint=ckpt, config=config)


def _last(out):
    """The embedding: WeSpeaker returns (a, b) tuples, SpeechBrain [B, 1, D]."""
    out = out[-1] if isinstance(out, tuple) else out
    return out.squeeze(1) if out.dim() == 3 else out


def time_pair(peer, ours, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median seconds per forward of (peer, ours), alternating, after one warm-up each."""
    tp, to = [], []
    with torch.no_grad():
        peer(x), ours(x)
        for _ in range(repeats):
            t = time.perf_counter()
            peer(x)
            tp.append(time.perf_counter() - t)
            t = time.perf_counter()
            ours(x)
            to.append(time.perf_counter() - t)
    return statistics.median(tp), statistics.median(to)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    ap.add_argument("--no-export", action="store_true", help="skip the TorchScript / ONNX export checks")
    args = ap.parse_args()

    from _peers import rel_diff

    from speakerid.export import export_onnx, export_torchscript
    from speakerid.inference import load_experiment

    print(f"# bench_import: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"allocator glibc malloc, {args.frames} frames x 80 bins (72 for ReDimNet), repeats {args.repeats}, medians")
    print(f"# {'architecture':24s} {'batch':>5s} {'thr':>3s} {'peer ms':>9s} {'ours ms':>9s} {'peer/ours':>9s}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_import."))
    exports = []
    for arch in args.archs:
        peer, exp = build_and_import(arch, tmp / arch.replace(" ", "_"))
        extractor, cfg = load_experiment(exp)
        ours = extractor.encoder.eval()
        g = torch.Generator().manual_seed(0)
        bins = int(cfg.features.num_mel_bins)
        x1 = torch.randn(1, args.frames, bins, generator=g)
        with torch.no_grad():
            diff = rel_diff(_last(peer(x1)), ours(x1))
        for threads in args.threads:
            torch.set_num_threads(threads)
            for batch in args.batches:
                x = torch.randn(batch, args.frames, bins, generator=g)
                tp, to = time_pair(peer, ours, x, args.repeats)
                print(f"  {arch:24s} {batch:5d} {threads:3d} {1e3 * tp:9.1f} {1e3 * to:9.1f} {tp / to:9.2f}", flush=True)
        print(f"  {arch:24s} max relative embedding difference {diff:.1e}", flush=True)
        if not args.no_export:
            torch.set_num_threads(min(args.threads[-1], 2))
            for fmt, fn in (("torchscript", export_torchscript), ("onnx", export_onnx)):
                t = time.perf_counter()
                try:
                    fn(extractor, exp / f"embedder.{'ts' if fmt == 'torchscript' else 'onnx'}", cfg)
                    status = "ok (reloaded, matches eager within 1e-4)"
                except Exception as exc:  # noqa: BLE001 -- report and continue with the next one
                    status = f"FAILED: {str(exc).splitlines()[0][:150]}"
                exports.append(f"  {arch:24s} {fmt:11s} {status} [{time.perf_counter() - t:.0f} s]")
                print(exports[-1], flush=True)


if __name__ == "__main__":
    main()
