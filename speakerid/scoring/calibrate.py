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

Default operating point: a Bayes threshold at P_target 0.01 assumes the calibration holds far
out in the tails, which a pooled multi-corpus dev list rarely gives (decisions then reject almost
every genuine trial). ``target_fa`` (``speakerid calibrate --target-fa 0.01``) instead measures it:
the LLR threshold at which that fraction of the dev non-target trials is accepted
(:func:`threshold_at_fa`), stored as the equivalent prior ``default_p_target = sigmoid(-threshold)``
(so ``-logit(default_p_target)`` is that threshold). ``verify`` / ``identify`` use it when no
``--p-target`` / ``--threshold`` is given.
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
from speakerid.limits import shorten
from speakerid.scoring.backend import BACKENDS
from speakerid.scoring.metrics import DEFAULT_P_TARGETS, compute_act_dcf, compute_cllr
from speakerid.scoring.sorting import validate_scores

__all__ = [
    "CalibrationError",
    "Calibration",
    "fit_calibration",
    "calibration_report",
    "calibrate_score_file",
    "apply_calibration_file",
    "plausible_score_range",
    "decision_problem",
    "check_fit",
    "threshold_at_fa",
    "with_operating_point",
]

logger = logging.getLogger(__name__)

_FORMAT = "speakerid-calibration"
_C = 1e4
#: the raw scores a calibration can be fitted on: cosine similarity, or cosine after AS-norm


class CalibrationError(ValueError):
    """An unreadable calibration file, or dev scores no calibration can be fitted on (the
    message names the file)."""


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


@dataclass(frozen=True)
class Calibration:
    """``llr = a * score + b``; ``prior`` is the effective target prior it was trained at.

    ``score`` names the raw score the map expects (:data:`speakerid.scoring.backend.BACKENDS`; files written before
    it existed mean "cosine"); ``score_min``/``score_max`` the range of the dev scores it was
    fitted on (None when unknown). ``default_p_target``: the prior whose Bayes threshold is the
    measured default operating point, about ``target_fa`` false accepts on the dev trials (None:
    none measured; see the module doc).
    """

    a: float
    b: float
    prior: float
    n_targets: int = 0
    n_nontargets: int = 0
    score: str = "cosine"
    score_min: float | None = None
    score_max: float | None = None
    default_p_target: float | None = None
    target_fa: float | None = None

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
            cal = cls(float(d["a"]), float(d["b"]), float(d["prior"]), int(d.get("n_targets", 0)), int(d.get("n_nontargets", 0)),
                      str(d.get("score", "cosine")),
                      *(None if d.get(k) is None else float(d[k])
                        for k in ("score_min", "score_max", "default_p_target", "target_fa")))
        except (KeyError, TypeError, ValueError) as e:
            raise CalibrationError(f"{path}: bad or missing field ({e})") from None
        for key in ("default_p_target", "target_fa"):
            value = getattr(cal, key)
            if value is not None and not 0 < value < 1:
                raise CalibrationError(f"{path}: {key} must be in (0, 1), got {value}")
        if cal.score not in BACKENDS:
            raise CalibrationError(f"{path}: 'score' must name a scoring backend ({', '.join(BACKENDS)}), got {cal.score!r}")
        if not all(math.isfinite(v) for v in (cal.a, cal.b, cal.prior)) or not 0 < cal.prior < 1:
            raise CalibrationError(f"{path}: a, b must be finite and prior in (0, 1)")
        return cal


