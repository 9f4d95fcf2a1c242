#!/usr/bin/env python3
"""Forward+backward time of our pair-based Circle and batch-hard triplet losses vs pytorch-metric-learning's, on CPU.

Why we wrote our own (``speakerid.losses.CircleLoss``) instead of wrapping pml: this prints the
ratio on the batch sizes the trainer uses (P x K batches of 192-d embeddings), plus the cost of
mining against a cross-batch memory (ours: one joint logsumexp over batch + memory).
Both run in the same process, alternating within every repeat; medians of ``--repeats``;
ratio = pml time / ours (> 1: ours is faster).

    python benchmarks/losses_speed.py --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch


def _time(fn: Callable[[], torch.Tensor]) -> float:
    start = time.perf_counter()
    fn().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from pytorch_metric_learning import losses as pml_losses

    from speakerid.losses import CircleLoss, build_loss

    print(f"# torch {torch.__version__}, threads {args.threads}, median of {args.repeats} fwd+bwd")
    print(f"{'case':<28}{'ours ms':>10}{'pml ms':>10}{'pml/ours':>10}")
    for batch, speakers in ((128, 32), (256, 64), (512, 128)):
        gen = torch.Generator().manual_seed(batch)
        base = torch.randn(batch, 192, generator=gen)
        labels = torch.arange(batch) % speakers
        ours, pml = CircleLoss(m=0.25, gamma=256.0), pml_losses.CircleLoss(m=0.25, gamma=256.0)
        times: dict[str, list[float]] = {"ours": [], "pml": []}
        for r in range(args.repeats + 2):
            x1 = base.clone().requires_grad_(True)
            x2 = base.clone().requires_grad_(True)
            t_ours = _time(lambda: ours(x1, labels))
            t_pml = _time(lambda: pml(x2, labels))
            if r >= 2:  # warm-up
                times["ours"].append(t_ours)
                times["pml"].append(t_pml)
        o, p = statistics.median(times["ours"]) * 1e3, statistics.median(times["pml"]) * 1e3
        print(f"{f'circle B={batch} P={speakers}':<28}{o:>10.2f}{p:>10.2f}{p / o:>10.2f}", flush=True)

    # Batch-hard triplet (ours: one distance matrix) vs pml's BatchHardMiner + TripletMarginLoss.
    from pytorch_metric_learning import miners as pml_miners

    ours_t = build_loss("triplet", 192, 0)
    pml_t, pml_m = pml_losses.TripletMarginLoss(margin=0.2), pml_miners.BatchHardMiner()
    for batch, speakers in ((128, 32), (256, 64), (512, 128)):
        gen = torch.Generator().manual_seed(batch)
        base = torch.randn(batch, 192, generator=gen)
        labels = torch.arange(batch) % speakers
        times = {"ours": [], "pml": []}
        for r in range(args.repeats + 2):
            x1 = base.clone().requires_grad_(True)
            x2 = base.clone().requires_grad_(True)
            t_ours = _time(lambda: ours_t(x1, labels))
            t_pml = _time(lambda: pml_t(x2, labels, pml_m(x2, labels)))
            if r >= 2:
                times["ours"].append(t_ours)
                times["pml"].append(t_pml)
        o, p = statistics.median(times["ours"]) * 1e3, statistics.median(times["pml"]) * 1e3
        print(f"{f'triplet B={batch} P={speakers}':<28}{o:>10.2f}{p:>10.2f}{p / o:>10.2f}", flush=True)

    # Cross-batch memory: a batch of 128 against 4096 stored embeddings (ours only; pml's
    # CrossBatchMemory for reference with its own CircleLoss).
    gen = torch.Generator().manual_seed(0)
    xbm = build_loss("circle", 192, 0, xbm_size=4096)
    pml_xbm = pml_losses.CrossBatchMemory(pml_losses.CircleLoss(m=0.25, gamma=256.0), 192, memory_size=4096)
    for _ in range(32):  # fill both memories
        e, lab = torch.randn(128, 192, generator=gen), torch.randint(0, 1000, (128,), generator=gen)
        with torch.no_grad():
            xbm(e, lab)
            pml_xbm(e, lab)
    times = {"ours": [], "pml": []}
    for r in range(args.repeats + 2):
        e = torch.randn(128, 192, generator=gen)
        lab = torch.randint(0, 1000, (128,), generator=gen)
        x1, x2 = e.clone().requires_grad_(True), e.clone().requires_grad_(True)
        t_ours = _time(lambda: xbm(x1, lab))
        t_pml = _time(lambda: pml_xbm(x2, lab))
        if r >= 2:
            times["ours"].append(t_ours)
            times["pml"].append(t_pml)
    o, p = statistics.median(times["ours"]) * 1e3, statistics.median(times["pml"]) * 1e3
    print(f"{'circle+XBM B=128 M=4096':<28}{o:>10.2f}{p:>10.2f}{p / o:>10.2f}")


if __name__ == "__main__":
    main()
