#!/usr/bin/env python3
"""Room impulse response folders -> the RIR list used by augmentation.

Output (the contract of ``speakerid.augment.spec.Reverb``): one absolute path per line, sorted.
Files whose name matches ``--exclude-regex`` (default ``noise``: RIRS_NOISES keeps isotropic
noise recordings next to its real RIRs) are left out and reported.
"""

from __future__ import annotations

import logging
import re
import sys
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

log = logging.getLogger("data_prep.rirs")

EXAMPLE = "python data_prep/rirs.py /work/shared/data/rir /data/RIRS_NOISES/real_rirs_isotropic_noises data/rir.list"


def prepare_rir_list(
    roots: list[Path],
    out: Path,
    extensions: list[str] | None = None,
    exclude_regex: str = "noise",
    max_duration: float = 0.0,
    force: bool = False,
    jobs: int = 4,
) -> str:
    """Write the RIR list for ``roots`` to ``out``; return the summary line."""
    try:
        exclude = re.compile(exclude_regex, re.IGNORECASE) if exclude_regex else None
    except re.error as e:
        raise PrepError(f"--exclude-regex {exclude_regex!r}: {e}") from None
    check_output_file(out, force)
    extensions = extensions or [".wav", ".flac"]
    skipped = SkipReport()
    candidates: list[Path] = []
    for _, path in audio_in_roots(roots, extensions, "RIR"):
        if exclude is not None and exclude.search(path.name):
            skipped.add(path, f"excluded by --exclude-regex {exclude_regex}")
        elif any(c.isspace() for c in str(path)):
            skipped.add(path, "whitespace in path")
        else:
            candidates.append(path)
    kept = keep_by_duration(candidates, lambda p: p, skipped, jobs, max_duration=max_duration)
    lines = [str(path) for path, _ in kept]
    if not lines:
        raise PrepError(f"{roots[0]}: no usable RIR files ({skipped.summary()})")
    write_list(out, sorted(lines), skipped)
    return list_summary(len(lines), "RIRs", skipped, out)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(
        "rirs.py", "RIR folders -> RIR list (one absolute path per line) for reverberation.", EXAMPLE
    )
    parser.add_argument("roots", type=Path, nargs="+", help="folder(s) of room impulse responses")
    parser.add_argument("out", type=Path, help="output list file")
    parser.add_argument("--ext", default="wav,flac", help="audio extensions (default wav,flac)")
    parser.add_argument(
        "--exclude-regex", default="noise", help="leave out files whose name matches (default 'noise'; '' = none)"
    )
    parser.add_argument(
        "--max-duration", type=float, default=0.0, help="leave out RIRs longer than this (s; 0 = no limit)"
    )
    add_output_args(parser, force_help="replace a non-empty output file")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    print(
        prepare_rir_list(
            args.roots,
            args.out,
            parse_extensions(args.ext),
            args.exclude_regex,
            args.max_duration,
            args.force,
            args.jobs,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
