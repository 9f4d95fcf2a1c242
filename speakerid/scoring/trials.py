"""Trial lists and score files.

Trial lists come in two labelled forms, detected per file from its first line:

* VoxCeleb form ``1 enroll-id test-id`` (1 = target, 0 = non-target), e.g. the official
  ``veri_test.txt`` / VoxCeleb1-O list;
* Kaldi form ``enroll-id test-id target|nontarget``;

plus the unlabelled form ``enroll-id test-id`` (labels None), for lists to be scored blind.
Blank lines and lines starting with ``#`` are skipped. A line that does not match the form of
the file is an error naming the file and the line number.

Id normalisation (the one rule, applied to every id read here): a trailing ``.wav`` is
stripped, so VoxCeleb's ``id10270/x6uYqmx31kE/00001.wav`` becomes ``id10270/x6uYqmx31kE/00001``,
the utterance id of our data dirs (the relative path without extension). Nothing else is
changed (no case folding, no other extension).

Score files: ``enroll-id test-id score [label]`` per line, label ``target``/``nontarget``
(``1``/``0`` also read), all lines with the same number of columns.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from speakerid.fileio import atomic_write

__all__ = [
    "TrialsError",
    "TrialList",
    "ScoreList",
    "normalise_id",
    "read_trials",
    "read_trial_list",
    "read_scores",
    "write_scores",
    "labels_for_pairs",
    "read_labelled_scores",
]

logger = logging.getLogger(__name__)

_VOX_LABELS = {"1": 1, "0": 0}
_KALDI_LABELS = {"target": 1, "nontarget": 0}
_SCORE_LABELS = {**_VOX_LABELS, **_KALDI_LABELS}


class TrialsError(ValueError):
    """A malformed trial list or score file; the message names the file and line."""


def normalise_id(utt: str) -> str:
    """The one id rule: strip a trailing ``.wav`` (VoxCeleb trial ids -> data dir ids)."""
    return utt[:-4] if utt.endswith(".wav") else utt


@dataclass(frozen=True)
class TrialList:
    """Trials as arrays: ``enroll``/``test`` ids (numpy str arrays) and int8 labels or None."""

    enroll: np.ndarray
    test: np.ndarray
    labels: np.ndarray | None
    path: str = "<memory>"

    def __len__(self) -> int:
        return int(self.enroll.size)

    def as_tuples(self) -> list[tuple[str, str, int | None]]:
        labels = self.labels.tolist() if self.labels is not None else [None] * len(self)
        return list(zip(self.enroll.tolist(), self.test.tolist(), labels))


@dataclass(frozen=True)
class ScoreList:
    """A score file in memory: ids, float64 scores and int8 labels (or None)."""

    enroll: np.ndarray
    test: np.ndarray
    scores: np.ndarray
    labels: np.ndarray | None
    path: str = "<memory>"

    def __len__(self) -> int:
        return int(self.scores.size)


def _data_lines(path: str | os.PathLike) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, whitespace-split fields) of every non-blank, non-comment line."""
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    with f:
        try:
            for lineno, line in enumerate(f, 1):
                fields = line.split()
                if fields and not fields[0].startswith("#"):
                    yield lineno, fields
        except UnicodeDecodeError as e:
            raise TrialsError(f"{path}: not a UTF-8 text file ({e.reason})") from None


_FORMS = {
    "voxceleb": "'<1|0> <enroll-id> <test-id>' (VoxCeleb form)",
    "kaldi": "'<enroll-id> <test-id> <target|nontarget>' (Kaldi form)",
    "pairs": "'<enroll-id> <test-id>' (unlabelled form)",
}


def _detect_form(fields: list[str]) -> str | None:
    if len(fields) == 3 and fields[2] in _KALDI_LABELS:
        return "kaldi"
    if len(fields) == 3 and fields[0] in _VOX_LABELS:
        return "voxceleb"
    if len(fields) == 2:
        return "pairs"
    return None


def read_trial_list(path: str | os.PathLike) -> TrialList:
    """Read a trial list (any of the three forms, detected from its first line) as arrays."""
    enroll: list[str] = []
    test: list[str] = []
    labels: list[int] = []
    form = None
    first = 0
    for lineno, f in _data_lines(path):
        if form is None:
            form = _detect_form(f)
            first = lineno
            if form is None:
                raise TrialsError(
                    f"{path}:{lineno}: not a trial line: {' '.join(f)!r}; expected "
                    + " or ".join(_FORMS.values())
                )
        try:
            if form == "voxceleb":
                if len(f) != 3:
                    raise KeyError
                labels.append(_VOX_LABELS[f[0]])
                e, t = f[1], f[2]
            elif form == "kaldi":
                if len(f) != 3:
                    raise KeyError
                labels.append(_KALDI_LABELS[f[2]])
                e, t = f[0], f[1]
            else:
                if len(f) != 2:
                    raise KeyError
                e, t = f
        except KeyError:
            raise TrialsError(
                f"{path}:{lineno}: expected {_FORMS[form]} as on line {first}, got {' '.join(f)!r}"
            ) from None
        enroll.append(normalise_id(e))
        test.append(normalise_id(t))
    if form is None:
        raise TrialsError(f"{path}: no trials in the file")
    lab = np.asarray(labels, dtype=np.int8) if form != "pairs" else None
    logger.debug("%s: %d trials (%s form)", path, len(enroll), form)
    return TrialList(np.asarray(enroll), np.asarray(test), lab, str(path))


