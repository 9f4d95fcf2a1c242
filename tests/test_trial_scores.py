"""Embedding files, vectorised cosine scoring and S-/AS-norm against naive per-trial loops."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from speakerid.scoring.trial_scores import EmbeddingTable, score_files, score_trials
from speakerid.scoring.embeddings import (
    EmbeddingsError,
    MissingIdsError,
    load_embeddings,
    save_embeddings,
)
from speakerid.scoring.norm import cohort_statistics
from speakerid.scoring.trials import read_scores


def _data(seed=0, n_utts=60, dim=16, n_trials=400, n_cohort=50):
    rng = np.random.default_rng(seed)
    ids = [f"spk{i % 7}/v{i}/{i:05d}" for i in range(n_utts)]
    emb = (rng.standard_normal((n_utts, dim)) + 3 * rng.standard_normal((7, dim))[np.arange(n_utts) % 7]).astype(np.float32)
    e = rng.integers(0, n_utts, n_trials)
    t = rng.integers(0, n_utts, n_trials)
    cohort = rng.standard_normal((n_cohort, dim)).astype(np.float32)
    return ids, emb, np.array(ids)[e], np.array(ids)[t], cohort


def _cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("ext", ["npz", "scp", "ark"])
def test_embedding_files_round_trip(tmp_path, ext):
    ids, emb, *_ = _data()
    path = tmp_path / f"emb.{ext}"
    save_embeddings(path, ids, emb)
    got_ids, got = load_embeddings(path)
    assert got_ids == ids and got.dtype == np.float32
    np.testing.assert_array_equal(got, emb)
    if ext == "scp":  # the scp points at the ark by absolute path: readable from anywhere
        assert str((tmp_path / "emb.ark").resolve()) in path.read_text().splitlines()[0]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_embedding_dir_and_errors(tmp_path):
    ids, emb, *_ = _data()
    save_embeddings(tmp_path / "embeddings.npz", ids, emb)
    assert load_embeddings(tmp_path)[0] == ids
    np.savez(tmp_path / "dup.npz", ids=np.array(["a", "a"]), embeddings=np.zeros((2, 3)))
    with pytest.raises(EmbeddingsError, match="duplicate"):
        load_embeddings(tmp_path / "dup.npz")
    np.savez(tmp_path / "bad.npz", names=np.array(["a"]))
    with pytest.raises(EmbeddingsError, match="bad.npz: .npz lacks"):
        load_embeddings(tmp_path / "bad.npz")
    np.savez(tmp_path / "obj.npz", ids=np.array(["a", 1], dtype=object), embeddings=np.zeros((2, 3)))
    with pytest.raises(EmbeddingsError, match="obj.npz"):  # never unpickled
        load_embeddings(tmp_path / "obj.npz")
    (tmp_path / "sub").mkdir()
    with pytest.raises(FileNotFoundError, match="none of"):
        load_embeddings(tmp_path / "sub")


def test_cosine_matches_naive_loop_with_mean_and_enroll_table():
    ids, emb, e_ids, t_ids, cohort = _data()
    table = EmbeddingTable(np.array(ids), emb)
    mean = cohort.mean(axis=0)
    got = score_trials(e_ids, t_ids, table, mean=mean)  # chunk edges mid-list
    lookup = dict(zip(ids, emb))
    want = [_cos(lookup[a] - mean, lookup[b] - mean) for a, b in zip(e_ids, t_ids)]
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    # enroll ids looked up in a second table with other vectors (e.g. averaged enrolment models)
    models = {i: v for i, v in zip(ids, np.random.default_rng(5).standard_normal(emb.shape).astype(np.float32))}
    enroll = EmbeddingTable(np.array(sorted(set(e_ids))), np.stack([models[i] for i in sorted(set(e_ids))]), "models.npz")
    got = score_trials(e_ids, t_ids, table, enroll_embeddings=enroll)
    np.testing.assert_allclose(got, [_cos(models[a], lookup[b]) for a, b in zip(e_ids, t_ids)], atol=2e-6)
    # ids missing from either table are reported together, per table
    with pytest.raises(MissingIdsError, match=r"2 trial id\(s\).*models.npz: no embedding for 1 of .*x/e.*: no embedding for 1 of"):
        score_trials(np.array(["x/e"]), np.array(["x/t"]), table, enroll_embeddings=enroll)


def _naive_norm(e_ids, t_ids, lookup, cohort, top_k):
    out = []
    for a, b in zip(e_ids, t_ids):
        s = _cos(lookup[a], lookup[b])
        sides = []
        for x in (lookup[a], lookup[b]):
            cs = sorted((_cos(x, c) for c in cohort), reverse=True)[:top_k]
            sides.append((s - np.mean(cs)) / np.std(cs))
        out.append(0.5 * (sides[0] + sides[1]))
    return np.array(out)


@pytest.mark.parametrize("norm, top_k", [("asnorm", 10), ("asnorm", 3), ("snorm", 10)])
def test_norms_match_naive_per_trial_loop(norm, top_k):
    ids, emb, e_ids, t_ids, cohort = _data(n_trials=150)
    table = EmbeddingTable(np.array(ids), emb)
    got = score_trials(e_ids, t_ids, table, cohort=cohort, scoring=norm, top_k=top_k)
    k = len(cohort) if norm == "snorm" else top_k
    want = _naive_norm(e_ids, t_ids, dict(zip(ids, emb)), cohort, k)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("top_k", [3, 20])
def test_csls_matches_naive_per_trial_loop(top_k):
    """CSLS / 2 (Conneau et al. 2018): the cosine less the mean of each side's top-k cohort cosines, no division."""
    ids, emb, e_ids, t_ids, cohort = _data(n_trials=150)
    table = EmbeddingTable(np.array(ids), emb)
    got = score_trials(e_ids, t_ids, table, cohort=cohort, scoring="csls", top_k=top_k)
    lookup = dict(zip(ids, emb))
    want = []
    for a, b in zip(e_ids, t_ids):
        r = [np.mean(sorted((_cos(x, c) for c in cohort), reverse=True)[:top_k]) for x in (lookup[a], lookup[b])]
        want.append(_cos(lookup[a], lookup[b]) - 0.5 * (r[0] + r[1]))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_cohort_statistics_chunking_and_top_k_limits():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((23, 8)).astype(np.float32)
    c = rng.standard_normal((40, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    for k in (5, None):
        a = cohort_statistics(x, c, k)
        b = cohort_statistics(x, c, k, chunk_rows=4)
        np.testing.assert_allclose(a, b, rtol=1e-5)  # float32 BLAS blocking differs by chunk
    np.testing.assert_allclose(cohort_statistics(x, c, 400), cohort_statistics(x, c, None))  # k > C -> whole cohort
    with pytest.raises(ValueError, match="top_k must be >= 2"):
        cohort_statistics(x, c, 1)


def test_missing_ids_error_counts_and_names(tmp_path):
    ids, emb, *_ = _data()
    save_embeddings(tmp_path / "emb.npz", ids, emb)
    trials = tmp_path / "trials.txt"
    trials.write_text(f"1 {ids[0]}.wav {ids[1]}.wav\n0 ghost/a/1.wav {ids[2]}\n1 ghost/b/2 ghost/c/3\n")
    expected = r"3 trial id\(s\) have no embedding: .*emb.npz: no embedding for 3 of 6 id\(s\), e.g. ghost/a/1"
    with pytest.raises(MissingIdsError, match=expected) as err:
        score_files(trials, tmp_path / "emb.npz", tmp_path / "out.txt")
    assert "ghost/b/2" in str(err.value)
    assert not (tmp_path / "out.txt").exists()
    with pytest.raises(ValueError, match="needs a cohort"):
        score_trials(np.array(ids[:1]), np.array(ids[:1]), EmbeddingTable(np.array(ids), emb), scoring="snorm")


def test_score_files_end_to_end(tmp_path):
    ids, emb, e_ids, t_ids, cohort = _data()
    pairs = list(dict.fromkeys(zip(e_ids.tolist(), t_ids.tolist())))  # each pair once (repeats are dropped)
    e_ids, t_ids = np.array([a for a, _ in pairs]), np.array([b for _, b in pairs])
    save_embeddings(tmp_path / "emb.scp", ids, emb)
    save_embeddings(tmp_path / "cohort.npz", [f"c{i}" for i in range(len(cohort))], cohort)
    trials = tmp_path / "trials.txt"
    trials.write_text("".join(f"{a} {b} {'target' if a[:4] == b[:4] else 'nontarget'}\n" for a, b in zip(e_ids, t_ids)))
    out = tmp_path / "scores.txt"
    sl = score_files(trials, tmp_path / "emb.scp", out, cohort=tmp_path / "cohort.npz", scoring="asnorm", top_k=20)
    back = read_scores(out)
    assert back.enroll.tolist() == e_ids.tolist() and back.test.tolist() == t_ids.tolist()
    np.testing.assert_allclose(back.scores, sl.scores, atol=1e-6)
    np.testing.assert_array_equal(back.labels, sl.labels)


def test_scoring_package_imports_no_torch():
    code = (
        "import sys, speakerid.scoring, speakerid.scoring.trial_scores, speakerid.scoring.norm, "
        "speakerid.scoring.calibrate, speakerid.scoring.plots, speakerid.scoring.embeddings;"
        "assert 'torch' not in sys.modules, 'torch imported';"
        "assert 'matplotlib' not in sys.modules and 'sklearn' not in sys.modules, 'eager import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_factorise_matches_np_unique():
    from speakerid.scoring.trial_scores import factorise

    ids = np.array(["b/2", "a/1", "b/2", "c/3", "a/1", "a/10"])
    u, inv = factorise(ids)
    u_ref, inv_ref = np.unique(ids, return_inverse=True)
    np.testing.assert_array_equal(u, u_ref)
    np.testing.assert_array_equal(inv, inv_ref)


def test_score_as_the_model_decides(tmp_path, capsys):
    """``speakerid score --model EXP`` scores with the model's calibrated backend, cohort and top-k (in a
    process that never imports torch); --scoring / --top-k still override; a cohort backend without its
    cohort is a one-line error."""
    from speakerid.cli.main import main
    from speakerid.experiment import write_cohort
    from speakerid.scoring.calibrate import Calibration

    ids, emb, e_ids, t_ids, cohort = _data(n_trials=80)
    save_embeddings(tmp_path / "emb.npz", ids, emb)
    (tmp_path / "trials").write_text("".join(f"{a} {b}\n" for a, b in zip(e_ids, t_ids)))
    exp = tmp_path / "exp"
    exp.mkdir()
    write_cohort(exp, [f"c{i}" for i in range(len(cohort))], cohort, top_k=4)
    Calibration(3.0, -1.0, 0.5, score="csls").save(exp / "calibration.json")
    table = EmbeddingTable(np.array(ids), emb)
    argv = ["score", "--model", str(exp), "--trials", str(tmp_path / "trials"), "--embeddings", str(tmp_path / "emb.npz")]
    code = ("import sys; from speakerid.cli.main import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'score imported torch'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, *argv, "--output", str(tmp_path / "s.txt")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "(csls)" in r.stdout
    want = score_trials(e_ids, t_ids, table, cohort=cohort, scoring="csls", top_k=4)
    np.testing.assert_allclose(read_scores(tmp_path / "s.txt").scores, want, atol=1e-5)
    assert main([*argv, "--scoring", "asnorm", "--top-k", "7", "--output", str(tmp_path / "a.txt")]) == 0
    want = score_trials(e_ids, t_ids, table, cohort=cohort, scoring="asnorm", top_k=7)
    np.testing.assert_allclose(read_scores(tmp_path / "a.txt").scores, want, atol=1e-5)
    (exp / "cohort.npz").unlink()
    capsys.readouterr()
    assert main([*argv, "--output", str(tmp_path / "b.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "calibration.json is fitted on csls scores, but there is no cohort.npz" in err and "\n" not in err
    assert not (tmp_path / "b.txt").exists()


def test_save_embeddings_extra_arrays_are_npz_only(tmp_path):
    ids, emb, *_ = _data(n_utts=4)
    save_embeddings(tmp_path / "c.npz", ids, emb, {"top_k": np.int64(7)})
    with np.load(tmp_path / "c.npz") as z:
        assert int(z["top_k"]) == 7 and z["embeddings"].shape == emb.shape
    for path, extra in ((tmp_path / "c.ark", {"top_k": np.int64(7)}), (tmp_path / "d.npz", {"ids": np.zeros(1)})):
        with pytest.raises(EmbeddingsError, match="extra arrays"):
            save_embeddings(path, ids, emb, extra)
        assert not path.exists()
