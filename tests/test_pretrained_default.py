"""The packaged default model (`campplus`, issue 15): complete, small, licensed, the default of every
command and of ``speakerid.load_model()``, and the README's main job on the shipped example clips
at the DEFAULT decision (no --p-target): A accepted, B rejected as A, B identified."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from speakerid.cli.main import build_parser, main
from speakerid.experiment import read_cohort_top_k
from speakerid.pretrained import DEFAULT_MODEL, PACKAGED_FILES, examples_dir, packaged_dir, packaged_names


@pytest.fixture(scope="module")
def folder() -> Path:
    if DEFAULT_MODEL not in packaged_names():
        pytest.skip(f"speakerid/pretrained/{DEFAULT_MODEL} not built (bash recipes/pretrained/run.sh)")
    return packaged_dir(DEFAULT_MODEL)


def test_packaged_files_licence_and_size(folder: Path) -> None:
    for name in (*PACKAGED_FILES, "NOTICE", "LICENSE-Apache-2.0.txt"):
        assert (folder / name).stat().st_size > 0, name
    assert (folder / "model.pt").stat().st_size <= 15 * 2**20
    state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    assert all(torch.isfinite(v.float()).all() for v in state.values() if v.is_floating_point())
    cal = json.loads((folder / "calibration.json").read_text())
    assert cal["a"] > 0 and cal["target_fa"] == 0.01 and 0 < cal["default_p_target"] < 1
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 15 * 10**6  # the limit, every file
    if (folder / "cohort.npz").is_file():
        assert cal["score"] in ("asnorm", "csls")
        assert 2 <= read_cohort_top_k(folder) <= 300
        cohort = np.load(folder / "cohort.npz")
        assert np.allclose(np.linalg.norm(cohort["embeddings"], axis=1), 1.0, atol=1e-3)
        assert {i.split("_", 1)[0] for i in cohort["ids"]} <= {"libri", "cvfa", "speechocean762", "speechcommands", "dspspeech20"}
    assert "Apache License" in (folder / "LICENSE-Apache-2.0.txt").read_text()
    for text in ((folder / "NOTICE").read_text(), (folder / "MODEL_CARD.md").read_text()):
        assert "3D-Speaker" in text and "iic/speech_campplus_sv_zh_en_16k-common_advanced" in text and "Apache" in text


@pytest.mark.parametrize("argv", [["enroll", "--db", "x.db", "--speaker", "a", "a.wav"],
                                  ["verify", "--db", "x.db", "--speaker", "a", "t.wav"],
                                  ["identify", "--db", "x.db", "t.wav"],
                                  ["extract", "--data", "d", "--out", "o"],
                                  ["export", "--out", "m.ts"]])
def test_every_command_defaults_to_it(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).model == DEFAULT_MODEL == "campplus"
    assert build_parser().parse_args([*argv, "--model", "starter"]).model == "starter"


def test_load_model_default(folder: Path) -> None:
    import speakerid

    m = speakerid.load_model()
    assert m.embed(torch.zeros(16000).normal_(0, 0.1), 16000).shape[-1] == 192


def test_main_job_at_the_default_decision(folder: Path, tmp_path: Path, capsys) -> None:
    ex, db = examples_dir(), str(tmp_path / "s.db")
    for spk in ("a", "b"):
        assert main(["enroll", "--db", db, "--speaker", spk.upper(), str(ex / f"speaker_{spk}_1.flac"),
                     str(ex / f"speaker_{spk}_2.flac")]) == 0
    assert main(["verify", "--db", db, "--speaker", "A", str(ex / "speaker_a_test.flac")]) == 0
    assert "default operating point" in capsys.readouterr().out
    assert main(["verify", "--db", db, "--speaker", "A", str(ex / "speaker_b_test.flac")]) == 1
    capsys.readouterr()
    assert main(["identify", "--db", db, str(ex / "speaker_b_test.flac")]) == 0
    assert capsys.readouterr().out.startswith("B\t")


def test_verify_and_score_model_agree_on_real_speech(shared_speech: Path, tmp_path: Path, capsys) -> None:
    """The default decision on real voices (RAVDESS actors: no cohort speaker is one of them) is the same
    number by both routes: ``verify`` against the speaker DB, and ``extract`` + ``score --model campplus``
    on a trial list (one embedding rule, one scoring rule); genuine pairs are accepted, impostors rejected."""
    from speakerid.scoring.trials import read_scores

    actors = ["ravdess_03", "ravdess_04", "ravdess_07"]
    files = {a: sorted((shared_speech / a).glob("*.flac"))[:2] for a in actors}
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text("".join(f"{a}/{f.stem} {f}\n" for a in actors for f in files[a]))
    (data / "utt2spk").write_text("".join(f"{a}/{f.stem} {a}\n" for a in actors for f in files[a]))
    trials = [(f"{a}/{files[a][0].stem}", f"{b}/{files[b][1].stem}") for a in actors for b in actors]
    (tmp_path / "trials").write_text("".join(f"{e} {t}\n" for e, t in trials))
    assert main(["extract", "--data", str(data), "--out", str(tmp_path / "emb"), "--no-progress"]) == 0
    assert main(["score", "--model", "campplus", "--trials", str(tmp_path / "trials"), "--embeddings",
                 str(tmp_path / "emb"), "--output", str(tmp_path / "scores")]) == 0
    scored = dict(zip(zip(read_scores(tmp_path / "scores").enroll, read_scores(tmp_path / "scores").test),
                      read_scores(tmp_path / "scores").scores))
    # the Python route: speakerid.load_scorer() on the same embeddings
    import speakerid
    from speakerid.scoring.embeddings import load_embeddings

    ids, emb = load_embeddings(tmp_path / "emb")
    row = {u: i for i, u in enumerate(ids)}
    by_api = speakerid.load_scorer().score(emb[[row[e] for e, _ in trials]], emb[[row[t] for _, t in trials]])
    np.testing.assert_allclose(by_api, [scored[p] for p in trials], atol=1e-5)
    db = str(tmp_path / "s.db")
    for a in actors:
        assert main(["enroll", "--db", db, "--speaker", a, str(files[a][0])]) == 0
    capsys.readouterr()
    for a in actors:
        for b in actors:
            rc = main(["verify", "--db", db, "--speaker", a, "--json", str(files[b][1])])
            r = json.loads(capsys.readouterr().out)
            r = r[0] if isinstance(r, list) else r
            assert r["score_kind"] == "csls"
            assert r["backend_score"] == pytest.approx(scored[(f"{a}/{files[a][0].stem}", f"{b}/{files[b][1].stem}")], abs=2e-4)
            assert (rc == 0) == (a == b), (a, b, r)
