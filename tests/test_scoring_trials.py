"""Trial lists and score files: both labelled forms, id normalisation, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from speakerid.scoring.trials import TrialsError, normalise_id, read_scores, read_trial_list, read_trials, write_scores
from speakerid.scoring.labelled_scores import labels_for_pairs, read_labelled_scores


def test_reads_the_official_voxceleb1_o_list(vox1_o_trials):
    trials = read_trials(vox1_o_trials)
    assert len(trials) == 37_720
    assert sum(lab for _, _, lab in trials) == 18_860
    assert trials[0] == ("id10270/x6uYqmx31kE/00001", "id10270/8jEAjG6SegY/00008", 1)
    assert trials[1] == ("id10270/x6uYqmx31kE/00001", "id10300/ize_eiCFEg0/00003", 0)
    tl = read_trial_list(vox1_o_trials)
    assert tl.labels.dtype == np.int8 and len(tl) == 37_720
    assert not any(e.endswith(".wav") for e in tl.enroll[:100].tolist() + tl.test[:100].tolist())


def test_kaldi_and_unlabelled_forms(tmp_path):
    kaldi = tmp_path / "kaldi.txt"
    kaldi.write_text("# comment\n\nspk1/a/1 spk1/b/2.wav target\nspk1/a/1 spk2/c/3 nontarget\n")
    assert read_trials(kaldi) == [("spk1/a/1", "spk1/b/2", 1), ("spk1/a/1", "spk2/c/3", 0)]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a.wav b\nc d.flac\n")
    assert read_trials(pairs) == [("a", "b", None), ("c", "d.flac", None)]  # only .wav is stripped
    assert read_trial_list(pairs).labels is None
    # a Kaldi-form id that happens to be "1" is still the Kaldi form (third column decides)
    odd = tmp_path / "odd.txt"
    odd.write_text("1 x target\n")
    assert read_trials(odd) == [("1", "x", 1)]
    assert normalise_id("id1/v/00001.wav") == "id1/v/00001" and normalise_id("a.wav.b") == "a.wav.b"


@pytest.mark.parametrize(
    "text, line, match",
    [
        ("1 a b\n0 c d\n1 e\n", 3, "VoxCeleb form"),
        ("1 a b\n2 c d\n", 2, "VoxCeleb form"),
        ("a b target\nc d maybe\n", 2, "Kaldi form"),
        ("a b\n1 c d\n", 2, "unlabelled form"),
        ("1 a b c\n", 1, "not a trial line"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, text, line, match):
    path = tmp_path / "trials.txt"
    path.write_text(text)
    with pytest.raises(TrialsError, match=match) as err:
        read_trials(path)
    assert f"{path}:{line}:" in str(err.value)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(TrialsError, match="no trials"):
        read_trials(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_trials(tmp_path / "nope.txt")


def test_score_file_round_trip_and_labels(tmp_path):
    path = tmp_path / "scores.txt"
    write_scores(path, ["a", "b"], ["c", "d"], [0.5, -1.25], [1, 0])
    assert path.read_text() == "a c 0.500000 target\nb d -1.250000 nontarget\n"
    sl = read_scores(path)
    np.testing.assert_array_equal(sl.scores, [0.5, -1.25])
    np.testing.assert_array_equal(sl.labels, [1, 0])
    write_scores(path, ["a", "b"], ["c", "d"], [0.5, -1.25])
    assert read_scores(path).labels is None
    with pytest.raises(TrialsError, match="no label column"):
        read_labelled_scores(path)
    trials = tmp_path / "t.txt"
    trials.write_text("0 a.wav c.wav\n1 b d\n1 x y\n")
    np.testing.assert_array_equal(read_labelled_scores(path, trials).labels, [0, 1])
    tl = read_trial_list(trials)
    with pytest.raises(TrialsError, match="1 of 2 scored pairs are not in the trial list"):
        labels_for_pairs(np.array(["a", "q"]), np.array(["c", "r"]), tl)


@pytest.mark.parametrize(
    "text, line, match",
    [
        ("a b 0.1\na b nan\n", 2, "not a finite number"),
        ("a b 0.1\na b x1\n", 2, "not a finite number"),
        ("a b 0.1 target\na b 0.2\n", 2, "3 columns but line 1 has 4"),
        ("a b 0.1 yes\n", 1, "label must be"),
    ],
)
def test_bad_score_files(tmp_path, text, line, match):
    path = tmp_path / "s.txt"
    path.write_text(text)
    with pytest.raises(TrialsError, match=match) as err:
        read_scores(path)
    assert f"{path}:{line}:" in str(err.value)


# --- one rule for repeated pairs; BOM -----------------------------------------------------


def test_repeated_trials_dropped_with_a_counting_warning(tmp_path, caplog) -> None:
    path = tmp_path / "t.txt"
    path.write_text("1 a b\n0 a c\n1 a b\n1 a b\n0 c a\n", encoding="utf-8")
    with caplog.at_level("WARNING"):
        trials = read_trials(path)
    assert trials == [("a", "b", 1), ("a", "c", 0), ("c", "a", 0)]
    assert any("2 repeated trials dropped" in r.getMessage() and "t.txt" in r.getMessage() for r in caplog.records)


def test_pair_with_both_labels_is_an_error_naming_file_and_lines(tmp_path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("# header\na b target\na c nontarget\n\na b nontarget\n", encoding="utf-8")
    with pytest.raises(TrialsError, match=r"t.txt:5: pair a b is listed as nontarget here and as target on line 2"):
        read_trial_list(path)


def test_score_and_eval_paths_follow_the_same_rule(tmp_path) -> None:
    from speakerid.cli.main import main

    scores = tmp_path / "s.txt"
    scores.write_text("a b 0.9 target\na c 0.1 nontarget\na b 0.2 nontarget\n", encoding="utf-8")
    with pytest.raises(TrialsError, match=r"s.txt:3: pair a b is listed as nontarget"):
        read_scores(scores)
    unlabelled = tmp_path / "u.txt"
    unlabelled.write_text("a b 0.9\na c 0.1\n", encoding="utf-8")
    trials = tmp_path / "t.txt"
    trials.write_text("1 a b\n0 a c\n0 a b\n", encoding="utf-8")
    with pytest.raises(TrialsError, match=r"t.txt:3: pair a b"):
        read_labelled_scores(unlabelled, trials)  # eval --trials / calibrate --trials
    emb = tmp_path / "e.npz"
    np.savez(emb, ids=np.array(["a", "b", "c"]), embeddings=np.eye(3, dtype=np.float32))
    assert main(["score", "--trials", str(trials), "--embeddings", str(emb), "--output", str(tmp_path / "o.txt")]) == 2
    assert not (tmp_path / "o.txt").exists()


def test_utf8_bom_is_not_part_of_the_first_id(tmp_path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeff1 a/x.wav b/y.wav\n0 a/x.wav c/z.wav\n".encode("utf-8"))
    assert read_trials(path) == [("a/x", "b/y", 1), ("a/x", "c/z", 0)]
    kaldi = tmp_path / "bomk.txt"
    kaldi.write_bytes("\ufeffa b target\n".encode("utf-8"))
    assert read_trials(kaldi) == [("a", "b", 1)]
    scores = tmp_path / "boms.txt"
    scores.write_bytes("\ufeffa b 0.5\n".encode("utf-8"))
    assert read_scores(scores).enroll.tolist() == ["a"]


def test_keep_ids_leaves_ids_as_written(tmp_path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("1 a/x.wav b/y.wav\n", encoding="utf-8")
    assert read_trials(path, keep_ids=True) == [("a/x.wav", "b/y.wav", 1)]