def fit_calibration(
    scores: np.ndarray | Iterable[float], labels: np.ndarray | Iterable, prior: float | None = None,
    score_kind: str = "cosine",
) -> Calibration:
    """Fit ``llr = a*score + b`` on labelled dev scores (see the module docstring).

    ``score_kind``: what the scores are (:data:`speakerid.scoring.backend.BACKENDS`), stored with the map so that
    ``verify`` applies it to the same kind of score."""
    if score_kind not in BACKENDS:
        raise ValueError(f"score kind must name a scoring backend ({', '.join(BACKENDS)}), got {score_kind!r}")
    from sklearn.linear_model import LogisticRegression

    s, lab = validate_scores(scores, labels)
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
    with np.errstate(over="ignore", invalid="ignore"):  # refused below, without numpy's warning
        mu, sd = float(s.mean()), float(s.std())
    if not (math.isfinite(mu) and math.isfinite(sd)):
        raise ValueError(f"scores too large to fit (largest magnitude {float(np.abs(s).max()):.4g}; "
                         "their spread overflows float64)")
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
    return Calibration(a, b, float(prior), n_t, n_n, score_kind, float(s.min()), float(s.max()))


ROUND_TRIP_MARGIN = 1e-9  # >> the ~1e-16 error of threshold -> prior -> threshold; << any score gap that matters


def threshold_at_fa(llrs: np.ndarray, labels: np.ndarray, target_fa: float) -> float:
    """A threshold ``t`` that accepts the most non-targets with ``mean(llr[non-targets] >= t) <= target_fa``
    (ties counted as accepted): just above the ``floor(target_fa * N)``-th highest non-target, by
    ``ROUND_TRIP_MARGIN`` (relative) or half the gap to the next higher distinct one when that is less.
    Not one ulp above: the threshold is stored as a prior (``default_p_target``) and turned back into a
    threshold, and that round trip must not move a dev trial across it (one ulp did: the FA rate read
    1.00 % or 1.01 % from run to run)."""
    if not 0.0 < target_fa < 1.0:
        raise ValueError(f"target false-accept rate must be in (0, 1), got {target_fa}")
    non = np.sort(np.asarray(llrs, dtype=np.float64)[~np.asarray(labels, dtype=bool)])[::-1]
    if non.size == 0:
        raise ValueError("no non-target trials: cannot measure a false-accept rate")
    k = min(int(math.floor(target_fa * non.size + 1e-9)), non.size - 1)
    step = ROUND_TRIP_MARGIN * max(1.0, abs(float(non[k])))
    higher = non[:k][non[:k] > non[k]]
    if higher.size:
        step = min(step, 0.5 * float(higher[-1] - non[k]))
    return float(max(non[k] + step, np.nextafter(non[k], np.inf)))


def with_operating_point(cal: Calibration, scores: np.ndarray, labels: np.ndarray, target_fa: float) -> Calibration:
    """``cal`` plus the default operating point measured on these dev scores (module doc)."""
    import dataclasses

    threshold = threshold_at_fa(cal.apply(scores), labels, target_fa)
    p = 1.0 / (1.0 + math.exp(min(threshold, 700.0)))
    if not 0.0 < p < 1.0:
        raise ValueError(f"the threshold {threshold:.3g} at {target_fa:g} false accepts has no prior in (0, 1)")
    return dataclasses.replace(cal, default_p_target=p, target_fa=float(target_fa))


# ---------------------------------------------------------------------- usable decisions
def plausible_score_range(cal: Calibration) -> tuple[float, float] | None:
    """Raw scores a trial can plausibly have: [-1, 1] for cosine; for AS-norm (unbounded) the
    fitted dev range widened by its width on each side; None when that is unknown."""
    if cal.score == "cosine":
        return -1.0, 1.0
    if cal.score_min is None or cal.score_max is None:
        return None
    width = cal.score_max - cal.score_min
    return cal.score_min - width, cal.score_max + width


