#!/usr/bin/env python3
"""A variant of an experiment dir: weights rounded to float16 and / or silence trimming on.

    python recipes/pretrained/local/variant.py exp/campplus exp/campplus_fp16 --half
    python recipes/pretrained/local/variant.py exp/campplus exp/campplus_trim --trim-silence

``--half`` stores every floating-point tensor of model.pt as float16 (what the package ships
when the dev figures allow: half the size); loading casts them back to float32, so the variant
measures exactly what the rounding costs. ``--trim-silence`` sets ``features.trim_silence``
(:func:`speakerid.features.vad.trim_silence` before the segment policy), the starter's front end, so it
can be measured on this model. Other files of the dir are not copied.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from speakerid.config import load_config, save_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--half", action="store_true", help="store the weights as float16")
    p.add_argument("--trim-silence", action="store_true", help="set features.trim_silence")
    a = p.parse_args(argv)
    cfg = load_config(a.src / "config.yaml")
    cfg.features.trim_silence = cfg.features.trim_silence or a.trim_silence
    state = torch.load(a.src / "model.pt", map_location="cpu", weights_only=True)
    if a.half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    stage = a.out.with_name(f".{a.out.name}.tmp")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    save_config(cfg, stage / "config.yaml")
    torch.save(state, stage / "model.pt")
    shutil.rmtree(a.out, ignore_errors=True)
    stage.rename(a.out)
    print(f"{a.out}: {'float16' if a.half else 'float32'} weights, trim_silence={cfg.features.trim_silence}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
