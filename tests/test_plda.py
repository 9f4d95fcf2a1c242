"""Two-covariance PLDA (speakerid.scoring.plda): reductions, exact LLRs, fitting, file checks."""

from __future__ import annotations

import numpy as np
import pytest

from speakerid.scoring.metrics import compute_eer
from speakerid.scoring.plda import PLDA

scipy_stats = pytest.importorskip("scipy.stats")


def _identity_model(dim: int, **kw) -> PLDA:
    return PLDA(np.zeros(dim), np.eye(dim), np.zeros(dim), np.eye(dim), np.eye(dim), **kw)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _random_spd(rng: np.random.Generator, d: int, scale: float = 1.0) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return scale * (a @ a.T / d + 0.3 * np.eye(d))


def _speakers(rng, n_spk, n_utt, between, within):
    d = between.shape[0]
    y = rng.multivariate_normal(np.zeros(d), between, size=n_spk)
    labels = np.repeat(np.arange(n_spk), n_utt)
    x = y[labels] + rng.multivariate_normal(np.zeros(d), within, size=labels.size)
    return x, labels


@pytest.mark.parametrize("normalize_length", [True, False])
def test_identity_plda_ranks_like_cosine(normalize_length):
    """B = W = I, no centring: the LLR is an increasing affine map of the cosine of the vectors."""
    rng = np.random.default_rng(0)
    enroll, test = rng.normal(size=(7, 16)), rng.normal(size=(300, 16))
    llr = _identity_model(16, normalize_length=normalize_length).score_matrix(enroll, test)
    cos = _unit(enroll) @ _unit(test).T
    assert scipy_stats.spearmanr(llr.ravel(), cos.ravel())[0] == pytest.approx(1.0, abs=1e-12)
    slope, icpt = np.polyfit(cos.ravel(), llr.ravel(), 1)
    assert slope > 0 and np.abs(slope * cos + icpt - llr).max() < 1e-9


def _reference_llr(enroll_utts: np.ndarray, t: np.ndarray, between: np.ndarray, within: np.ndarray) -> float:
    """log N([e_1..e_n; t]; 0, joint) - log N([e_1..e_n]; 0, joint_n) - log N(t; 0, B + W), explicitly."""
    n, d = enroll_utts.shape

    def joint(k):
        c = np.kron(np.ones((k, k)), between)
        return c + np.kron(np.eye(k), within)

    mvn = scipy_stats.multivariate_normal
    return (mvn.logpdf(np.concatenate([enroll_utts.ravel(), t]), np.zeros((n + 1) * d), joint(n + 1))
            - mvn.logpdf(enroll_utts.ravel(), np.zeros(n * d), joint(n))
            - mvn.logpdf(t, np.zeros(d), between + within))


@pytest.mark.parametrize("n", [1, 2, 5])
def test_llr_equals_explicit_gaussian_log_densities(n):
    """n enrolment utterances (mean + n) vs the joint Gaussian of all n + 1 vectors, within 1e-8."""
    rng = np.random.default_rng(n)
    d = 5
    between, within = _random_spd(rng, d, 2.0), _random_spd(rng, d, 0.5)
    model = PLDA(np.zeros(d), np.eye(d), np.zeros(d), between, within, length_norm=False, normalize_length=False)
    for trial in range(4):
        utts = rng.normal(size=(n, d)) * 1.5
        tests = rng.normal(size=(3, d)) * 1.5
        ubar, count = model.speaker_vector(utts)
        got = model.llr(ubar[None], model.transform(tests), np.array([count]))[0]
        want = [_reference_llr(utts, t, between, within) for t in tests]
        np.testing.assert_allclose(got, want, atol=1e-8, rtol=0)
        # without length normalisation the raw mean with n gives the same (the map is affine)
        raw = model.score_matrix(utts.mean(axis=0, keepdims=True), tests, [n])[0]
        np.testing.assert_allclose(raw, want, atol=1e-8, rtol=0)


def test_fit_recovers_covariances_and_beats_cosine_on_anisotropic_noise():
    rng = np.random.default_rng(1)
    d = 8
    between = np.diag(np.linspace(2.0, 0.5, d))
    within = np.diag([6.0, 4.0] + [0.15] * (d - 2))  # strong nuisance in two directions
    x, labels = _speakers(rng, 400, 8, between, within)
    model = PLDA.fit(x, labels, iters=10, length_norm=False)
    assert np.linalg.norm(model.within - within) / np.linalg.norm(within) < 0.1
    assert np.linalg.norm(model.between - between) / np.linalg.norm(between) < 0.2
    assert model.info["n_speakers"] == 400 and model.info["n_speakers_multi"] == 400
    # held-out speakers: 1 enrolment vs 1 test utterance
    xe, _ = _speakers(rng, 60, 2, between, within)
    enroll, test = xe[0::2], xe[1::2]
    labels_m = np.eye(60, dtype=bool)
    llr = model.score_matrix(enroll, test)
    cos = _unit(enroll - model.mean) @ _unit(test - model.mean).T
    eer_plda, _ = compute_eer(llr.ravel(), labels_m.ravel())
    eer_cos, _ = compute_eer(cos.ravel(), labels_m.ravel())
    assert eer_plda <= eer_cos
    assert eer_plda < 0.5 * eer_cos  # clearly better, not a tie
    # with LDA and the default pre-processing the fit runs and scores stay finite
    small = PLDA.fit(x, labels, lda_dim=4)
    assert small.plda_dim == 4 and np.isfinite(small.score_matrix(enroll, test)).all()


