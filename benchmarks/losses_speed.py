#!/usr/bin/env python3
"""The metric-learning losses against pytorch-metric-learning (pml), and ECAPA-TDNN C=512 against
SpeechBrain, on CPU (issue 20's table).

Losses: forward + backward of one batch of 256 x 192 embeddings (64 speakers x 4), both in this
process (torch imported before speakerid: OpenMP's defaults for both), ``--threads`` torch threads,
alternating peer / ours within every repeat; medians of ``--repeats`` after 2 warm-ups. Where
speakerid's defaults differ from pml's, both run with pml's (said in the table). The cross-batch
memory case is a batch of 128 (random labels of 1000 speakers) against 4096 stored embeddings.

ECAPA-TDNN C=512 (SpeechBrain 1.1.2 ``ECAPA_TDNN(80, channels=[512]*4 + [1536], lin_neurons=192)``
against ``build_model("ecapa_tdnn", channels=512)``): eval + inference_mode embeddings of 2 s
(200 frames x 80 fbank bins) at batch 1 and batch 32 (audio seconds per second), and one
training step at batch 32 (forward, linear 192 -> 1000 head + cross-entropy, backward, SGD
Nesterov). Each side runs in its own process the way its users run it: SpeechBrain under torch's
defaults, speakerid after ``import speakerid`` with its default thread policy
(``apply_thread_policy()``, what every CLI command does); ``--policies`` adds speakerid rows under
``SPEAKERID_THREADS=torch`` (torch's defaults) and ``SPEAKERID_THREADS=1``. The processes alternate
over ``--rounds`` rounds; medians over all repeats. Allocator: glibc malloc.

    python benchmarks/losses_speed.py --threads 2 --repeats 20 --rounds 2 --policies default torch 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
BATCH, DIM, SPEAKERS = 256, 192, 64
FRAMES = 200  # 2 s at a 10 ms hop


# ------------------------------------------------------------------ losses
def dense_circle(x: torch.Tensor, labels: torch.Tensor, m: float, gamma: float) -> torch.Tensor:
    """Pair Circle Loss (Sun et al. 2020, Eq. 6) written plainly: every anchor has a positive and a negative."""
    xn = F.normalize(x, dim=1)
    sim = xn @ xn.t()
    same = labels.view(-1, 1) == labels.view(1, -1)
    pos = same & ~torch.eye(len(labels), dtype=torch.bool)
    sd = sim.detach()
    lp = (-gamma * torch.relu(1 + m - sd) * (sim - 1 + m)).masked_fill(~pos, float("-inf"))
    ln = (gamma * torch.relu(sd + m) * (sim - m)).masked_fill(same, float("-inf"))
    return F.softplus(torch.logsumexp(lp, 1) + torch.logsumexp(ln, 1)).mean()


def _fwd_bwd(fn: Callable[[torch.Tensor], torch.Tensor], base: torch.Tensor) -> float:
    x = base.clone().requires_grad_(True)
    t = time.perf_counter()
    fn(x).backward()
    return time.perf_counter() - t


def time_pair(fns: dict[str, Callable[[torch.Tensor], torch.Tensor]], base: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median fwd+bwd ms of each function, alternating their order within every repeat."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats + 2):
        order = list(fns) if r % 2 == 0 else list(reversed(fns))
        for k in order:
            dt = _fwd_bwd(fns[k], base)
            if r >= 2:
                times[k].append(dt)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def loss_rows(repeats: int) -> list[tuple[str, str, float, str, float]]:
    from pytorch_metric_learning import losses as pl
    from pytorch_metric_learning import miners as pm

    import speakerid.losses as sl
    from speakerid.losses import CircleLoss, ContrastiveLoss, LiftedStructureLoss, TripletLoss, build_loss

    gen = torch.Generator().manual_seed(0)
    base = torch.randn(BATCH, DIM, generator=gen)
    y = torch.arange(BATCH) % SPEAKERS
    rows = []

    def case(work: str, peer_name: str, peer, ours_name: str, ours) -> None:
        med = time_pair({"peer": lambda x: peer(x, y), "ours": lambda x: ours(x, y)}, base, repeats)
        rows.append((work, peer_name, med["peer"], ours_name, med["ours"]))
        print(f"# {work}: peer {med['peer']:.2f} ms, ours {med['ours']:.2f} ms", flush=True)

    lifted_peer = pl.LiftedStructureLoss(neg_margin=1, pos_margin=0)
    case("lifted structure, original (Song et al. 2016)", "pml `LiftedStructureLoss(neg_margin=1, pos_margin=0)`",
         lifted_peer, "`LiftedStructureLoss()`", LiftedStructureLoss())
    if hasattr(sl, "GeneralizedLiftedStructureLoss"):  # absent before issue 20
        case("lifted structure, generalized (Hermans et al. 2017)", "pml `GeneralizedLiftedStructureLoss()`",
             pl.GeneralizedLiftedStructureLoss(), "`GeneralizedLiftedStructureLoss()`", sl.GeneralizedLiftedStructureLoss())
    case("triplet, every triplet", "pml `TripletMarginLoss()`", pl.TripletMarginLoss(),
         "`TripletLoss(margin=0.05, mining=\"all\")` (pml's margin)", TripletLoss(margin=0.05, mining="all"))
    semi_loss, semi_miner = pl.TripletMarginLoss(margin=0.2), pm.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
    case("triplet, semi-hard", "pml `TripletMarginMiner(0.2, \"semihard\")` + `TripletMarginLoss(0.2)`",
         lambda x, lab: semi_loss(x, lab, semi_miner(x, lab)), "`TripletLoss(margin=0.2, mining=\"semi_hard\")`",
         TripletLoss(margin=0.2, mining="semi_hard"))
    hard_loss, hard_miner = pl.TripletMarginLoss(margin=0.2), pm.BatchHardMiner()
    case("triplet, batch hard", "pml `BatchHardMiner()` + `TripletMarginLoss(0.2)`",
         lambda x, lab: hard_loss(x, lab, hard_miner(x, lab)), "`TripletLoss(margin=0.2)`", TripletLoss(margin=0.2))
    case("contrastive", "pml `ContrastiveLoss()`", pl.ContrastiveLoss(), "`ContrastiveLoss()`", ContrastiveLoss())
    case("Circle (pair)", "pml `CircleLoss()` (m=0.4, gamma=80)", pl.CircleLoss(),
         "`CircleLoss(m=0.4, gamma=80)` (pml's defaults)", CircleLoss(m=0.4, gamma=80.0))
    case("Circle (pair) against a plain dense version", "dense torch (`dense_circle` in this script)",
         lambda x, lab: dense_circle(x, lab, 0.4, 80.0), "`CircleLoss(m=0.4, gamma=80)`", CircleLoss(m=0.4, gamma=80.0))

    # Cross-batch memory: both memories filled with the same 4096 embeddings first.
    xbm = build_loss("circle", DIM, 0, xbm_size=4096, m=0.4, gamma=80.0)
    pml_xbm = pl.CrossBatchMemory(pl.CircleLoss(), DIM, memory_size=4096)
    for _ in range(32):
        e, lab = torch.randn(128, DIM, generator=gen), torch.randint(0, 1000, (128,), generator=gen)
        with torch.no_grad():
            xbm(e, lab)
            pml_xbm(e, lab)
    xb, xl = torch.randn(128, DIM, generator=gen), torch.randint(0, 1000, (128,), generator=gen)
    # Each call enqueues the batch (a fixed cost per step for both; the memory stays full).
    med = time_pair({"peer": lambda x: pml_xbm(x, xl), "ours": lambda x: xbm(x, xl)}, xb, repeats)
    rows.append(("cross-batch memory (Circle, B=128, M=4096)", "pml `CrossBatchMemory(CircleLoss(), 192, 4096)`",
                 med["peer"], "`build_loss(\"circle\", ..., xbm_size=4096)`", med["ours"]))
    return rows


# ------------------------------------------------------------------ ECAPA children
def _child_env(impl: str, policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                           "GOMP_SPINCOUNT", "SPEAKERID_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(REPO)) if p)
    if impl == "ours" and "=" in policy:  # an environment setting, e.g. GOMP_SPINCOUNT=10000
        k, v = policy.split("=", 1)
        env[k] = v
    elif impl == "ours" and policy != "default":
        env["SPEAKERID_THREADS"] = policy
    return env


def child_ecapa(impl: str, repeats: int, work: list[str]) -> dict[str, list[float]]:
    if impl == "ours":
        import speakerid  # noqa: F401  (first, as the CLI: the OpenMP wait policy)
        from speakerid.distributed import apply_thread_policy
        from speakerid.models import build_model

        apply_thread_policy()
        model = build_model("ecapa_tdnn", channels=512, feat_dim=80, embed_dim=192)
    else:
        import torch.nn as nn
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

        class SB(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.m = ECAPA_TDNN(80, lin_neurons=192, channels=[512] * 4 + [1536])

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.m(x).squeeze(1)

        model = SB()
    torch.manual_seed(0)
    x1, x32 = torch.randn(1, FRAMES, 80), torch.randn(32, FRAMES, 80)
    y = torch.randint(0, 1000, (32,))
    head = torch.nn.Linear(192, 1000)
    opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.01, momentum=0.9, nesterov=True)

    def infer(x: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            model.eval()
            with torch.inference_mode():
                model(x)
        return run

    def step() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(head(model(x32)), y).backward()
        opt.step()

    out: dict[str, list[float]] = {}
    for key, fn, n in (("infer1", infer(x1), 10 * repeats), ("infer32", infer(x32), repeats), ("train32", step, repeats)):
        if key not in work:
            continue
        for _ in range(max(2, n // 10)):  # warm-up
            fn()
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        out[key] = ts
    out["threads"] = [torch.get_num_threads()]
    return out


def ecapa_runs(policies: list[str], rounds: int, repeats: int, work: list[str]) -> dict[str, dict[str, list[float]]]:
    runs = [("sb", "torch")] + [("ours", p) for p in policies]
    res: dict[str, dict[str, list[float]]] = {}
    for r in range(rounds):
        for impl, policy in (runs if r % 2 == 0 else list(reversed(runs))):
            key = f"{impl}/{policy}"
            proc = subprocess.run([sys.executable, __file__, "--child", impl, "--repeats", str(repeats), "--ecapa", *work],
                                  env=_child_env(impl, policy), capture_output=True, text=True, cwd=REPO)
            if proc.returncode:
                raise SystemExit(f"{key} failed:\n{proc.stderr[-3000:]}")
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            for k, v in got.items():
                res.setdefault(key, {}).setdefault(k, []).extend(v)
            print(f"# round {r} {key}: " + ", ".join(f"{k} {statistics.median(v):.4f}" for k, v in got.items()), flush=True)
    return res


# ------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", choices=["ours", "sb"], help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the loss timings")
    ap.add_argument("--rounds", type=int, default=2, help="ECAPA: alternating rounds of one process per side")
    ap.add_argument("--policies", nargs="+", default=["default", "torch", "1"],
                    help="ECAPA: speakerid thread policies (default, a SPEAKERID_THREADS value, or VAR=VALUE)")
    ap.add_argument("--ecapa", nargs="*", default=["infer1", "infer32", "train32"],
                    choices=["infer1", "infer32", "train32"], help="ECAPA work to time (none: losses only)")
    ap.add_argument("--no-losses", action="store_true", help="ECAPA only")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results_losses_speed.txt")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child_ecapa(a.child, max(3, a.repeats // 4), a.ecapa)))
        return
    torch.set_num_threads(a.threads)
    import pytorch_metric_learning

    rows = [] if a.no_losses else loss_rows(a.repeats)
    ecapa = ecapa_runs(a.policies, a.rounds, max(3, a.repeats // 4), a.ecapa) if a.ecapa else {}

    cmd = " ".join(["python", "benchmarks/losses_speed.py"] + sys.argv[1:])
    lines = [f"# {cmd}",
             f"# {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {len(os.sched_getaffinity(0))} CPUs "
             f"({platform.machine()}), glibc malloc, torch {torch.__version__}, pytorch-metric-learning "
             f"{pytorch_metric_learning.__version__}; losses: {a.threads} torch threads, medians of {a.repeats} fwd+bwd, "
             f"batch {BATCH} x {DIM} ({SPEAKERS} speakers x {BATCH // SPEAKERS})",
             "",
             "| work | peer, same run | speakerid | ratio (peer / speakerid) |",
             "|---|---|---|---|"]
    for work, peer_name, p, ours_name, o in rows:
        lines.append(f"| {work} | {peer_name} {p:,.2f} ms | {ours_name} {o:,.2f} ms | {p / o:.2f}x |")
    if ecapa:
        import speechbrain

        sb = ecapa["sb/torch"]
        lines.insert(1, f"# ECAPA: SpeechBrain {speechbrain.__version__}, medians over {a.rounds} alternating rounds "
                        f"of one process per side; audio s/s = batch x 2 s / time")
        for pol in a.policies:
            ours = ecapa[f"ours/{pol}"]
            label = pol if pol == "default" or "=" in pol else f"SPEAKERID_THREADS={pol}"
            th = f"{int(ours['threads'][0])} thr"
            for key, what in (("infer1", "inference, batch 1, 2 s"), ("infer32", "inference, batch 32, 2 s")):
                if key not in a.ecapa:
                    continue
                b = 1 if key == "infer1" else 32
                ps, os_ = b * 2 / statistics.median(sb[key]), b * 2 / statistics.median(ours[key])
                lines.append(f"| ECAPA-TDNN C=512 {what} | SpeechBrain (torch defaults, {int(sb['threads'][0])} thr) "
                             f"{ps:.1f} audio s/s | {label} ({th}) {os_:.1f} | {os_ / ps:.2f}x |")
            if "train32" not in a.ecapa:
                continue
            ps, os_ = statistics.median(sb["train32"]), statistics.median(ours["train32"])
            lines.append(f"| ECAPA-TDNN C=512 train step, batch 32 | SpeechBrain {ps:.2f} s | {label} ({th}) "
                         f"{os_:.2f} s | {ps / os_:.2f}x |")
        lines.append("raw: " + json.dumps({k: {kk: [round(x, 5) for x in vv] for kk, vv in v.items()}
                                           for k, v in ecapa.items()}))
    text = "\n".join(lines) + "\n"
    print(text)
    a.out.write_text(text)


if __name__ == "__main__":
    main()
