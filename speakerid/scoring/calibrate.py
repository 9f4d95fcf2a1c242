"""Linear score calibration: raw scores -> log-likelihood ratios by logistic regression.

The map is ``llr = a * score + b``, fitted by (prior-weighted) linear logistic regression on a
labelled dev list, the approach of the BOSARIS/FoCal toolkits (Brümmer & du Preez 2006,
"Application-independent evaluation of speaker detection", Computer Speech and Language
20(2-3), Sec. 6; Brümmer et al. 2007, "Fusion of heterogeneous speaker recognition systems in
the STBU submission for the NIST SRE 2006", eq. 4). Logistic regression outputs posterior
log-odds at the training prior pi, ``log P(tar|s)/P(non|s) = LLR + logit(pi)``, so
``logit(pi)`` is subtracted from the offset to leave an LLR. By default pi is the empirical
proportion of targets; with ``prior`` the classes are re-weighted so the effective training
prior is ``prior`` (BOSARIS ``train_llr_fusion``), which focuses the fit on that operating point.

Fitted with scikit-learn's ``LogisticRegression`` (lbfgs) on standardised scores, with a
negligible L2 penalty (C=1e4) that only matters when the dev scores separate the classes
perfectly, where unpenalised LR has no finite solution.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np

from speakerid.fileio import write_text_atomic
from speakerid.scoring.metrics import DEFAULT_P_TARGETS, _validate, compute_act_dcf, compute_cllr

__all__ = [
    "CalibrationError",
    "Calibration",
    "fit_calibration",
    "calibration_report",
    "calibrate_score_file",
    "apply_calibration_file",
]

logger = logging.getLogger(__name__)

_FORMAT = "speakerid-calibration"
_C = 1e4


class CalibrationError(ValueError):
    """An unreadable calibration file, or dev scores no calibration can be fitted on (the
    message names the file)."""


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


@dataclass(frozen=True)
class Calibration:
    """``llr = a * score + b``; ``prior`` is the effective target prior it was trained at."""

    a: float
    b: float
    prior: float
    n_targets: int = 0
    n_nontargets: int = 0

    def apply(self, scores: np.ndarray | Iterable[float]) -> np.ndarray:
        """Calibrated LLRs (float64) of raw scores."""
        return np.asarray(scores, dtype=np.float64) * self.a + self.b

    def to_dict(self) -> dict:
        return {"format": _FORMAT, "version": 1, "kind": "linear", **asdict(self)}

    def save(self, path: str | os.PathLike) -> None:
        """Write the map as a small JSON file (atomically)."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Calibration":
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CalibrationError(f"{path}: not a JSON file ({e})") from None
        if not isinstance(d, dict) or d.get("format") != _FORMAT or d.get("kind") != "linear":
            raise CalibrationError(f"{path}: not a speakerid linear calibration file")
        try:
            cal = cls(float(d["a"]), float(d["b"]), float(d["prior"]), int(d.get("n_targets", 0)), int(d.get("n_nontargets", 0)))
        except (KeyError, TypeError, ValueError) as e:
            raise CalibrationError(f"{path}: bad or missing field ({e})") from None
        if not all(math.isfinite(v) for v in (cal.a, cal.b, cal.prior)) or not 0 < cal.prior < 1:
            raise CalibrationError(f"{path}: a, b must be finite and prior in (0, 1)")
        return cal


def fit_calibration(
    scores: np.ndarray | Iterable[float], labels: np.ndarray | Iterable, prior: float | None = None
) -> Calibration:
    """Fit ``llr = a*score + b`` on labelled dev scores (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression

    s, lab = _validate(scores, labels)
    s = s.astype(np.float64, copy=False)
    n_t = int(lab.sum())
    n_n = s.size - n_t
    if prior is None:
        prior = n_t / s.size
        weight = None
    else:
        if not 0.0 < prior < 1.0:
            raise ValueError(f"prior must be in (0, 1), got {prior}")
        # class weights summing to N with the target share equal to `prior`
        weight = np.where(lab, prior * s.size / n_t, (1.0 - prior) * s.size / n_n)
    mu, sd = float(s.mean()), float(s.std())
    if sd == 0.0:
        raise ValueError("all dev scores are equal: nothing to calibrate")
    z = ((s - mu) / sd)[:, None]
    lr = LogisticRegression(C=_C, solver="lbfgs", max_iter=1000, tol=1e-10)
    lr.fit(z, lab.astype(np.int8), sample_weight=weight)
    w, c = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    a = w / sd
    b = c - w * mu / sd - _logit(prior)
    if a <= 0:
        logger.warning("calibration slope %.3g <= 0: higher scores do not mean 'same speaker' on this dev list", a)
    return Calibration(a, b, float(prior), n_t, n_n)


def calibration_report(
    raw: np.ndarray, llrs: np.ndarray, labels: np.ndarray, p_targets: Iterable[float] = DEFAULT_P_TARGETS
) -> dict[str, dict[str, float]]:
    """actDCF at each prior and Cllr of the raw scores (read as LLRs) and of the calibrated ones."""
    out: dict[str, dict[str, float]] = {}
    for name, x in (("before", raw), ("after", llrs)):
        row = {f"act_dcf_{p:g}": compute_act_dcf(x, labels, p) for p in p_targets}
        row["cllr"] = compute_cllr(x, labels)
        out[name] = row
    return out


def calibrate_score_file(
    scores: str | os.PathLike,
    output: str | os.PathLike,
    trials: str | os.PathLike | None = None,
    prior: float | None = None,
) -> tuple[Calibration, dict[str, dict[str, float]]]:
    """``speakerid calibrate --scores dev.txt --output cal.json``: fit on a labelled dev score
    file (labels from its 4th column or ``trials``), save the map, return it with the
    before/after report on the dev list."""
    from speakerid.scoring.trials import read_labelled_scores

    sl = read_labelled_scores(scores, trials)
    try:
        cal = fit_calibration(sl.scores, sl.labels, prior)
    except ValueError as e:  # one class only, all scores equal, a bad prior: name the score file
        raise CalibrationError(f"{scores}: cannot fit a calibration: {e}") from None
    cal.save(output)
    logger.info("%s: llr = %.6g * score + %.6g (prior %.3g)", output, cal.a, cal.b, cal.prior)
    return cal, calibration_report(sl.scores, cal.apply(sl.scores), sl.labels)


def apply_calibration_file(
    calibration: str | os.PathLike,
    scores: str | os.PathLike,
    output: str | os.PathLike,
    trials: str | os.PathLike | None = None,
) -> tuple[Calibration, dict[str, dict[str, float]] | None]:
    """``speakerid calibrate --apply cal.json --scores S --output S.calibrated``: write the LLR
    score file (labels kept); with labels known, also the before/after report."""
    from speakerid.scoring.trials import read_labelled_scores, write_scores

    cal = Calibration.load(calibration)
    sl = read_labelled_scores(scores, trials, require_labels=False)
    llrs = cal.apply(sl.scores)
    write_scores(output, sl.enroll, sl.test, llrs, sl.labels)
    report = None
    if sl.labels is not None and 0 < int(sl.labels.sum()) < sl.labels.size:
        report = calibration_report(sl.scores, llrs, sl.labels)
    return cal, report
