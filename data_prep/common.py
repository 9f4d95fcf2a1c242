"""Helpers shared by the data_prep scripts: scanning, audio checks, skip reports, staged output,
speaker-disjoint splits and balanced trial lists.

The scripts are run as ``python data_prep/<name>.py``; they put the repository root on
``sys.path`` and import this module as ``data_prep.common``. The library (``speakerid``) never
imports data_prep.

Trial lists made here use the Kaldi form ``enroll-id test-id target|nontarget``
(``speakerid.scoring.trials.read_trials`` reads it, and so do Kaldi and WeSpeaker scripts).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
from tqdm import tqdm

from speakerid.audio import AudioError, check_audio_file
from speakerid.data.datadir import write_data_dir
from speakerid.fileio import atomic_write

log = logging.getLogger("data_prep")

Trial = tuple[str, str, bool]  # (enroll id, test id, is_target)
GroupFn = Callable[[str], str]
T = TypeVar("T")


class PrepError(ValueError):
    """A data_prep input or option is wrong; the message names the file and the problem."""


# --------------------------------------------------------------------------------------
# command-line frame


def make_parser(prog: str, description: str, example: str) -> argparse.ArgumentParser:
    """An argument parser whose ``--help`` ends with a copy-paste example."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_output_args(parser: argparse.ArgumentParser, force_help: str = "replace a non-empty output") -> None:
    parser.add_argument("--force", action="store_true", help=force_help)
    parser.add_argument("--jobs", type=int, default=4, help="threads that decode and check the audio files (default 4)")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")


def add_split_trial_args(parser: argparse.ArgumentParser) -> None:
    """Options shared by folder.py, synthetic.py and voxceleb.py (see :func:`write_prepared`)."""
    g = parser.add_argument_group("speaker-disjoint split and generated trials")
    g.add_argument("--seed", type=int, default=0, help="seed of the split and of the trial list (default 0)")
    g.add_argument(
        "--make-trials",
        type=int,
        default=0,
        metavar="N",
        help="write a balanced trial list of N trials (N/2 target, N/2 non-target; Kaldi form "
        "'enroll test target|nontarget'), on the dev part when splitting",
    )
    split = g.add_mutually_exclusive_group()
    split.add_argument(
        "--dev-speakers", type=int, default=0, metavar="N", help="hold out N speakers: write <out>/train and <out>/dev"
    )
    split.add_argument(
        "--dev-fraction",
        type=float,
        default=0.0,
        metavar="F",
        help="hold out this fraction of the speakers that have >= 2 utterances",
    )
    grp = g.add_mutually_exclusive_group()
    grp.add_argument(
        "--group-by-prefix",
        action="store_true",
        help="speakers belong to the group named by their id's prefix before the first '_' "
        "(e.g. ravdess_01 -> ravdess); non-target trials pair speakers of one group only and "
        "the dev split is stratified by group",
    )
    grp.add_argument(
        "--nontarget-within-group",
        "--group-regex",
        dest="group_regex",
        default=None,
        metavar="REGEX",
        help="like --group-by-prefix with the group given by a regex matched at the start of the "
        "speaker id (its first capture group, else the whole match)",
    )


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a script's main; print user errors as one line (exit 2) as the speakerid CLI does."""
    try:
        return main(argv)
    except (ValueError, OSError) as e:
        prog = Path(sys.argv[0]).name
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------------------
# skip reports


