"""``speakerid verify --trials FILE``: many (enrolled speaker, audio file) trials in one process.

The trial list is read by :func:`speakerid.scoring.trials.read_trial_list` (any of its forms:
``speaker audio``, ``speaker audio target|nontarget`` or ``1|0 speaker audio``). The test
column is an audio path, taken as given (relative to the current directory), else relative
to the trial file's folder; since the trial-list id rule strips a trailing ``.wav``, the file
is looked up with and without it. Every speaker and every file is checked before any audio is
embedded; each distinct file is embedded once (a tqdm progress bar), then all trials are
scored in one vectorised pass with the DB's rule and decision.

Outputs (each written atomically): ``output``, a score file ``speaker test score [label]``
(the decision score: the LLR when the model is calibrated; the label column when the list has
one, so ``speakerid eval --scores`` reads it directly), and ``decisions`` (default
``<output>.decisions``), ``speaker test score accept|reject`` lines.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from speakerid.enroll.records import SpeakerDBError
from speakerid.limits import shorten

logger = logging.getLogger(__name__)

EMBED_CHUNK = 32


def _resolve_audio(test_id: str, trials: Path) -> Path | None:
    for base in (Path.cwd(), trials.resolve().parent):
        for name in (test_id, test_id + ".wav"):
            p = base / name
            if p.is_file():
                return p
    return None


def verify_trial_list(db, trials: str | os.PathLike, output: str | os.PathLike,
                      decisions: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """Score the trials of ``trials`` against ``db`` (a :class:`speakerid.enroll.speaker_db.SpeakerDB`);
    return a summary (counts of trials / accepts, output paths)."""
    from tqdm import tqdm

    from speakerid.enroll.rules import score_pairs
    from speakerid.fileio import atomic_write
    from speakerid.scoring.trials import read_trial_list, write_scores

    trials = Path(trials)
    tl = read_trial_list(trials)
    if len(tl) == 0:
        raise SpeakerDBError(f"{trials}: no trials in the file")
    model = db._require_model("verify --trials")
    rule = db.decision()
    speakers = sorted(set(tl.enroll.tolist()))
    refs = db.references(speakers)  # unknown speakers / model mismatch: before any audio work
    tests = sorted(set(tl.test.tolist()))
    files = {}
    missing = []
    for t in tests:
        p = _resolve_audio(t, trials)
        if p is None:
            missing.append(t)
        files[t] = p
    if missing:
        raise SpeakerDBError(f"{trials}: {len(missing)} audio file(s) not found, e.g. {shorten(missing[0])!r} "
                             f"(paths are relative to the current directory or to {trials.resolve().parent})")
    # one embedding per distinct FILE: the spellings ./a.flac, a.flac, x/../a.flac are one file
    real = sorted({files[t].resolve() for t in tests})
    row_of_file = {p: i for i, p in enumerate(real)}
    row_of_test = np.array([row_of_file[files[t].resolve()] for t in tests], dtype=np.int64)
    emb = np.zeros((len(real), int(model.extractor.embed_dim)), dtype=np.float32)
    bar = tqdm(total=len(real), desc="embedding test files", unit="file", disable=not progress)
    for start in range(0, len(real), EMBED_CHUNK):
        chunk = real[start : start + EMBED_CHUNK]
        emb[start : start + len(chunk)] = model.embed(chunk)
        bar.update(len(chunk))
    bar.close()
    spk_idx = np.searchsorted(np.asarray(speakers), tl.enroll)
    test_idx = row_of_test[np.searchsorted(np.asarray(tests), tl.test)]
    s = score_pairs([r.refs for r in refs], emb, spk_idx, test_idx, db.score_rule, db.score_top_k, rule.backend)
    dec, _ = rule.apply(s)
    accept = dec >= rule.threshold
    write_scores(output, tl.enroll, tl.test, dec, tl.labels)
    decisions = Path(decisions) if decisions is not None else Path(f"{output}.decisions")
    with atomic_write(decisions) as f:
        f.writelines(f"{e} {t} {d:.6f} {'accept' if a else 'reject'}\n"
                     for e, t, d, a in zip(tl.enroll.tolist(), tl.test.tolist(), dec.tolist(), accept.tolist()))
    summary = {
        "trials": int(len(tl)), "accepted": int(accept.sum()), "rejected": int((~accept).sum()),
        "score_kind": rule.kind, "calibrated": rule.calibration is not None, "rule": db.score_rule,
        "threshold": rule.threshold, "threshold_source": rule.source,
        "scores": str(output), "decisions": str(decisions),
    }
    if tl.labels is not None:
        lab = tl.labels.astype(bool)
        summary["false_accepts"] = int((accept & ~lab).sum())
        summary["misses"] = int((~accept & lab).sum())
    logger.info("%s: %d trials scored, %d accepted -> %s, %s", trials, len(tl), summary["accepted"], output, decisions)
    return summary