def test_fit_is_deterministic_and_singletons_are_used():
    rng = np.random.default_rng(2)
    x, labels = _speakers(rng, 50, 3, np.eye(4), 0.3 * np.eye(4))
    x1 = np.concatenate([x, rng.normal(size=(10, 4))])
    labels1 = np.concatenate([labels, np.arange(100, 110)])  # 10 one-utterance speakers
    a, b = PLDA.fit(x1, labels1), PLDA.fit(x1, labels1)
    assert np.array_equal(a.between, b.between) and np.array_equal(a.within, b.within)
    assert a.info["n_speakers"] == 60 and a.info["n_speakers_multi"] == 50


def test_n_enroll_counts_are_used():
    rng = np.random.default_rng(3)
    model = PLDA.fit(*_speakers(rng, 30, 4, np.eye(6), 0.5 * np.eye(6)))
    e, t = rng.normal(size=(2, 6)), rng.normal(size=(5, 6))
    one = model.score_matrix(e, t)
    many = model.score_matrix(e, t, np.array([1, 4]))
    np.testing.assert_allclose(one[0], many[0], rtol=1e-12, atol=1e-12)
    assert not np.allclose(one[1], many[1])
    with pytest.raises(ValueError, match="n_enroll"):
        model.score_matrix(e, t, np.array([1, 0]))


@pytest.mark.parametrize("case,match", [
    ("one_speaker", "at least 2 speakers"),
    ("all_single", "2\\+ utterances"),
    ("nan", "non-finite"),
    ("lda_too_big", "lda_dim"),
    ("lda_over_dim", "lda_dim"),
])
def test_fit_refuses_bad_input(case, match):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 6))
    labels = np.repeat(np.arange(20), 2)
    kw = {}
    if case == "one_speaker":
        labels = np.zeros(40, dtype=int)
    elif case == "all_single":
        labels = np.arange(40)
    elif case == "nan":
        x[3, 2] = np.nan
    elif case == "lda_too_big":
        x, labels = x[:8], labels[:8]  # 4 speakers
        kw["lda_dim"] = 4
    else:
        kw["lda_dim"] = 7
    with pytest.raises(ValueError, match=match) as err:
        PLDA.fit(x, labels, **kw)
    assert "\n" not in str(err.value)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    x, labels = _speakers(rng, 40, 3, np.eye(10), 0.4 * np.eye(10))
    model = PLDA.fit(x, labels, lda_dim=6)
    path = tmp_path / "plda.npz"
    model.save(path)
    back = PLDA.load(path)
    e, t = rng.normal(size=(3, 10)), rng.normal(size=(20, 10))
    np.testing.assert_array_equal(model.score_matrix(e, t, [1, 2, 3]), back.score_matrix(e, t, [1, 2, 3]))
    assert back.info == model.info and back.plda_dim == 6
    assert not list(tmp_path.glob(".plda.npz.*"))  # no temp file left


def _write(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("damage", ["nan", "shape", "missing", "garbage", "format", "not_spd"])
def test_load_refuses_bad_files(tmp_path, damage):
    model = _identity_model(4)
    good = tmp_path / "good.npz"
    model.save(good)
    with np.load(good, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    bad = tmp_path / f"bad_{damage}.npz"
    if damage == "nan":
        arrays["between"][1, 1] = np.nan
    elif damage == "shape":
        arrays["within"] = np.eye(3)
    elif damage == "missing":
        del arrays["plda_mean"]
    elif damage == "format":
        arrays["format"] = np.array("something-else")
    elif damage == "not_spd":
        arrays["within"] = -np.eye(4)
    if damage == "garbage":
        bad.write_bytes(b"PK\x03\x04 this is not a zip")
    else:
        _write(bad, **arrays)
    with pytest.raises(ValueError) as err:
        PLDA.load(bad)
    msg = str(err.value)
    assert str(bad) in msg and "\n" not in msg


def test_score_matrix_is_vectorised_for_many_test_rows():
    """E = 1 against 100k test rows in well under a second's worth of work (no per-row loop)."""
    rng = np.random.default_rng(6)
    model = PLDA.fit(*_speakers(rng, 30, 4, np.eye(16), 0.5 * np.eye(16)), lda_dim=12)
    test = rng.normal(size=(100_000, 16)).astype(np.float32)
    out = model.score_matrix(test[:1], test)
    assert out.shape == (1, 100_000) and out.dtype == np.float64
    np.testing.assert_allclose(out[0, :50], model.score_matrix(test[:1], test[:50])[0], rtol=1e-12, atol=1e-9)
