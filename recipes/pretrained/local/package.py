#!/usr/bin/env python3
"""Copy the measured, calibrated default model into the package: speakerid/pretrained/campplus.

    python recipes/pretrained/local/package.py exp/campplus_fp16 ../../speakerid/pretrained/campplus \
        --bench ../../benchmarks/results_default_model.json --licences data/campplus

Copies config.yaml, model.pt, calibration.json, dev_eval.json, MODEL_CARD.md, NOTICE, cohort.npz
(when stage 3 kept AS-norm) and the Apache-2.0 text. Refuses weights over 15 MB, and float16
weights whose dev figures (EER and minDCF@0.01, every corpus and pooled, from the benchmark's
JSON) moved more than 0.1 point from the float32 ones. The folder is replaced as a whole
(staged, then renamed).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from speakerid.fileio import atomic_dir  # noqa: E402

MAX_WEIGHTS_MB = 15.0
MAX_POINTS = 0.1
FILES = ("config.yaml", "model.pt", "calibration.json", "dev_eval.json", "MODEL_CARD.md", "NOTICE")
LICENCE = "LICENSE-Apache-2.0.txt"


def fp16_problem(bench: dict) -> str | None:
    """Why the float16 weights may not ship (a dev figure moved > 0.1 point), or None."""
    systems = bench["systems"]
    full, half = systems["campplus"]["corpora"], systems["campplus_fp16"]["corpora"]
    for corpus in full:
        for key in ("eer", "min_dcf_0.01"):
            moved = abs(full[corpus][key] - half[corpus][key]) * 100
            if moved > MAX_POINTS:
                return f"float16 moves {key} of {corpus} by {moved:.3f} points (> {MAX_POINTS})"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("exp", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--bench", type=Path, required=True, help="results_default_model.json")
    p.add_argument("--licences", type=Path, required=True, help="folder with LICENSE-Apache-2.0.txt (stage 0)")
    a = p.parse_args(argv)
    for f in [*(a.exp / n for n in FILES), a.bench, a.licences / LICENCE]:
        if not f.is_file():
            print(f"ERROR: {f}: missing (run the recipe's earlier stages)", file=sys.stderr)
            return 1
    size_mb = (a.exp / "model.pt").stat().st_size / 2**20
    if size_mb > MAX_WEIGHTS_MB:
        print(f"ERROR: {a.exp / 'model.pt'}: {size_mb:.1f} MB > {MAX_WEIGHTS_MB} MB", file=sys.stderr)
        return 1
    state = torch.load(a.exp / "model.pt", map_location="cpu", weights_only=True)
    if any(v.dtype == torch.float16 for v in state.values()) and (why := fp16_problem(json.loads(a.bench.read_text()))):
        print(f"ERROR: {a.exp / 'model.pt'}: {why}", file=sys.stderr)
        return 1
    with atomic_dir(a.out) as stage:
        for f in FILES + (("cohort.npz",) if (a.exp / "cohort.npz").is_file() else ()):
            shutil.copyfile(a.exp / f, stage / f)
        shutil.copyfile(a.licences / LICENCE, stage / LICENCE)
    print(f"{a.out}: packaged ({size_mb:.2f} MB weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
