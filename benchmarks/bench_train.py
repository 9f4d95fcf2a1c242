#!/usr/bin/env python3
"""Training-step time and inference throughput of our ECAPA-TDNN vs SpeechBrain's, on CPU.

For C=512 and C=1024 (SpeechBrain: ``channels=[C, C, C, C, 1536]``, the same widths):

- train step: forward + backward + SGD-Nesterov step on a batch of 32 x 200 frames x 80 bins,
  with the same classification head (linear 192 -> 1000 + cross-entropy) on both;
- inference: ``eval()`` + ``no_grad`` embeddings of 32 x 200-frame chunks (utterances/s).

Both models are timed in the same process, alternating within every repeat so that load
from other processes hits both alike; medians of ``--repeats`` are printed with the ratio
(SpeechBrain time / ours: > 1 means ours is faster). SpeechBrain is optional
(``pip install speakerid[bench]``); without it only our figures are printed.

    python benchmarks/bench_train.py --repeats 5 | tee benchmarks/results_train.txt
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


def speechbrain_ecapa(channels: int) -> nn.Module | None:
    try:
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    except Exception as e:  # not installed, or an import-time incompatibility
        print(f"# speechbrain unavailable ({type(e).__name__}: {str(e).splitlines()[0][:120]}); ours only")
        return None

    class SB(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = ECAPA_TDNN(80, lin_neurons=192, channels=[channels] * 4 + [1536])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m(x).squeeze(1)  # [B, 1, 192] -> [B, 192]

    return SB()


def ours(channels: int) -> nn.Module:
    from speakerid.models import build_model

    return build_model("ecapa_tdnn", channels=channels, feat_dim=80, embed_dim=192)


def train_step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    head = nn.Linear(192, 1000)
    opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.01, momentum=0.9, nesterov=True)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(head(model(x)), y).backward()
        opt.step()

    return step


def infer_fn(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        model.eval()
        with torch.inference_mode():
            model(x)

    return run


def time_once(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--channels", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"# batch {args.batch} x {args.frames} frames x 80 bins; medians of {args.repeats} repeats (1 warm-up)")
    x = torch.randn(args.batch, args.frames, 80)
    y = torch.randint(0, 1000, (args.batch,))
    print(f"{'model':<16}{'what':<12}{'ours':>12}{'speechbrain':>14}{'sb/ours':>9}")
    for c in args.channels:
        models = {"ours": ours(c), "sb": speechbrain_ecapa(c)}
        models = {k: m for k, m in models.items() if m is not None}
        n_params = {k: sum(p.numel() for p in m.parameters()) / 1e6 for k, m in models.items()}
        print(f"# C={c}: params " + ", ".join(f"{k} {v:.2f}M" for k, v in n_params.items()))
        for what, make in (("train step", lambda m: train_step_fn(m, x, y)), ("inference", lambda m: infer_fn(m, x))):
            fns = {k: make(m) for k, m in models.items()}
            times: dict[str, list[float]] = {k: [] for k in fns}
            for r in range(args.repeats + 1):
                order = list(fns) if r % 2 == 0 else list(reversed(fns))  # alternate who goes first
                for k in order:
                    dt = time_once(fns[k])
                    if r > 0:
                        times[k].append(dt)
            med = {k: statistics.median(v) for k, v in times.items()}
            if what == "train step":
                cells = {k: f"{1000 * v:.0f} ms" for k, v in med.items()}
            else:
                cells = {k: f"{args.batch / v:.0f} utt/s" for k, v in med.items()}
            ratio = f"{med['sb'] / med['ours']:.2f}" if "sb" in med else "-"
            print(f"{'ecapa c' + str(c):<16}{what:<12}{cells['ours']:>12}{cells.get('sb', '-'):>14}{ratio:>9}", flush=True)


if __name__ == "__main__":
    main()
