"""Throughput of speakerid.features.kaldi.fbank (batched) vs torchaudio.compliance.kaldi.fbank (per utterance).

100 six-second utterances (real speech from ../shared/data/speech tiled to 6 s when present,
else noise), 80 log-mel bins, dither 0. Both run in the same process, interleaved, repeated;
medians are compared and the ratio printed (CPU timings on a shared machine swing up to 2x).

    python benchmarks/bench_features.py [--repeats 9] [--threads 1 2] [--out benchmarks/results_features.txt]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torchaudio.compliance.kaldi as kaldi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import speakerid.features.kaldi as features  # noqa: E402
from speakerid.fileio import write_text_atomic  # noqa: E402

NUM_UTTS, SECONDS, SR = 100, 6.0, 16000


def utterances() -> tuple[torch.Tensor, str]:
    """[100, 96000] float waves in [-1, 1] and where they came from."""
    speech = Path(os.environ.get("SPEAKERID_SHARED_DATA", REPO.parent / "shared" / "data")) / "speech"
    length = int(SECONDS * SR)
    files = sorted(speech.glob("*/*.flac"))[:: max(1, len(sorted(speech.glob("*/*.flac"))) // NUM_UTTS)][:NUM_UTTS]
    if len(files) == NUM_UTTS:
        from speakerid.audio import load_audio

        waves = []
        for f in files:
            w, _ = load_audio(f, SR)
            waves.append(w.repeat(length // w.numel() + 1)[:length])
        return torch.stack(waves), f"real speech ({speech}), tiled to {SECONDS:.0f} s"
    g = torch.Generator().manual_seed(0)
    return 0.1 * torch.randn(NUM_UTTS, length, generator=g), "Gaussian noise (shared speech not found)"


def allocator() -> str:
    preload = os.environ.get("LD_PRELOAD", "")
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if name in preload:
            return f"{name} (LD_PRELOAD={preload})"
    return "glibc malloc (no LD_PRELOAD)"


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def run(threads: int, waves: torch.Tensor, repeats: int) -> list[str]:
    torch.set_num_threads(threads)
    audio_s = NUM_UTTS * SECONDS

    def reference() -> None:
        for i in range(NUM_UTTS):
            kaldi.fbank(waves[i : i + 1] * 32768, num_mel_bins=80, dither=0.0)

    def ours() -> None:
        features.fbank(waves, cmn=False)

    def ours_cmn() -> None:
        features.fbank(waves, cmn=True)

    default_block = features.CPU_BLOCK_FRAMES

    def ours_unblocked() -> None:
        features.CPU_BLOCK_FRAMES = 0
        try:
            features.fbank(waves, cmn=False)
        finally:
            features.CPU_BLOCK_FRAMES = default_block

    cases = {
        "torchaudio kaldi.fbank, per utterance": reference,
        f"speakerid fbank, batched [100, 96000] (blocks of {default_block} frames)": ours,
        "speakerid fbank, batched, + CMN": ours_cmn,
        "speakerid fbank, batched, one block (no cache blocking)": ours_unblocked,
    }
    for fn in cases.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):  # interleaved, so load swings hit every case alike
        for name, fn in cases.items():
            times[name] += timed(fn, 1)
    ref = statistics.median(times["torchaudio kaldi.fbank, per utterance"])
    lines = [f"threads={threads}"]
    for name, ts in times.items():
        med = statistics.median(ts)
        lines.append(
            f"  {name:<70} median {med * 1000:8.1f} ms  {audio_s / med:9.0f} s audio/s  "
            f"x{ref / med:5.2f} vs torchaudio  (min {min(ts) * 1000:.1f}, max {max(ts) * 1000:.1f} ms)"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results_features.txt"), help="'' to not save")
    args = parser.parse_args()
    waves, source = utterances()
    worst = max(
        float((features.fbank(waves[i], cmn=False) - kaldi.fbank(waves[i : i + 1] * 32768, num_mel_bins=80)).abs().max())
        for i in range(0, NUM_UTTS, 10)
    )
    lines = [
        "bench_features: speakerid.features.kaldi.fbank (batched) vs torchaudio.compliance.kaldi.fbank (per utterance)",
        f"input: {NUM_UTTS} x {SECONDS:.0f} s utterances at {SR} Hz = {NUM_UTTS * SECONDS:.0f} s of audio; {source}",
        f"80 mel bins, 25/10 ms, dither 0; {args.repeats} interleaved repeats, medians",
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
        f"allocator: {allocator()}; jemalloc installed: "
        f"{'yes' if list(Path('/usr/lib/x86_64-linux-gnu').glob('libjemalloc*')) else 'no'}",
        "load average at start (1/5/15 min): " + " ".join(f"{v:.1f}" for v in os.getloadavg()),
        f"max |speakerid - torchaudio| over 10 of the utterances: {worst:.2e}",
    ]
    for threads in dict.fromkeys(args.threads):
        lines += run(threads, waves, args.repeats)
    lines.append("load average at end (1/5/15 min): " + " ".join(f"{v:.1f}" for v in os.getloadavg()))
    if torch.cuda.is_available():
        gpu = waves.cuda()
        features.fbank(gpu)
        torch.cuda.synchronize()

        def on_gpu() -> None:
            features.fbank(gpu, cmn=False)
            torch.cuda.synchronize()

        med = statistics.median(timed(on_gpu, args.repeats))
        lines.append(f"GPU {torch.cuda.get_device_name()}: median {med * 1000:.2f} ms, {NUM_UTTS * SECONDS / med:.0f} s audio/s")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        write_text_atomic(args.out, text)


if __name__ == "__main__":
    main()
