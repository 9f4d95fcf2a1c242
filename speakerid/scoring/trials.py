"""Trial lists and score files.

Trial lists come in two labelled forms, detected per file from its first line:

* VoxCeleb form ``1 enroll-id test-id`` (1 = target, 0 = non-target), e.g. the official
  ``veri_test.txt`` / VoxCeleb1-O list;
* Kaldi form ``enroll-id test-id target|nontarget``;

plus the unlabelled form ``enroll-id test-id`` (labels None), for lists to be scored blind.
Blank lines and lines starting with ``#`` are skipped, and so is a UTF-8 byte-order mark at
the start of the file. A line that does not match the form of the file is an error naming the
file and the line number.

Repeated pairs (the one rule, for trial lists and score files alike): each ordered
``(enroll, test)`` pair counts once. A pair listed again with the same label is dropped (the
first line is kept) with one warning that counts the repeats; a pair listed with both labels
(target and non-target) is an error naming the file and both lines.

Id normalisation (the one rule, applied to every id read here): a trailing ``.wav`` is
stripped, so VoxCeleb's ``id10270/x6uYqmx31kE/00001.wav`` becomes ``id10270/x6uYqmx31kE/00001``,
the utterance id of our data dirs (the relative path without extension). Nothing else is
changed (no case folding, no other extension). ``keep_ids=True`` keeps the ids as written
(for callers with their own mapping, e.g. ``data_prep/voxceleb.py``).

Score files: ``enroll-id test-id score [label]`` per line, label ``target``/``nontarget``
(``1``/``0`` also read), all lines with the same number of columns.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from operator import itemgetter
from typing import Iterable, Iterator, Sequence

import numpy as np

from speakerid.fileio import atomic_write
from speakerid.limits import MAX_ID_CHARS, shorten

__all__ = [
    "TrialsError",
    "TrialList",
    "ScoreList",
    "normalise_id",
    "read_trials",
    "read_trial_list",
    "read_scores",
    "write_scores",
]

logger = logging.getLogger(__name__)

_VOX_LABELS = {"1": 1, "0": 0}
_KALDI_LABELS = {"target": 1, "nontarget": 0}
_SCORE_LABELS = {**_VOX_LABELS, **_KALDI_LABELS}


class TrialsError(ValueError):
    """A malformed trial list or score file; the message names the file and line."""


def normalise_id(utt: str) -> str:
    """The one id rule: strip a trailing ``.wav`` (VoxCeleb trial ids -> data dir ids)."""
    return utt.removesuffix(".wav")


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
        f = open(path, encoding="utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    with f:
        try:
            for lineno, line in enumerate(f, 1):
                fields = line.split()
                if fields and not fields[0].startswith("#"):
                    if len(line) > MAX_ID_CHARS:
                        _check_field_lengths(path, lineno, fields)
                    yield lineno, fields
        except UnicodeDecodeError as e:
            raise TrialsError(f"{path}: not a UTF-8 text file ({e.reason})") from None


def _check_field_lengths(path: str | os.PathLike, lineno: int, fields: list[str]) -> None:
    for field in fields:
        if len(field) > MAX_ID_CHARS:
            raise TrialsError(f"{path}:{lineno}: a field of {len(field)} characters (ids are at most {MAX_ID_CHARS}): "
                              f"{shorten(field)!r}")


def _raise_long_field(path: str | os.PathLike) -> None:
    """Name the line of the first over-long field (:func:`_data_lines` raises there)."""
    for _ in _data_lines(path):
        pass


def _id_array(ids: list[str], path: str | os.PathLike) -> np.ndarray:
    """Ids as a numpy str array; as an object array when the fixed width of the longest id
    would make the array far larger than the file (memory stays proportional to the input)."""
    if not ids:
        return np.asarray(ids, dtype=str)
    width = max(map(len, ids))
    try:
        size = os.stat(path).st_size
    except OSError:
        size = 0
    if 4 * width * len(ids) > 8 * size + (1 << 20):
        return np.asarray(ids, dtype=object)
    return np.asarray(ids)


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


_NCOLS = {"voxceleb": 3, "kaldi": 3, "pairs": 2}
# (enroll column, test column, label column or None, label map) of each form
_LAYOUT = {"voxceleb": (1, 2, 0, _VOX_LABELS), "kaldi": (0, 1, 2, _KALDI_LABELS), "pairs": (0, 1, None, None)}
_BLOCK_BYTES = 1 << 22


def _check_lines(path: str | os.PathLike) -> tuple[str, int]:
    """Line-by-line validation: raise TrialsError at the first bad line; return (form, count)."""
    form = None
    first = count = 0
    for lineno, f in _data_lines(path):
        if form is None:
            form, first = _detect_form(f), lineno
            if form is None:
                raise TrialsError(
                    f"{path}:{lineno}: not a trial line: {shorten(' '.join(f))!r}; expected " + " or ".join(_FORMS.values())
                )
        label_col, labels = _LAYOUT[form][2:]
        if len(f) != _NCOLS[form] or (label_col is not None and f[label_col] not in labels):
            raise TrialsError(f"{path}:{lineno}: expected {_FORMS[form]} as on line {first}, got {shorten(' '.join(f))!r}")
        count += 1
    if form is None:
        raise TrialsError(f"{path}: no trials in the file")
    return form, count


def _normalise_ids(ids: Iterable[str], keep: bool = False, path: str | os.PathLike = "") -> np.ndarray:
    return _id_array(list(ids) if keep else [i.removesuffix(".wav") for i in ids], path)


def _first_of_each_pair(enroll: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the first row of each distinct pair, sorted; pair number of every row)."""
    _, e_inv = np.unique(enroll, return_inverse=True)
    t_uniq, t_inv = np.unique(test, return_inverse=True)
    key = e_inv.astype(np.int64) * max(1, t_uniq.size) + t_inv
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return first, first[inverse.reshape(-1)]