def decision_problem(cal: Calibration, p_target: float, source: str) -> str | None:
    """Why the Bayes threshold ``-logit(p_target)`` gives no usable decisions, or None.

    Degenerate: a slope that is not positive (higher scores do not mean "same speaker").
    Unreachable: over the plausible score range the LLR line never crosses the threshold, so
    every trial would be rejected (or every one accepted). The message names ``source`` and
    the priors at which the threshold is reachable."""
    if not (math.isfinite(cal.a) and cal.a > 0):
        return (f"{source}: degenerate calibration (slope a = {cal.a:.4g} <= 0: higher {cal.score} scores do not "
                "mean 'same speaker'); refit it on a labelled dev list or give --threshold")
    rng = plausible_score_range(cal)
    if rng is None:
        return None
    lo, hi = (cal.a * rng[0] + cal.b, cal.a * rng[1] + cal.b)
    threshold = -_logit(p_target)
    if lo < threshold <= hi:
        return None
    # reachable where lo < -logit(p) <= hi, i.e. sigmoid(-hi) <= p < sigmoid(-lo)
    p_lo, p_hi = 1 / (1 + math.exp(min(hi, 700))), 1 / (1 + math.exp(min(lo, 700)))
    what = "rejects every trial" if threshold > hi else "accepts every trial"
    return (f"{source}: at P_target {p_target:g} the Bayes threshold {threshold:.3f} is unreachable: the LLR over "
            f"{cal.score} scores [{rng[0]:.3g}, {rng[1]:.3g}] spans [{lo:.3f}, {hi:.3f}], so verify {what}; use "
            f"--p-target in [{p_lo:.3g}, {p_hi:.3g}) or --threshold")


def check_fit(
    cal: Calibration, scores: str | os.PathLike, output: str | os.PathLike, p_targets: Iterable[float] = DEFAULT_P_TARGETS
) -> list[str]:
    """After a fit on ``scores``: raise CalibrationError when the map is degenerate (nothing is
    written); return a warning line for every prior of ``p_targets`` whose Bayes threshold the
    map saved as ``output`` cannot reach."""
    if not (math.isfinite(cal.a) and cal.a > 0):
        raise CalibrationError(
            f"{scores}: degenerate calibration fit (slope a = {cal.a:.4g} <= 0: higher scores do not mean "
            f"'same speaker' in this dev list; check its labels); {output} not written"
        )
    return [msg for p in p_targets if (msg := decision_problem(cal, p, str(output)))]


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
    score_kind: str = "cosine",
    target_fa: float | None = None,
) -> tuple[Calibration, dict[str, dict[str, float]]]:
    """``speakerid calibrate --scores dev.txt --output cal.json``: fit on a labelled dev score
    file (labels from its 4th column or ``trials``), save the map, return it with the
    before/after report on the dev list. A degenerate fit is an error (nothing written); a
    Bayes threshold the map cannot reach at P_target 0.01 / 0.05 is logged as a warning.
    ``target_fa``: also store the default operating point at that dev false-accept rate."""
    from speakerid.scoring.labelled_scores import read_labelled_scores

    sl = read_labelled_scores(scores, trials)
    try:
        cal = fit_calibration(sl.scores, sl.labels, prior, score_kind)
        if target_fa is not None and cal.a > 0:
            cal = with_operating_point(cal, sl.scores, sl.labels, target_fa)
    except ValueError as e:  # one class only, all scores equal, a bad prior: name the score file
        raise CalibrationError(f"{scores}: cannot fit a calibration: {e}") from None
    for warning in check_fit(cal, scores, output):
        logger.warning("%s", warning)
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
    from speakerid.scoring.labelled_scores import read_labelled_scores
    from speakerid.scoring.trials import write_scores

    cal = Calibration.load(calibration)
    sl = read_labelled_scores(scores, trials, require_labels=False)
    with np.errstate(over="ignore", invalid="ignore"):  # refused below, without numpy's warning
        llrs = cal.apply(sl.scores)
    bad = np.flatnonzero(~np.isfinite(llrs))
    if bad.size:  # checked before anything is written
        i = int(bad[0])
        raise CalibrationError(
            f"{scores}: score {sl.scores[i]:.4g} of trial {shorten(sl.enroll[i])} {shorten(sl.test[i])} gives a "
            f"non-finite LLR under {calibration} ({bad.size} such score(s)); {output} not written"
        )
    write_scores(output, sl.enroll, sl.test, llrs, sl.labels)
    report = None
    if sl.labels is not None and 0 < int(sl.labels.sum()) < sl.labels.size:
        report = calibration_report(sl.scores, llrs, sl.labels)
    return cal, report
