#!/usr/bin/env python3
"""VoxCeleb1 / VoxCeleb2 tree (``<spk>/<video>/<utt>.wav|.m4a``) -> Kaldi-style data dir.

Utterance ids are ``spk/video/utt`` (the relative path without extension), the ids of the
official trial lists once their ``.wav`` is stripped. Given official trial lists (``--trials``),
writes them with ids that match ``wav.scp`` (VoxCeleb form ``1|0 enroll test``), and reports
trials that reference utterances missing from the tree (``--missing error|drop``).

Durations come from file headers: soundfile for wav/flac, the MP4 movie header for m4a
(no decoder needed). Note that the library loads audio with soundfile, which cannot decode
AAC: convert VoxCeleb2 m4a to wav (or flac) before training, as Kaldi/WeSpeaker recipes do.
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
from speakerid.data.datadir import write_data_dir  # noqa: E402
from speakerid.fileio import atomic_write  # noqa: E402
from speakerid.scoring.trials import read_trials  # noqa: E402

log = logging.getLogger("data_prep.voxceleb")

EXAMPLE = (
    "python data_prep/voxceleb.py /data/vox1/dev/wav /data/vox1/test/wav data/vox1 "
    "--trials /data/vox1/veri_test.txt --hold-out-trial-speakers --min-duration 1.0"
)

_AUDIO_SUFFIX = re.compile(r"\.(wav|m4a|flac|mp3|mp4)$", re.IGNORECASE)


def normalise_id(trial_id: str) -> str:
    """``id10270/x6uYqmx31kE/00001.wav`` -> ``id10270/x6uYqmx31kE/00001`` (the wav.scp id)."""
    return _AUDIO_SUFFIX.sub("", trial_id)


def resolve_root(root: Path) -> Path:
    """Descend into ``wav/`` or ``aac/`` when given the folder that holds it (the archives'
    layout); the speaker folders are then found below."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: VoxCeleb folder not found")
    for sub in ("wav", "aac"):
        if (root / sub).is_dir() and not any(p.name.startswith("id") for p in root.iterdir() if p.is_dir()):
            log.info("%s: using %s/", root, sub)
            return root / sub
    return root


def scan_voxceleb(
    roots: list[Path],
    extensions: list[str],
    skipped: SkipReport,
    min_duration: float = 0.0,
    speakers: set[str] | None = None,
    exclude: set[str] | None = None,
    jobs: int = 4,
) -> tuple[dict[str, str], dict[str, str], dict[str, float], list[str]]:
    """(wav, utt2spk, utt2dur, notes) over one or more VoxCeleb roots."""
    collector = SpeakerTreeCollector(skipped, speakers, exclude)
    notes: list[str] = []
    for root in roots:
        root = Path(os.path.abspath(resolve_root(root)))
        files, other = find_audio(root, extensions)
        if other:
            notes.append(f"ignored {other} non-audio files in {root}")
        for path in files:
            rel = path.relative_to(root)
            if len(rel.parts) != 3:
                skipped.add(path, "not at <spk>/<video>/<utt>")
            else:
                collector.add(path, rel)
    notes += collector.notes()
    return (*collector.keep(jobs, min_duration), notes)


def load_trials(
    path: Path, available: set[str], missing: str
) -> tuple[list[tuple[str, str, bool]], str]:
    """Read an official list, map ids to wav.scp ids and handle trials with missing utterances.

    ``missing="error"`` raises naming the count and an example; ``"drop"`` leaves them out.
    Returns the labelled trials and a summary fragment.
    """
    raw = read_trials(path, keep_ids=True)  # ids as written: normalise_id maps every audio suffix
    trials: list[tuple[str, str, bool]] = []
    missing_utts: set[str] = set()
    dropped = 0
    for enroll, test, label in raw:
        if label is None:
            raise PrepError(f"{path}: trial list has no labels (expected '1|0 enroll test')")
        e, t = normalise_id(enroll), normalise_id(test)
        absent = [u for u in (e, t) if u not in available]
        if absent:
            missing_utts.update(absent)
            dropped += 1
            continue
        trials.append((e, t, bool(label)))
    if dropped and missing == "error":
        raise PrepError(
            f"{path}: {dropped} of {len(raw)} trials reference {len(missing_utts)} utterances not in the "
            f"data (e.g. {sorted(missing_utts)[0]}); use --missing drop to leave them out"
        )
    if not trials:
        raise PrepError(f"{path}: none of its {len(raw)} trials has both utterances in the data; no trial list to write")
    if dropped:
        log.warning("%s: dropped %d of %d trials (%d utterances missing)", path, dropped, len(raw), len(missing_utts))
    note = f"trials {path.name}: {len(trials)} of {len(raw)}"
    if dropped:
        note += f" ({dropped} dropped: {len(missing_utts)} utterances missing)"
    return trials, note


def write_trials_vox(path: Path, trials: list[tuple[str, str, bool]]) -> None:
    """VoxCeleb form ``1|0 enroll test`` (ids without extension), atomically; no trials is an error."""
    if not trials:
        raise PrepError(f"{path}: no trials to write (an empty trial list is not a trial list)")
    with atomic_write(path) as f:
        for enroll, test, label in trials:
            f.write(f"{int(label)} {enroll} {test}\n")


def _trial_names(paths: list[Path]) -> list[str]:
    if len(paths) == 1:
        return ["trials"]
    names, used = [], set()
    for p in paths:
        name = f"trials_{p.stem}"
        k = 2
        while name in used:
            name, k = f"trials_{p.stem}_{k}", k + 1
        used.add(name)
        names.append(name)
    return names