def _line_numbers(path: str | os.PathLike, rows: Sequence[int]) -> dict[int, int]:
    """File line numbers of the given data rows (0-based index among non-comment lines)."""
    wanted = set(rows)
    out: dict[int, int] = {}
    for i, (lineno, _) in enumerate(_data_lines(path)):
        if i in wanted:
            out[i] = lineno
            if len(out) == len(wanted):
                break
    return out


def _drop_repeated_pairs(
    path: str | os.PathLike, enroll: np.ndarray, test: np.ndarray, labels: np.ndarray | None, what: str
) -> np.ndarray | None:
    """The rule for repeated pairs (module docstring): the rows to keep, or None for all.

    Raises TrialsError ``<path>:<line>: ...`` for a pair listed with both labels.
    """
    if enroll.size < 2:
        return None
    first, first_of_row = _first_of_each_pair(enroll, test)
    if first.size == enroll.size:
        return None
    if labels is not None:
        clash = np.flatnonzero(labels != labels[first_of_row])
        if clash.size:
            row, orig = int(clash[0]), int(first_of_row[clash[0]])
            lines = _line_numbers(path, [row, orig])
            raise TrialsError(
                f"{path}:{lines.get(row, '?')}: pair {shorten(enroll[row])} {shorten(test[row])} is listed as "
                f"{'target' if labels[row] else 'nontarget'} here and as "
                f"{'target' if labels[orig] else 'nontarget'} on line {lines.get(orig, '?')}; "
                "a pair must have one label"
            )
    keep = np.sort(first)
    logger.warning(
        "%s: %d repeated %s dropped (each enroll-test pair counts once; the first line of each is kept)",
        path, enroll.size - keep.size, what,
    )
    return keep


