"""Metrics: exact agreement with a brute-force threshold loop (many ties), with the usual
sklearn ROC interpolation, the DCF normalisation of docs/ARCHITECTURE.md, and clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from sklearn.metrics import roc_curve

from speakerid.scoring import metrics as M
from speakerid.scoring.sorting import MetricsError
from speakerid.scoring.metrics import compute_act_dcf, compute_cllr, compute_eer, compute_metrics, compute_min_dcf, operating_points

# --------------------------------------------------------------------------------------
# independent brute force: every candidate threshold, counted with plain Python


def brute_points(scores: list[float], labels: list[int]) -> list[tuple[float, float, float]]:
    """(threshold, P_miss, P_fa) for every distinct score and +inf, accept = score >= t."""
    tar = [s for s, lab in zip(scores, labels) if lab]
    non = [s for s, lab in zip(scores, labels) if not lab]
    out = []
    for t in sorted(set(scores)) + [math.inf]:
        p_miss = sum(1 for s in tar if s < t) / len(tar)
        p_fa = sum(1 for s in non if s >= t) / len(non)
        out.append((t, p_miss, p_fa))
    return out


def brute_eer(scores: list[float], labels: list[int]) -> float:
    pts = brute_points(scores, labels)
    for (_, m0, f0), (_, m1, f1) in zip(pts, pts[1:]):
        if m1 >= f1:  # first point at or past the crossing; interpolate from the previous one
            a = (f0 - m0) / ((f0 - m0) + (m1 - f1))
            return m0 + a * (m1 - m0)
    raise AssertionError("no crossing")


def brute_min_dcf(scores, labels, p, c_miss=1.0, c_fa=1.0) -> float:
    norm = min(c_miss * p, c_fa * (1 - p))
    return min((c_miss * p * m + c_fa * (1 - p) * f) / norm for _, m, f in brute_points(scores, labels))


# scores: small integers (lots of ties), mapped through transforms that take every sort route:
# float32-representable values (32-bit packed keys) and other float64 of one or both signs
# (two-part 64-bit packing)
TRANSFORMS = {
    "f64_int": lambda x: np.asarray(x, dtype=np.float64),
    "f32_int": lambda x: np.asarray(x, dtype=np.float32),
    "f64_small": lambda x: np.asarray(x, dtype=np.float64) / 30.000001,
    "f64_wide": lambda x: np.asarray(x, dtype=np.float64) * 1e5 / 3.0,
}


@st.composite
def tied_lists(draw):
    n = draw(st.integers(2, 40))
    scores = draw(st.lists(st.integers(-4, 4), min_size=n, max_size=n))
    labels = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    if all(labels) or not any(labels):
        labels[0] = 1 - labels[0]
    return scores, labels, draw(st.sampled_from(sorted(TRANSFORMS)))


@settings(max_examples=200, deadline=None)
@given(tied_lists())
def test_metrics_match_brute_force_with_ties(case):
    ints, labels, tname = case
    s = TRANSFORMS[tname](ints)
    s_list = s.astype(np.float64).tolist()
    eer, thr = compute_eer(s, labels)
    assert eer == pytest.approx(brute_eer(s_list, labels), abs=1e-12)
    for p in (0.01, 0.05, 0.3):
        value, t = compute_min_dcf(s, labels, p)
        assert value == pytest.approx(brute_min_dcf(s_list, labels, p), abs=1e-12)
        # the returned threshold attains that cost
        pm = np.mean(s[np.asarray(labels) == 1] < t)
        pf = np.mean(s[np.asarray(labels) == 0] >= t)
        assert (p * pm + (1 - p) * pf) / min(p, 1 - p) == pytest.approx(value, abs=1e-12)
    value, _ = compute_min_dcf(s, labels, 0.2, c_miss=3.0, c_fa=0.5)
    assert value == pytest.approx(brute_min_dcf(s_list, labels, 0.2, 3.0, 0.5), abs=1e-12)
    # one-sort function gives the same numbers
    m = compute_metrics(s, labels)
    assert (m.eer, m.eer_threshold) == (eer, thr)
    assert m.min_dcf[0.01][0] == pytest.approx(brute_min_dcf(s_list, labels, 0.01), abs=1e-12)
    # every sort route gives identical operating points, and the blocked one-pass scan (any
    # block size: tie groups straddle block edges) finds exactly the same EER and minDCF points
    ref = operating_points(s, labels, method="argsort")
    ref_eer = M.eer_point(ref)
    ref_dcf = {p: M.min_dcf_point(ref, p) for p in (0.01, 0.05)}
    for method in ("auto", "packed64"):
        op = operating_points(s, labels, method=method)
        np.testing.assert_array_equal(op.targets_below, ref.targets_below)
        np.testing.assert_array_equal(op.nontargets_below, ref.nontargets_below)
        np.testing.assert_array_equal(op.thresholds(), ref.thresholds())
        assert M.compute_metrics(s, labels, method=method).eer == ref_eer[0]
        for block in (1, 3):
            srt = M.SortedScores(s, labels, method)
            scan = M._scan(srt, (0.01, 0.05), 1.0, 1.0, block=block)
            assert M._eer_from_pair(srt, scan.eer_pair) == ref_eer
            for p, (value, k) in ref_dcf.items():
                assert scan.min_dcf[p] == (pytest.approx(value, abs=1e-12), ref.positions[k])


def sklearn_eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """The usual route: ROC curve, linear interpolation, solve FPR = 1 - TPR."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return brentq(lambda x: 1.0 - np.interp(x, fpr, tpr) - x, 0.0, 1.0, xtol=1e-15, rtol=4 * np.finfo(float).eps)