@dataclass
class SkipReport:
    """What a script left out and why; printed in the summary line and kept in ``skipped.txt``."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, item: str | os.PathLike, reason: str) -> None:
        self.items.append((str(item), reason))
        log.debug("skip %s: %s", item, reason)

    @property
    def counts(self) -> Counter:
        return Counter(reason.split(":")[0] for _, reason in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def summary(self) -> str:
        if not self.items:
            return "skipped 0"
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])))
        return f"skipped {len(self.items)} ({parts})"

    def write(self, path: Path) -> None:
        """``<item>\\t<reason>`` per line (tab: paths may contain spaces)."""
        with atomic_write(path) as f:
            for item, reason in self.items:
                f.write(f"{item}\t{reason}\n")


# --------------------------------------------------------------------------------------
# audio content


def _problem(e: AudioError) -> str:
    """``<reason>: <detail>`` of an audio error (the path prefix of its message left out)."""
    detail = str(e).split(": ", 1)[-1]
    return f"{e.reason}: {detail}"


def check_audio_files(paths: Sequence[str], jobs: int = 4, desc: str = "checking audio") -> list[float | str]:
    """Duration of each file, or the reason it cannot be used (a string); order kept.

    Each file is decoded and checked by :func:`speakerid.audio.check_audio_file` (unreadable,
    empty, NaN/inf, all zero, truncated, shorter than one analysis window), so a data dir
    holds only what training and embedding accept. soundfile and numpy release the GIL, so a
    few threads check files in parallel.
    """

    def one(p: str) -> float | str:
        try:
            return check_audio_file(p)
        except AudioError as e:
            return _problem(e)
        except OSError as e:
            return f"unreadable: {e.strerror or e}"

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(tqdm(pool.map(one, paths), total=len(paths), desc=desc, unit="file", leave=False))


def keep_by_duration(
    candidates: Sequence[T],
    path_of: Callable[[T], Path],
    skipped: SkipReport,
    jobs: int = 4,
    min_duration: float = 0.0,
    max_duration: float = 0.0,
) -> list[tuple[T, float]]:
    """Read the duration of each candidate's file; return ``(candidate, seconds)`` for those kept.

    Files the library would refuse (see :func:`check_audio_files`), shorter than
    ``min_duration`` and (when ``max_duration`` > 0) longer than ``max_duration`` go to
    ``skipped`` with the reason; order is kept.
    """
    durations = check_audio_files([str(path_of(c)) for c in candidates], jobs)
    kept: list[tuple[T, float]] = []
    for cand, dur in zip(candidates, durations):
        path = path_of(cand)
        if isinstance(dur, str):
            skipped.add(path, dur)
        elif dur < min_duration:
            skipped.add(path, f"shorter than {min_duration:g} s: {dur:.2f} s")
        elif max_duration and dur > max_duration:
            skipped.add(path, f"longer than {max_duration:g} s: {dur:.2f} s")
        else:
            kept.append((cand, dur))
    return kept


def find_audio(root: Path, extensions: Iterable[str]) -> tuple[list[Path], int]:
    """Audio files under ``root`` (sorted, hidden entries ignored) and the count of other files."""
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    found: list[Path] = []
    other = 0
    with tqdm(desc=f"scanning {root.name}", unit="file", leave=False) as bar:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.startswith("."):
                    continue
                p = Path(dirpath) / name
                if p.suffix.lower() in exts:
                    found.append(p)
                else:
                    other += 1
            bar.update(len(filenames))
    return sorted(found), other


def audio_in_roots(roots: Iterable[Path], extensions: Iterable[str], what: str) -> Iterator[tuple[Path, Path]]:
    """``(absolute root, file)`` for the audio files under each root (``what`` names the
    folder kind in the error when a root is missing, e.g. ``noise``)."""
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: {what} folder not found")
        root = Path(os.path.abspath(root))
        files, _ = find_audio(root, extensions)
        for path in files:
            yield root, path


class SpeakerTreeCollector:
    """Utterances of ``<speaker>/.../<utt>`` trees (folder.py, voxceleb.py).

    The id is the path relative to the root without extension, so every id starts with its
    speaker as Kaldi expects. Speakers not in ``speakers`` (when given) or in ``exclude`` are
    left out and counted; ids with whitespace or seen before go to ``skipped``.
    """

    def __init__(self, skipped: SkipReport, speakers: set[str] | None = None, exclude: set[str] | None = None):
        self.skipped = skipped
        self.speakers = speakers
        self.exclude = exclude
        self.candidates: list[tuple[str, str, Path]] = []  # (utt, spk, path)
        self.seen: set[str] = set()
        self.unselected: set[str] = set()

    def add(self, path: Path, rel: Path) -> None:
        spk = rel.parts[0]
        if (self.speakers is not None and spk not in self.speakers) or (self.exclude and spk in self.exclude):
            self.unselected.add(spk)
            return
        utt = rel.with_suffix("").as_posix()
        if any(c.isspace() for c in utt):
            self.skipped.add(path, "whitespace in id")
        elif utt in self.seen:
            self.skipped.add(path, f"duplicate id: {utt}")
        else:
            self.seen.add(utt)
            self.candidates.append((utt, spk, path))

    def notes(self) -> list[str]:
        return [f"{len(self.unselected)} speakers not selected"] if self.unselected else []

    def keep(
        self, jobs: int = 4, min_duration: float = 0.0
    ) -> tuple[dict[str, str], dict[str, str], dict[str, float]]:
        """(wav, utt2spk, utt2dur) of the readable candidates (see :func:`keep_by_duration`)."""
        wav: dict[str, str] = {}
        utt2spk: dict[str, str] = {}
        utt2dur: dict[str, float] = {}
        for (utt, spk, path), dur in keep_by_duration(self.candidates, lambda c: c[2], self.skipped, jobs, min_duration):
            wav[utt], utt2spk[utt], utt2dur[utt] = str(path), spk, dur
        return wav, utt2spk, utt2dur


def parse_extensions(text: str) -> list[str]:
    exts = ["." + e.strip().lstrip(".").lower() for e in text.split(",") if e.strip()]
    if not exts:
        raise PrepError(f"--ext: no extension in {text!r}")
    return exts


# --------------------------------------------------------------------------------------
# speakers, groups, splits and trials


def read_speaker_list(spec: str) -> set[str]:
    """A speaker subset: a file with one id per line, or a comma-separated list."""
    path = Path(spec)
    if path.is_file():
        return {line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    if os.sep in spec or spec.endswith(".txt"):
        raise FileNotFoundError(f"{spec}: speaker list file not found")
    return {s.strip() for s in spec.split(",") if s.strip()}


def group_function(group_by_prefix: bool = False, group_regex: str | None = None) -> GroupFn | None:
    """The speaker -> group map of ``--group-by-prefix`` / ``--group-regex`` (None: one group).

    Speakers whose id has no prefix (or does not match the regex) share the group ``""``.
    """
    if group_by_prefix:
        group_regex = r"([^_]+)_"
    if not group_regex:
        return None
    try:
        pattern = re.compile(group_regex)
    except re.error as e:
        raise PrepError(f"--group-regex {group_regex!r}: {e}") from None

    def group_of(speaker: str) -> str:
        m = pattern.match(speaker)
        if not m:
            return ""
        return m.group(1) if pattern.groups else m.group(0)

    return group_of


def _groups(speakers: Iterable[str], group_of: GroupFn | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in sorted(speakers):
        out.setdefault(group_of(s) if group_of else "", []).append(s)
    return out


def _largest_remainder(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Split ``total`` into integers proportional to ``weights`` (Hamilton's method)."""
    wsum = sum(weights.values())
    exact = {k: total * w / wsum for k, w in weights.items()}
    quota = {k: int(v) for k, v in exact.items()}
    left = total - sum(quota.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - quota[k]), k))[:left]:
        quota[k] += 1
    return quota


