#!/usr/bin/env python3
"""Noise folders (MUSAN or any flat folder) -> the noise list used by augmentation.

Output (the contract of ``speakerid.augment.spec.AddNoise``): one ``<absolute path> <category>``
per line, sorted. The category is the MUSAN sub-folder a file is under (``noise``, ``music``,
``speech``; ``babble`` is accepted too), or ``--category`` for a flat folder. The SNR range
of each category is set in the training config (``augment.noise.snr``).
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: find data_prep.common

from data_prep.common import (  # noqa: E402
    PrepError,
    SkipReport,
    add_output_args,
    audio_in_roots,
    check_output_file,
    keep_by_duration,
    list_summary,
    make_parser,
    parse_extensions,
    run_main,
    setup_logging,
    write_list,
)

log = logging.getLogger("data_prep.musan")

CATEGORIES = ("noise", "music", "speech", "babble")
EXAMPLE = (
    "python data_prep/musan.py /data/musan data/noise.list\n"
    "  python data_prep/musan.py /work/shared/data/noise data/noise.list --category noise"
)


def category_of(root: Path, path: Path) -> str | None:
    """The first MUSAN category folder on the way from ``root`` (itself included) to ``path``."""
    for part in (root.name, *path.relative_to(root).parts[:-1]):
        if part.lower() in CATEGORIES:
            return part.lower()
    return None


def prepare_noise_list(
    roots: list[Path],
    out: Path,
    category: str | None = None,
    extensions: list[str] | None = None,
    min_duration: float = 0.0,
    force: bool = False,
    jobs: int = 4,
) -> str:
    """Write the noise list for ``roots`` to ``out``; return the summary line."""
    if category is not None and (not category or any(c.isspace() for c in category)):
        raise PrepError(f"--category must be one word, got {category!r}")
    check_output_file(out, force)
    extensions = extensions or [".wav", ".flac", ".mp3", ".ogg"]
    skipped = SkipReport()
    candidates: list[tuple[Path, str]] = []
    for root, path in audio_in_roots(roots, extensions, "noise"):
        cat = category or category_of(root, path)
        if cat is None:
            skipped.add(path, "no category (not under noise/music/speech/babble; use --category)")
        elif any(c.isspace() for c in str(path)):
            skipped.add(path, "whitespace in path")
        else:
            candidates.append((path, cat))
    lines: list[str] = []
    per_cat: Counter = Counter()
    for (path, cat), _ in keep_by_duration(candidates, lambda c: c[0], skipped, jobs, min_duration):
        lines.append(f"{path} {cat}")
        per_cat[cat] += 1
    if not lines:
        raise PrepError(f"{roots[0]}: no usable noise files ({skipped.summary()})")
    write_list(out, sorted(lines), skipped)
    cats = ", ".join(f"{c} {n}" for c, n in sorted(per_cat.items()))
    return list_summary(len(lines), "noise files", skipped, out, f" ({cats})")


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(
        "musan.py",
        "Noise folders -> noise list '<path> <category>' per line (category from MUSAN's "
        "noise/music/speech sub-folders, or --category for a flat folder).",
        EXAMPLE,
    )
    parser.add_argument("roots", type=Path, nargs="+", help="MUSAN root or noise folder(s)")
    parser.add_argument("out", type=Path, help="output list file")
    parser.add_argument("--category", default=None, help="category of every file (flat folders), e.g. noise")
    parser.add_argument("--ext", default="wav,flac,mp3,ogg", help="audio extensions (default wav,flac,mp3,ogg)")
    parser.add_argument("--min-duration", type=float, default=0.0, help="skip files shorter than this (s)")
    add_output_args(parser, force_help="replace a non-empty output file")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    print(
        prepare_noise_list(
            args.roots, args.out, args.category, parse_extensions(args.ext), args.min_duration, args.force, args.jobs
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