@pytest.mark.parametrize("seed", range(6))
def test_eer_matches_sklearn_roc_interpolation(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    labels = rng.random(n) < 0.3
    scores = rng.standard_normal(n) + 1.5 * labels
    if seed % 2:  # coarse rounding: many ties, including across classes
        scores = np.round(scores, 1)
    if seed == 5:
        scores = scores.astype(np.float32)
    assert abs(compute_eer(scores, labels)[0] - sklearn_eer(scores, labels)) < 1e-9


def test_packed_routes_exact_against_plain_argsort():
    rng = np.random.default_rng(0)
    n = 50_000
    labels = rng.random(n) < 0.5
    cases = {
        "float32": rng.standard_normal(n).astype(np.float32),
        "float64 in (-1, 1)": np.tanh(rng.standard_normal(n)),
        "float64 wide": rng.standard_normal(n) * 50,
        "ties": np.round(rng.standard_normal(n), 2),
        "one sign": np.abs(rng.standard_normal(n)),
        "+-x pairs": np.repeat(rng.standard_normal(n // 2), 2) * np.tile([1.0, -1.0], n // 2),
    }
    for name, s in cases.items():
        ref = operating_points(s, labels, method="argsort")
        for method in ("auto", "packed64"):
            op = operating_points(s, labels, method=method)
            np.testing.assert_array_equal(op.targets_below, ref.targets_below, err_msg=name)
            np.testing.assert_array_equal(op.nontargets_below, ref.nontargets_below, err_msg=name)
            np.testing.assert_array_equal(op.thresholds(), ref.thresholds(), err_msg=name)
            m, m_ref = compute_metrics(s, labels, method=method), compute_metrics(s, labels, method="argsort")
            assert m == m_ref, name


def test_signed_zero_and_extremes_are_tied_and_decoded():
    big = np.finfo(np.float64).max
    s = np.array([-0.0, 0.0, 1e-300, -1e-300, big, -big, 5e-324, -5e-324])
    labels = np.array([1, 0, 1, 0, 1, 0, 0, 1])
    for method in ("auto", "argsort"):
        op = operating_points(s, labels, method=method)
        assert op.num_points == 8  # 7 distinct values (-0.0 == 0.0) + reject-all
        np.testing.assert_array_equal(op.thresholds()[:-1], np.unique(s))
        assert op.thresholds(7) == np.inf  # nothing is >= the float after the largest one
    np.testing.assert_array_equal(operating_points(s, labels).targets_below, operating_points(s, labels, "argsort").targets_below)
    f32 = np.array([-0.0, 0.0, 2.5, -2.5], dtype=np.float32)
    op32 = operating_points(f32, [1, 0, 1, 0])
    np.testing.assert_array_equal(op32.thresholds()[:-1], [-2.5, 0.0, 2.5])
    assert np.float32(op32.thresholds(3)) > np.float32(2.5)


def test_min_dcf_normalisation_by_hand():
    # targets {0, 1}, non-target {0.5}: points (P_miss, P_fa) = (0,1) (.5,1) (.5,0) (1,0)
    s, lab = [0.0, 1.0, 0.5], [1, 1, 0]
    # P_target 0.01: raw costs .99, .995, .005, .01 -> min .005 / min(.01, .99) = 0.5
    assert compute_min_dcf(s, lab, 0.01)[0] == pytest.approx(0.5)
    assert compute_min_dcf(s, lab, 0.01)[1] == 1.0
    # C_miss 10, P_target 0.5: raw .5, 3, 2.5, 5 -> min .5 / min(5, .5) = 1.0 (no better than trivial)
    assert compute_min_dcf(s, lab, 0.5, c_miss=10.0)[0] == pytest.approx(1.0)
    # EER: crossing between (.5, 1) and (.5, 0) -> 0.5 at threshold 0.5 + .5 * (1 - .5)
    assert compute_eer(s, lab) == pytest.approx((0.5, 0.75))


def test_act_dcf_and_cllr_by_hand():
    lab = np.array([1, 1, 0, 0])
    assert compute_cllr(np.zeros(4), lab) == pytest.approx(1.0)  # uninformative LLRs cost 1 bit
    assert compute_cllr([50.0, 60.0, -50.0, -70.0], lab) == pytest.approx(0.0, abs=1e-20)
    llr = np.array([3.0, 8.0, 4.0, -2.0])
    expected = (np.log1p(np.exp(-3)) + np.log1p(np.exp(-8))) / 2 + (np.log1p(np.exp(4)) + np.log1p(np.exp(-2))) / 2
    assert compute_cllr(llr, lab) == pytest.approx(expected / (2 * np.log(2)))
    # Bayes threshold for P_target 0.01 is log(99) ~ 4.595: target 3 missed, non-target 4 rejected
    assert compute_act_dcf(llr, lab, 0.01) == pytest.approx(0.01 * 0.5 / 0.01)
    # P_target 0.05 -> threshold log(19) ~ 2.944: nothing missed, non-target 4 accepted
    assert compute_act_dcf(llr, lab, 0.05) == pytest.approx(0.95 * 0.5 / 0.05)
    m = compute_metrics(llr, lab, calibrated=True)
    assert m.cllr == compute_cllr(llr, lab) and m.act_dcf[0.05] == compute_act_dcf(llr, lab, 0.05)
    assert {"eer", "min_dcf_0.01", "min_dcf_0.05", "act_dcf_0.01", "cllr"} <= set(m.to_dict())


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        ([0.1, np.nan, 0.3], [1, 0, 1], "NaN or infinite"),
        ([0.1, np.inf, 0.3], [1, 0, 1], "NaN or infinite"),
        ([0.1, 0.2, 0.3], [0, 0, 0], "no target"),
        ([0.1, 0.2, 0.3], [1, 1, 1], "no non-target"),
        ([0.1, 0.2, 0.3], [1, 0], "3 scores but 2 labels"),
        ([0.1, 0.2, 0.3], [1, 0, 2], "labels must be 0/1"),
    ],
)
def test_bad_inputs_raise_clear_errors(scores, labels, match):
    for fn in (compute_eer, compute_min_dcf, compute_cllr, compute_act_dcf, compute_metrics):
        with pytest.raises(MetricsError, match=match):
            fn(scores, labels)
    with pytest.raises(MetricsError, match="p_target"):
        compute_min_dcf([0.1, 0.2], [1, 0], p_target=1.5)