def _no_lone_dev_speaker(quota: dict[str, int], sizes: Mapping[str, int]) -> dict[str, int]:
    """Give each group 0 or >= 2 dev speakers (one speaker alone in a group makes no
    non-target trial), keeping the total: a lone slot takes one more from the biggest quota
    that can spare it, else it moves to the biggest group that can take it."""
    quota = dict(quota)
    for g in sorted(quota, key=lambda k: (quota[k], k)):
        if quota[g] != 1:
            continue
        donors = [d for d in quota if d != g and quota[d] > 2]
        if sizes[g] >= 2 and donors:
            donor = max(donors, key=lambda d: (quota[d], d))
            quota[donor] -= 1
            quota[g] = 2
            continue
        takers = [t for t in quota if t != g and quota[t] >= 2 and quota[t] < sizes[t]]
        if takers:
            taker = max(takers, key=lambda t: (quota[t], t))
            quota[taker] += 1
            quota[g] = 0
        else:
            log.warning("dev split: group %r gets 1 speaker, so it gives no non-target trials", g)
    return quota


def split_speakers(
    spk2utt: Mapping[str, Sequence[str]],
    num_dev: int = 0,
    dev_fraction: float = 0.0,
    seed: int = 0,
    group_of: GroupFn | None = None,
    min_utts: int = 2,
) -> tuple[list[str], list[str]]:
    """Speaker-disjoint (train, dev) split, deterministic from ``seed``.

    Dev speakers are drawn from those with at least ``min_utts`` utterances (others cannot give
    target trials); ``dev_fraction`` is a fraction of those candidates. With ``group_of`` the
    draw is stratified: each group gives dev speakers in proportion to its candidates, so a
    grouped trial list has every corpus in it.
    """
    candidates = sorted(s for s, u in spk2utt.items() if len(u) >= min_utts)
    if num_dev <= 0:
        if not 0.0 < dev_fraction < 1.0:
            raise PrepError(f"--dev-fraction must be in (0, 1), got {dev_fraction}")
        num_dev = max(1, round(dev_fraction * len(candidates)))
    if num_dev > len(candidates):
        raise PrepError(
            f"asked for {num_dev} dev speakers but only {len(candidates)} speakers have >= {min_utts} utterances"
        )
    if num_dev >= len(spk2utt):
        raise PrepError(f"asked for {num_dev} dev speakers out of {len(spk2utt)}: no speaker left to train on")
    rng = np.random.default_rng([seed, 1])
    groups = _groups(candidates, group_of)
    quota = _largest_remainder(num_dev, {g: len(s) for g, s in groups.items()})
    if group_of is not None:
        quota = _no_lone_dev_speaker(quota, {g: len(s) for g, s in groups.items()})
    dev: list[str] = []
    for g in sorted(groups):
        members = groups[g]
        dev.extend(members[i] for i in rng.permutation(len(members))[: quota[g]])
    dev_set = set(dev)
    return sorted(s for s in spk2utt if s not in dev_set), sorted(dev_set)


