#!/usr/bin/env python3
"""The layers that speakerid computes its own way, against torch's stock form, in one process.

* statistics over time: ``torch.var_mean(x, dim=-1)`` vs :func:`speakerid.models.pooling.frame_var_mean`
  (two passes);
* 1x1 convolutions: ``nn.Conv1d(kernel_size=1)`` vs :class:`speakerid.models.pointwise.PointwiseConv1d`
  (one batched matrix product), same weights;
* ECAPA's attention input with global context: the 1x1 convolution over the ``(3C, T)`` concatenation
  ``[h; mu; sigma]`` (the paper's form) vs :meth:`speakerid.models.pooling.ASTP.attention_hidden`
  (context columns applied once per utterance).

Shapes are those of ECAPA-TDNN C=512 (1536 aggregated channels) and CAM++ (512) at 2-3 s. Each pair
alternates within every repeat; medians in microseconds; the relative difference of the
outputs (``||a - b|| / ||a||``) is printed beside. Allocator: whatever the process has (glibc malloc unless preloaded).

    python benchmarks/bench_layers.py --threads 1 2 --repeats 30
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from speakerid.models.pointwise import PointwiseConv1d
from speakerid.models.pooling import ASTP, frame_var_mean

REPO = Path(__file__).resolve().parents[1]


def time_pair(stock: Callable[[], torch.Tensor], ours: Callable[[], torch.Tensor], repeats: int) -> tuple[float, float, float]:
    """(stock us, ours us, relative difference of the outputs ||a - b|| / ||a||)."""
    a, b = stock(), ours()
    diff = float((a - b).norm() / a.norm())
    for _ in range(3):
        stock(), ours()
    ts: dict[str, list[float]] = {"stock": [], "ours": []}
    for _ in range(repeats):
        for key, fn in (("stock", stock), ("ours", ours)):
            t = time.perf_counter()
            fn()
            ts[key].append(time.perf_counter() - t)
    return statistics.median(ts["stock"]) * 1e6, statistics.median(ts["ours"]) * 1e6, diff


def cases() -> list[tuple[str, Callable[[], torch.Tensor], Callable[[], torch.Tensor]]]:
    torch.manual_seed(0)
    out = []
    for shape in ((1, 1536, 200), (32, 1536, 200), (1, 512, 300), (32, 512, 300)):
        x = torch.randn(*shape)
        out.append((f"variance over time {tuple(shape)}",
                    lambda x=x: torch.var_mean(x, dim=-1, keepdim=True, unbiased=True)[0],
                    lambda x=x: frame_var_mean(x, unbiased=True)[0]))
    for batch, ci, co in ((1, 512, 512), (32, 512, 512), (1, 1536, 1536), (32, 1536, 1536)):
        x = torch.randn(batch, ci, 200)
        conv = nn.Conv1d(ci, co, 1)
        pw = PointwiseConv1d(ci, co)
        pw.load_state_dict(conv.state_dict())
        out.append((f"1x1 conv {ci}->{co}, batch {batch}, 200 frames", lambda c=conv, x=x: c(x), lambda c=pw, x=x: c(x)))
    for batch in (1, 32):
        x = torch.randn(batch, 1536, 200)
        astp = ASTP(1536, 128)

        def paper_form(a: ASTP = astp, x: torch.Tensor = x) -> torch.Tensor:
            var, mean = frame_var_mean(x)
            std = torch.sqrt(var + a.eps)
            t = x.size(-1)
            cat = torch.cat([x, mean.expand(-1, -1, t), std.expand(-1, -1, t)], dim=1)
            return F.conv1d(cat, a.linear1.weight, a.linear1.bias)

        out.append((f"ASTP attention input, 1536 ch, batch {batch}", paper_form, lambda a=astp, x=x: a.attention_hidden(x)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results_layers.md")
    a = ap.parse_args()
    cmd = " ".join(["python", "benchmarks/bench_layers.py"] + __import__("sys").argv[1:])
    lines = [f"# {cmd}", f"# {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {platform.machine()}, "
             f"torch {torch.__version__}, glibc malloc; medians of {a.repeats}, stock and ours alternating", "",
             "| layer | threads | torch stock form | speakerid | ratio | rel. diff |", "|---|---|---|---|---|---|"]
    with torch.inference_mode():
        for threads in a.threads:
            torch.set_num_threads(threads)
            for name, stock, ours in cases():
                s, o, d = time_pair(stock, ours, a.repeats)
                lines.append(f"| {name} | {threads} | {s:,.0f} us | {o:,.0f} us | {s / o:.2f}x | {d:.1e} |")
                print(lines[-1], flush=True)
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
