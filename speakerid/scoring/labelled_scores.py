"""Score files with their labels: a score file joined to a labelled trial list by id pair
(``speakerid eval`` / ``calibrate --trials``), or its own label column."""

from __future__ import annotations

import os

import numpy as np

from speakerid.limits import shorten
from speakerid.scoring.trials import ScoreList, TrialList, TrialsError, read_scores, read_trial_list


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
            raise TrialsError(f"{trials.path}: trial {shorten(e)} {shorten(t)} appears with both labels")
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
            f"(first: {shorten('; '.join(missing[:3]), 240)})"
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