@dataclass
class TrialStats:
    requested: int
    target: int = 0
    nontarget: int = 0
    speakers_used: int = 0
    excluded_single_utt: int = 0
    excluded_alone_in_group: int = 0

    def summary(self) -> str:
        text = f"trials {self.target + self.nontarget} ({self.target} target / {self.nontarget} nontarget)"
        notes = []
        if self.excluded_single_utt:
            notes.append(f"{self.excluded_single_utt} speakers with 1 utterance give no target trials")
        if self.excluded_alone_in_group:
            notes.append(f"{self.excluded_alone_in_group} speakers alone in their group give none")
        return text + (f" [{'; '.join(notes)}]" if notes else "")


def make_trials(
    spk2utt: Mapping[str, Sequence[str]],
    num_trials: int,
    seed: int = 0,
    group_of: GroupFn | None = None,
) -> tuple[list[Trial], TrialStats]:
    """A balanced trial list: ``num_trials // 2`` target and as many non-target trials.

    Each target trial (two utterances of a speaker drawn uniformly among the speakers that
    have >= 2 utterances) is paired with a non-target trial that has the SAME enrolment
    utterance and a test utterance of another speaker of the same group. So every enrolment
    utterance, speaker and group has as many target as non-target trials and neither the
    enrolment side nor the corpus (channel) tells the label. Pairs are unique (unordered).
    When fewer unique pairs exist than asked, all that were found are kept (with a warning).
    """
    if num_trials < 2:
        raise PrepError(f"--make-trials needs at least 2 trials, got {num_trials}")
    stats = TrialStats(requested=num_trials)
    groups = _groups(spk2utt, group_of)
    group_of_spk = {s: g for g, members in groups.items() for s in members}
    eligible: list[str] = []
    for s in sorted(spk2utt):
        if len(spk2utt[s]) < 2:
            stats.excluded_single_utt += 1
        elif len(groups[group_of_spk[s]]) < 2:
            stats.excluded_alone_in_group += 1
        else:
            eligible.append(s)
    if not eligible:
        raise PrepError(
            "cannot make trials: no speaker has >= 2 utterances and another speaker in its group "
            f"({len(spk2utt)} speakers)"
        )
    want = num_trials // 2
    possible = sum(len(spk2utt[s]) * (len(spk2utt[s]) - 1) // 2 for s in eligible)
    rng = np.random.default_rng([seed, 2])
    utts = {s: sorted(spk2utt[s]) for s in spk2utt}
    seen_t: set[tuple[str, str]] = set()
    seen_n: set[tuple[str, str]] = set()
    trials: list[Trial] = []
    attempts = 0
    max_attempts = 50 * want + 1000
    while len(seen_t) < min(want, possible) and attempts < max_attempts:
        attempts += 1
        spk = eligible[rng.integers(len(eligible))]
        i, j = rng.choice(len(utts[spk]), size=2, replace=False)
        enroll, test = utts[spk][i], utts[spk][j]
        key = (min(enroll, test), max(enroll, test))
        if key in seen_t:
            continue
        others = [o for o in groups[group_of_spk[spk]] if o != spk]
        for _ in range(20):
            other = others[rng.integers(len(others))]
            imp = utts[other][rng.integers(len(utts[other]))]
            nkey = (min(enroll, imp), max(enroll, imp))
            if nkey not in seen_n:
                break
        else:
            continue
        seen_t.add(key)
        seen_n.add(nkey)
        trials.append((enroll, test, True))
        trials.append((enroll, imp, False))
    stats.target = stats.nontarget = len(seen_t)
    stats.speakers_used = len({t[0].split("/")[0] for t in trials})
    if len(seen_t) < want:
        log.warning(
            "asked for %d trials but only %d unique balanced pairs could be made", num_trials, 2 * len(seen_t)
        )
    if num_trials % 2:
        log.warning("--make-trials %d is odd: writing %d (balanced)", num_trials, 2 * len(seen_t))
    return trials, stats


def write_trials_kaldi(path: Path, trials: Sequence[Trial]) -> None:
    """Kaldi form: ``enroll-id test-id target|nontarget`` per line, atomically; no trials is an error."""
    if not trials:
        raise PrepError(f"{path}: no trials to write (an empty trial list is not a trial list)")
    with atomic_write(path) as f:
        for enroll, test, target in trials:
            f.write(f"{enroll} {test} {'target' if target else 'nontarget'}\n")


# --------------------------------------------------------------------------------------
# output


def check_no_overlap(out: Path, inputs: Iterable[Path]) -> None:
    """Refuse an output that would contain (and with --force replace) an input tree."""
    out_r = out.resolve()
    for src in inputs:
        src_r = Path(src).resolve()
        if out_r == src_r or out_r in src_r.parents:
            raise PrepError(f"{out}: the output must not contain the input {src}")


def check_output(out: Path, force: bool, inputs: Iterable[Path] = ()) -> None:
    """Refuse a non-empty output directory unless ``force`` (checked before any work is done)."""
    check_no_overlap(out, inputs)
    if out.exists() and not out.is_dir():
        raise PrepError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise PrepError(f"{out}: output directory is not empty (use --force to replace it)")


def check_output_file(out: Path, force: bool) -> None:
    """Refuse to replace a non-empty output file unless ``force``."""
    if out.is_dir():
        raise PrepError(f"{out}: is a directory, expected a file name")
    if out.exists() and out.stat().st_size > 0 and not force:
        raise PrepError(f"{out}: output file exists (use --force to replace it)")


@contextlib.contextmanager
def staged_dir(out: Path, force: bool, inputs: Iterable[Path] = ()) -> Iterator[Path]:
    """Build the whole output in a hidden sibling directory, then move it onto ``out``.

    A failed or interrupted run leaves ``out`` as it was; with ``force`` an existing ``out``
    is replaced only once the new one is complete (old contents are removed, so no stale
    ``feats.scp`` or ``trials`` survive from an earlier run).
    """
    out = Path(out)
    check_output(out, force, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a data dir should be like any other dir
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@dataclass
class SplitTrialOptions:
    make_trials: int = 0
    dev_speakers: int = 0
    dev_fraction: float = 0.0
    seed: int = 0
    group_of: GroupFn | None = None

    @property
    def split(self) -> bool:
        return self.dev_speakers > 0 or self.dev_fraction > 0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "SplitTrialOptions":
        if args.make_trials < 0 or args.dev_speakers < 0 or args.dev_fraction < 0:
            raise PrepError("--make-trials, --dev-speakers and --dev-fraction must not be negative")
        if args.dev_fraction and not 0.0 < args.dev_fraction < 1.0:
            raise PrepError(f"--dev-fraction must be in (0, 1), got {args.dev_fraction}")
        if args.make_trials == 1:
            raise PrepError("--make-trials needs at least 2 trials (one target, one non-target)")
        return cls(
            make_trials=args.make_trials,
            dev_speakers=args.dev_speakers,
            dev_fraction=args.dev_fraction,
            seed=args.seed,
            group_of=group_function(args.group_by_prefix, args.group_regex),
        )


def _subset(items: Mapping[str, object], utts: set[str]) -> dict:
    return {u: v for u, v in items.items() if u in utts}


def write_prepared(
    dest: Path,
    wav: Mapping[str, str],
    utt2spk: Mapping[str, str],
    utt2dur: Mapping[str, float] | None,
    opts: SplitTrialOptions,
    split_names: tuple[str, str] = ("train", "dev"),
) -> list[str]:
    """Write the data dir(s) under ``dest`` and return summary fragments.

    Without a split, ``dest`` is the data dir (with ``trials`` when ``opts.make_trials``);
    with one, ``dest/train`` and ``dest/dev`` are speaker-disjoint data dirs and the trials go
    to ``dest/dev/trials`` only.
    """
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    notes: list[str] = []
    if not opts.split:
        write_data_dir(dest, dict(wav), dict(utt2spk), None if utt2dur is None else dict(utt2dur))
        if opts.make_trials:
            trials, stats = make_trials(spk2utt, opts.make_trials, opts.seed, opts.group_of)
            write_trials_kaldi(dest / "trials", trials)
            notes.append(stats.summary())
        return notes
    train_spk, dev_spk = split_speakers(spk2utt, opts.dev_speakers, opts.dev_fraction, opts.seed, opts.group_of)
    for name, speakers in zip(split_names, (train_spk, dev_spk)):
        keep = {u for s in speakers for u in spk2utt[s]}
        write_data_dir(
            dest / name,
            _subset(wav, keep),
            _subset(utt2spk, keep),
            None if utt2dur is None else _subset(utt2dur, keep),
        )
        notes.append(f"{name}: {len(speakers)} speakers / {len(keep)} utts")
    if opts.make_trials:
        dev_spk2utt = {s: spk2utt[s] for s in dev_spk}
        trials, stats = make_trials(dev_spk2utt, opts.make_trials, opts.seed, opts.group_of)
        write_trials_kaldi(dest / split_names[1] / "trials", trials)
        notes.append(f"{split_names[1]} {stats.summary()}")
    return notes


def final_summary(kept_utts: int, kept_spk: int, skipped: SkipReport, notes: Sequence[str], out: Path) -> str:
    """The one line each script prints at the end."""
    where = f"; details in {out / 'skipped.txt'}" if len(skipped) else ""
    extra = "; ".join(notes)
    return f"kept {kept_utts} utterances of {kept_spk} speakers; {skipped.summary()}" + (
        f"; {extra}" if extra else ""
    ) + f"{where} -> {out}"


def list_summary(kept: int, what: str, skipped: SkipReport, out: Path, extra: str = "") -> str:
    """The summary line of the list writers (musan.py, rirs.py)."""
    where = f"; details in {skipped_path_for(out)}" if len(skipped) else ""
    return f"kept {kept} {what}{extra}; {skipped.summary()}{where} -> {out}"


def skipped_path_for(list_file: Path) -> Path:
    """Where a list writer keeps its skip details: next to the list, ``<list>.skipped.txt``."""
    return list_file.with_name(list_file.name + ".skipped.txt")


def write_list(out: Path, lines: Sequence[str], skipped: SkipReport) -> None:
    """Write a list file (and its skip details, or remove stale ones) atomically."""
    with atomic_write(out) as f:
        for line in lines:
            f.write(line + "\n")
    side = skipped_path_for(out)
    if len(skipped):
        skipped.write(side)
    elif side.exists():
        side.unlink()