def prepare_voxceleb(
    roots: list[Path],
    out: Path,
    opts: SplitTrialOptions,
    trials: list[Path] | None = None,
    missing: str = "error",
    hold_out_trial_speakers: bool = False,
    extensions: list[str] | None = None,
    min_duration: float = 0.0,
    speakers: set[str] | None = None,
    exclude: set[str] | None = None,
    force: bool = False,
    jobs: int = 4,
) -> str:
    """Write the data dir(s) for the VoxCeleb roots into ``out``; return the summary line.

    Layout: ``out`` itself (no split), or ``out/train`` + ``out/dev`` (``--dev-speakers``) and
    ``out/test`` (``hold_out_trial_speakers``: the speakers of the trial lists, with the trials).
    """
    trials = trials or []
    if missing not in ("error", "drop"):
        raise PrepError(f"--missing must be 'error' or 'drop', got {missing!r}")
    if trials and opts.split and not hold_out_trial_speakers:
        raise PrepError("--trials with a dev split needs --hold-out-trial-speakers (trials go to <out>/test)")
    if hold_out_trial_speakers and not trials:
        raise PrepError("--hold-out-trial-speakers needs --trials")
    if trials and opts.make_trials and not opts.split:
        raise PrepError("--make-trials without a dev split would overwrite the official trials; add --dev-speakers")
    for t in trials:
        if not t.is_file():
            raise FileNotFoundError(f"{t}: trial list not found")
    extensions = extensions or [".wav", ".m4a"]
    skipped = SkipReport()
    with staged_dir(out, force, inputs=roots) as stage:
        wav, utt2spk, utt2dur, notes = scan_voxceleb(
            roots, extensions, skipped, min_duration, speakers, exclude, jobs
        )
        if not wav:
            raise PrepError(f"{roots[0]}: no usable audio ({skipped.summary()}; extensions {','.join(extensions)})")
        loaded = []
        for path, name in zip(trials, _trial_names(trials)):
            tr, note = load_trials(path, set(wav), missing)
            loaded.append((name, tr))
            notes.append(note)
        rest = set(wav)
        trial_dir = stage
        if hold_out_trial_speakers:
            test_spk = {utt2spk[u] for _, tr in loaded for e, t, _ in tr for u in (e, t)}
            test_utts = {u for u in wav if utt2spk[u] in test_spk}
            rest -= test_utts
            trial_dir = stage / "test"
            write_data_dir(
                trial_dir,
                {u: wav[u] for u in test_utts},
                {u: utt2spk[u] for u in test_utts},
                {u: utt2dur[u] for u in test_utts},
            )
            notes.append(f"test: {len(test_spk)} speakers / {len(test_utts)} utts")
            if not rest:
                raise PrepError("every speaker is in the trial lists: nothing left to train on")
        for name, tr in loaded:
            write_trials_vox(trial_dir / name, tr)
        dest = stage / "train" if hold_out_trial_speakers and not opts.split else stage
        notes += write_prepared(
            dest,
            {u: wav[u] for u in rest},
            {u: utt2spk[u] for u in rest},
            {u: utt2dur[u] for u in rest},
            opts,
        )
        if len(skipped):
            skipped.write(stage / "skipped.txt")
    return final_summary(len(wav), len(set(utt2spk.values())), skipped, notes, out)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(
        "voxceleb.py",
        "VoxCeleb1/2 tree (<spk>/<video>/<utt>.wav|.m4a) -> Kaldi-style data dir with ids spk/video/utt; "
        "official trial lists are rewritten with ids matching wav.scp (VoxCeleb form '1|0 enroll test').",
        EXAMPLE,
    )
    parser.add_argument("roots", type=Path, nargs="+", help="VoxCeleb root folder(s) (their wav/ or aac/ is found)")
    parser.add_argument("out", type=Path, help="output data dir")
    parser.add_argument(
        "--trials",
        type=Path,
        action="append",
        default=[],
        help="official trial list (repeat for several); one is written as <dir>/trials, several as "
        "<dir>/trials_<name>",
    )
    parser.add_argument(
        "--missing",
        choices=["error", "drop"],
        default="error",
        help="trials that reference utterances not in the tree: fail (default) or drop them",
    )
    parser.add_argument(
        "--hold-out-trial-speakers",
        action="store_true",
        help="put the trial lists' speakers in <out>/test (with the trials) and the rest in <out>/train",
    )
    parser.add_argument("--ext", default="wav,m4a", help="audio extensions (default wav,m4a)")
    parser.add_argument("--min-duration", type=float, default=0.0, help="skip utterances shorter than this (s)")
    parser.add_argument("--speakers", default=None, help="keep only these speakers: a file (one per line) or a,b,c")
    parser.add_argument("--exclude-speakers", default=None, help="leave out these speakers: a file or a,b,c")
    add_split_trial_args(parser)
    add_output_args(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    summary = prepare_voxceleb(
        args.roots,
        args.out,
        SplitTrialOptions.from_args(args),
        trials=args.trials,
        missing=args.missing,
        hold_out_trial_speakers=args.hold_out_trial_speakers,
        extensions=parse_extensions(args.ext),
        min_duration=args.min_duration,
        speakers=read_speaker_list(args.speakers) if args.speakers else None,
        exclude=read_speaker_list(args.exclude_speakers) if args.exclude_speakers else None,
        force=args.force,
        jobs=args.jobs,
    )
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