def read_trials(path: str | os.PathLike) -> list[tuple[str, str, int | None]]:
    """Trials as ``(enroll, test, label)`` tuples; label 1/0, or None for unlabelled lists."""
    return read_trial_list(path).as_tuples()


def read_scores(path: str | os.PathLike) -> ScoreList:
    """Read a score file ``enroll test score [label]``; scores must be finite numbers."""
    enroll: list[str] = []
    test: list[str] = []
    raw: list[str] = []
    labels: list[int] = []
    ncols = 0
    first = 0
    for lineno, f in _data_lines(path):
        if not ncols:
            ncols, first = len(f), lineno
            if ncols not in (3, 4):
                raise TrialsError(
                    f"{path}:{lineno}: expected '<enroll-id> <test-id> <score> [<label>]', got {' '.join(f)!r}"
                )
        if len(f) != ncols:
            raise TrialsError(f"{path}:{lineno}: {len(f)} columns but line {first} has {ncols}")
        if ncols == 4:
            lab = _SCORE_LABELS.get(f[3])
            if lab is None:
                raise TrialsError(f"{path}:{lineno}: label must be target/nontarget or 1/0, got {f[3]!r}")
            labels.append(lab)
        enroll.append(normalise_id(f[0]))
        test.append(normalise_id(f[1]))
        raw.append(f[2])
    if not ncols:
        raise TrialsError(f"{path}: no scores in the file")
    scores = _parse_scores(path, raw, first)
    lab_arr = np.asarray(labels, dtype=np.int8) if ncols == 4 else None
    return ScoreList(np.asarray(enroll), np.asarray(test), scores, lab_arr, str(path))


def _parse_scores(path: str | os.PathLike, raw: list[str], first_line: int) -> np.ndarray:
    """Vectorised float parsing; on failure locate the bad entry for the error message."""
    try:
        scores = np.asarray(raw, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(scores))
    except ValueError:
        bad = None
    if bad is None or bad.size:
        # line numbers of data lines are only known by re-reading; errors are rare
        for lineno, f in _data_lines(path):
            try:
                ok = np.isfinite(float(f[2]))
            except ValueError:
                ok = False
            if not ok:
                raise TrialsError(f"{path}:{lineno}: score {f[2]!r} is not a finite number")
        raise TrialsError(f"{path}: scores could not be parsed as numbers")
    return scores


def write_scores(
    path: str | os.PathLike,
    enroll: Sequence[str] | np.ndarray,
    test: Sequence[str] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray | None = None,
    precision: int = 6,
) -> None:
    """Write ``enroll test score [target|nontarget]`` lines atomically (``precision`` decimals)."""
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.size
    if len(enroll) != n or len(test) != n or (labels is not None and len(labels) != n):
        raise ValueError(f"{path}: enroll/test/scores/labels lengths differ")
    fmt = f"{{}} {{}} {{:.{precision}f}}"
    e_list = np.asarray(enroll).tolist()
    t_list = np.asarray(test).tolist()
    s_list = scores.tolist()
    with atomic_write(path) as f:
        if labels is None:
            for row in zip(e_list, t_list, s_list):
                f.write(fmt.format(*row) + "\n")
        else:
            names = ("nontarget", "target")
            for e, t, s, lab in zip(e_list, t_list, s_list, np.asarray(labels).tolist()):
                f.write(f"{fmt.format(e, t, s)} {names[int(lab)]}\n")


def labels_for_pairs(enroll: np.ndarray, test: np.ndarray, trials: TrialList) -> np.ndarray:
    """Labels of (enroll, test) pairs looked up in a labelled trial list (int8 0/1).

    Raises TrialsError when the list has no labels, a pair appears twice with different
    labels, or some pairs are not in the list (the message counts them and names a few).
    """
    if trials.labels is None:
        raise TrialsError(f"{trials.path}: the trial list has no labels")
    table: dict[tuple[str, str], int] = {}
    for e, t, lab in zip(trials.enroll.tolist(), trials.test.tolist(), trials.labels.tolist()):
        if table.setdefault((e, t), lab) != lab:
            raise TrialsError(f"{trials.path}: trial {e} {t} appears with both labels")
    out = np.empty(len(enroll), dtype=np.int8)
    missing: list[str] = []
    for i, pair in enumerate(zip(np.asarray(enroll).tolist(), np.asarray(test).tolist())):
        lab = table.get(pair)
        if lab is None:
            missing.append(" ".join(pair))
            out[i] = -1
        else:
            out[i] = lab
    if missing:
        raise TrialsError(
            f"{trials.path}: {len(missing)} of {len(out)} scored pairs are not in the trial list "
            f"(first: {'; '.join(missing[:3])})"
        )
    return out


def read_labelled_scores(
    scores: str | os.PathLike, trials: str | os.PathLike | None = None, require_labels: bool = True
) -> ScoreList:
    """A score file with its labels: from ``trials`` when given (matched by id pair, which
    overrides a label column), else from the file's own 4th column."""
    sl = read_scores(scores)
    if trials is not None:
        labels = labels_for_pairs(sl.enroll, sl.test, read_trial_list(trials))
        sl = ScoreList(sl.enroll, sl.test, sl.scores, labels, sl.path)
    elif sl.labels is None and require_labels:
        raise TrialsError(f"{scores}: no label column; give the trial list with --trials")
    return sl
