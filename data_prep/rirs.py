#!/usr/bin/env python3
"""Room impulse response folders -> the RIR list used by augmentation.

Output (the contract of ``speakerid.augment.Reverb``): one absolute path per line, sorted.
Files whose name matches ``--exclude-regex`` (default ``noise``: RIRS_NOISES keeps isotropic
noise recordings next to its real RIRs) are left out and reported.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: find data_prep.common

from data_prep.common import (  # noqa: E402
    PrepError,
    SkipReport,
    check_output_file,
    find_audio,
    list_summary,
    make_parser,
    parse_extensions,
    probe_durations,
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
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: RIR folder not found")
        files, _ = find_audio(Path(os.path.abspath(root)), extensions)
        for path in files:
            if exclude is not None and exclude.search(path.name):
                skipped.add(path, f"excluded by --exclude-regex {exclude_regex}")
            elif any(c.isspace() for c in str(path)):
                skipped.add(path, "whitespace in path")
            else:
                candidates.append(path)
    durations = probe_durations([str(p) for p in candidates], jobs)
    lines: list[str] = []
    for path, dur in zip(candidates, durations):
        if isinstance(dur, str):
            skipped.add(path, dur)
        elif dur <= 0:
            skipped.add(path, "empty")
        elif max_duration and dur > max_duration:
            skipped.add(path, f"longer than {max_duration:g} s: {dur:.2f} s")
        else:
            lines.append(str(path))
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
    parser.add_argument("--force", action="store_true", help="replace a non-empty output file")
    parser.add_argument("--jobs", type=int, default=4, help="threads that read audio headers (default 4)")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
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