def _row_blocks(path: str | os.PathLike) -> Iterator[list[list[str]]]:
    """Blocks of split, non-comment, non-empty lines of a text file (the fast path's reader)."""
    try:
        f = open(path, encoding="utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    try:
        with f:
            for block in iter(lambda: f.readlines(_BLOCK_BYTES), []):
                rows = [r for r in map(str.split, block) if r and not r[0].startswith("#")]
                if max(map(len, block)) > MAX_ID_CHARS and any(len(x) > MAX_ID_CHARS for r in rows for x in r):
                    _raise_long_field(path)
                if rows:
                    yield rows
    except UnicodeDecodeError as e:
        raise TrialsError(f"{path}: not a UTF-8 text file ({e.reason})") from None


def read_trial_list(path: str | os.PathLike, keep_ids: bool = False) -> TrialList:
    """Read a trial list (any of the three forms, detected from its first line) as arrays.

    Repeated pairs follow the module's rule; ``keep_ids`` skips the id normalisation.

    Fast path: blocks of lines are split and checked column-wise (no per-field Python work);
    anything unexpected hands over to a line-by-line pass that names the first bad line.
    """
    enroll: list[str] = []
    test: list[str] = []
    label_tokens: list[str] = []
    form = None
    for rows in _row_blocks(path):
        if form is None:
            form = _detect_form(rows[0])
            if form is None:
                break
        if set(map(len, rows)) != {_NCOLS[form]}:
            form = None
            break
        e_col, t_col, l_col, _ = _LAYOUT[form]
        enroll.extend(map(itemgetter(e_col), rows))
        test.extend(map(itemgetter(t_col), rows))
        if l_col is not None:
            label_tokens.extend(map(itemgetter(l_col), rows))
    labels = None
    if form is not None and form != "pairs":
        tokens = np.asarray(label_tokens)
        label_map = _LAYOUT[form][3]
        positive = next(k for k, v in label_map.items() if v == 1)
        if np.isin(tokens, list(label_map)).all():
            labels = (tokens == positive).astype(np.int8)
        else:
            form = None
    if form is None:  # something is wrong: find and report the first bad line
        _check_lines(path)
        raise TrialsError(f"{path}: could not be read as a trial list")  # not reached: _check_lines raised
    logger.debug("%s: %d trials (%s form)", path, len(enroll), form)
    e_ids, t_ids = _normalise_ids(enroll, keep_ids, path), _normalise_ids(test, keep_ids, path)
    keep = _drop_repeated_pairs(path, e_ids, t_ids, labels, "trials")
    if keep is not None:
        e_ids, t_ids = e_ids[keep], t_ids[keep]
        labels = None if labels is None else labels[keep]
    return TrialList(e_ids, t_ids, labels, str(path))


def read_trials(path: str | os.PathLike, keep_ids: bool = False) -> list[tuple[str, str, int | None]]:
    """Trials as ``(enroll, test, label)`` tuples; label 1/0, or None for unlabelled lists."""
    return read_trial_list(path, keep_ids).as_tuples()


def _check_score_lines(path: str | os.PathLike) -> None:
    """Line-by-line validation of a score file: raise TrialsError at the first bad line."""
    ncols = first = 0
    for lineno, f in _data_lines(path):
        if not ncols:
            ncols, first = len(f), lineno
            if ncols not in (3, 4):
                raise TrialsError(
                    f"{path}:{lineno}: expected '<enroll-id> <test-id> <score> [<label>]', got {shorten(' '.join(f))!r}"
                )
        if len(f) != ncols:
            raise TrialsError(f"{path}:{lineno}: {len(f)} columns but line {first} has {ncols}")
        if ncols == 4 and f[3] not in _SCORE_LABELS:
            raise TrialsError(f"{path}:{lineno}: label must be target/nontarget or 1/0, got {shorten(f[3])!r}")
    if not ncols:
        raise TrialsError(f"{path}: no scores in the file")


def read_scores(path: str | os.PathLike) -> ScoreList:
    """Read a score file ``enroll test score [label]``; scores must be finite numbers.

    Same fast path as :func:`read_trial_list` (column-wise checks per block of lines, with a
    line-by-line pass to name the first bad line when something is wrong).
    """
    enroll: list[str] = []
    test: list[str] = []
    raw: list[str] = []
    label_tokens: list[str] = []
    ncols = 0
    ok = True
    for rows in _row_blocks(path):
        ncols = ncols or len(rows[0])
        if ncols not in (3, 4) or set(map(len, rows)) != {ncols}:
            ok = False
            break
        enroll.extend(map(itemgetter(0), rows))
        test.extend(map(itemgetter(1), rows))
        raw.extend(map(itemgetter(2), rows))
        if ncols == 4:
            label_tokens.extend(map(itemgetter(3), rows))
    labels = None
    if ok and ncols == 4:
        tokens = np.asarray(label_tokens)
        ok = bool(np.isin(tokens, list(_SCORE_LABELS)).all())
        labels = ((tokens == "1") | (tokens == "target")).astype(np.int8)
    if not ok or not ncols:
        _check_score_lines(path)
        raise TrialsError(f"{path}: could not be read as a score file")  # not reached
    scores = _parse_scores(path, raw)
    e_ids, t_ids = _normalise_ids(enroll, path=path), _normalise_ids(test, path=path)
    keep = _drop_repeated_pairs(path, e_ids, t_ids, labels, "scores")
    if keep is not None:
        e_ids, t_ids, scores = e_ids[keep], t_ids[keep], scores[keep]
        labels = None if labels is None else labels[keep]
    return ScoreList(e_ids, t_ids, scores, labels, str(path))


def _parse_scores(path: str | os.PathLike, raw: list[str]) -> np.ndarray:
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
                raise TrialsError(f"{path}:{lineno}: score {shorten(f[2])!r} is not a finite number")
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
    e_list = np.asarray(enroll).tolist()
    t_list = np.asarray(test).tolist()
    s_list = scores.tolist()
    if labels is None:
        fmt = f"{{}} {{}} {{:.{precision}f}}\n".format
        lines = map(fmt, e_list, t_list, s_list)
    else:
        fmt = f"{{}} {{}} {{:.{precision}f}} {{}}\n".format
        names = np.array(["nontarget", "target"])[np.asarray(labels, dtype=np.intp)].tolist()
        lines = map(fmt, e_list, t_list, s_list, names)
    with atomic_write(path) as f:
        f.writelines(lines)
