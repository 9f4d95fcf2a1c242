#!/usr/bin/env python3
"""Folder-per-speaker tree (``<speaker>/**/<utt>.wav|flac|mp3``) -> Kaldi-style data dir.

Writes ``wav.scp`` (absolute paths), ``utt2spk``, ``spk2utt`` and ``utt2dur`` (seconds at the
file's own rate: audio is resampled at load time, e.g. 8 kHz files). Utterance ids are the
path relative to the root without extension (``speaker/sub/utt``), so every id starts with
its speaker, as Kaldi expects. Optionally a speaker-disjoint train/dev split and a balanced
Kaldi-form trial list (``enroll test target|nontarget``) on the dev part.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: find data_prep.common

from data_prep.common import (  # noqa: E402
    PrepError,
    SkipReport,
    SpeakerTreeCollector,
    SplitTrialOptions,
    add_output_args,
    add_split_trial_args,
    final_summary,
    find_audio,
    make_parser,
    parse_extensions,
    read_speaker_list,
    run_main,
    setup_logging,
    staged_dir,
    write_prepared,
)

log = logging.getLogger("data_prep.folder")

EXAMPLE = (
    "python data_prep/folder.py /work/shared/data/speech data/speech "
    "--dev-speakers 12 --make-trials 4000 --group-by-prefix --seed 0"
)


def scan_folder(
    root: Path,
    extensions: list[str],
    skipped: SkipReport,
    min_duration: float = 0.0,
    speakers: set[str] | None = None,
    jobs: int = 4,
) -> tuple[dict[str, str], dict[str, str], dict[str, float], list[str]]:
    """(wav, utt2spk, utt2dur, notes) for a folder-per-speaker tree; what is left out goes to ``skipped``."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: input folder not found")
    root = Path(os.path.abspath(root))
    files, other = find_audio(root, extensions)
    notes = [f"ignored {other} non-audio files"] if other else []
    collector = SpeakerTreeCollector(skipped, speakers)
    for path in files:
        rel = path.relative_to(root)
        if len(rel.parts) < 2:
            skipped.add(path, "not in a speaker folder")
        else:
            collector.add(path, rel)
    notes += collector.notes()
    if speakers is not None:
        missing = speakers - {spk for _, spk, _ in collector.candidates}
        if missing:
            log.warning("%d selected speakers have no audio, e.g. %s", len(missing), sorted(missing)[:3])
    return (*collector.keep(jobs, min_duration), notes)


def prepare_folder(
    root: Path,
    out: Path,
    opts: SplitTrialOptions,
    extensions: list[str] | None = None,
    min_duration: float = 0.0,
    speakers: set[str] | None = None,
    force: bool = False,
    jobs: int = 4,
) -> str:
    """Write the data dir(s) for ``root`` into ``out`` (atomically, as a whole); return the summary line."""
    extensions = extensions or [".wav", ".flac", ".mp3"]
    skipped = SkipReport()
    with staged_dir(out, force, inputs=[root]) as stage:
        wav, utt2spk, utt2dur, notes = scan_folder(root, extensions, skipped, min_duration, speakers, jobs)
        if not wav:
            raise PrepError(f"{root}: no usable audio ({skipped.summary()}; extensions {','.join(extensions)})")
        notes += write_prepared(stage, wav, utt2spk, utt2dur, opts)
        if len(skipped):
            skipped.write(stage / "skipped.txt")
    return final_summary(len(wav), len(set(utt2spk.values())), skipped, notes, out)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(
        "folder.py",
        "Folder-per-speaker tree (<speaker>/**/<utt>.wav|flac|mp3) -> Kaldi-style data dir "
        "(wav.scp, utt2spk, spk2utt, utt2dur), optionally split speaker-disjointly into "
        "<out>/train and <out>/dev with a balanced trial list (Kaldi form) on dev.",
        EXAMPLE,
    )
    parser.add_argument("root", type=Path, help="folder with one sub-folder per speaker")
    parser.add_argument("out", type=Path, help="output data dir")
    parser.add_argument("--ext", default="wav,flac,mp3", help="audio extensions (default wav,flac,mp3)")
    parser.add_argument("--min-duration", type=float, default=0.0, help="skip utterances shorter than this (s)")
    parser.add_argument("--speakers", default=None, help="keep only these speakers: a file (one per line) or a,b,c")
    add_split_trial_args(parser)
    add_output_args(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    summary = prepare_folder(
        args.root,
        args.out,
        SplitTrialOptions.from_args(args),
        extensions=parse_extensions(args.ext),
        min_duration=args.min_duration,
        speakers=read_speaker_list(args.speakers) if args.speakers else None,
        force=args.force,
        jobs=args.jobs,
    )
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
