"""Defects a new user found in the CLI and the speaker DB (issue 17, item 5), one test each."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speakerid.cli.main import main
from speakerid.enroll.model import SpeakerModel
from speakerid.enroll.records import SpeakerDBError
from speakerid.enroll.speaker_db import ModelMismatchError, SpeakerDB

EXAMPLES = Path(__file__).resolve().parents[1] / "speakerid" / "pretrained" / "examples"
DIM = 8


def _db(path: Path, fingerprint: str = "fp-a", names=("alice", "bob"), paths=None) -> SpeakerModel:
    model = SpeakerModel(None, fingerprint, source=f"model-{fingerprint}")
    emb = np.random.default_rng(0).standard_normal((len(names), DIM)).astype(np.float32)
    with SpeakerDB(path, model) as db:
        db.add_embeddings(list(names), emb, paths)
    return model


def test_list_into_a_closed_pipe_exits_quietly(tmp_path):
    _db(tmp_path / "s.db", names=[f"spk{i}" for i in range(2000)])
    cmd = f"{sys.executable} -m speakerid list --db {tmp_path / 's.db'} | true; echo ${{PIPESTATUS[0]}}"
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stderr == ""  # no "Broken pipe", no traceback
    assert out.stdout.strip() in ("0", "141")  # 141 (SIGPIPE's status) when the write met the closed pipe


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only directories")
def test_new_db_in_a_read_only_directory_says_so(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(SpeakerDBError, match="directory .*ro is not writable"):
            _db(ro / "s.db")
    finally:
        ro.chmod(0o755)


def test_enrolling_with_another_model_names_what_is_being_enrolled(tmp_path):
    _db(tmp_path / "s.db", "fp-a", names=("alice",))
    other = SpeakerModel(None, "fp-b", source="model-b")
    with SpeakerDB(tmp_path / "s.db", other) as db, pytest.raises(ModelMismatchError) as e:
        db.add_embeddings(["carol"], np.ones((1, DIM), np.float32))
    msg = str(e.value)
    assert "enrolling a batch: the DB's speakers were enrolled with another model (e.g. 'alice'" in msg
    assert "not model-b" in msg


def test_the_same_file_twice_is_refused(tmp_path):
    wav = EXAMPLES / "speaker_a_1.flac"
    model = _db(tmp_path / "s.db", names=("alice",), paths=[str(wav.resolve())])
    with SpeakerDB(tmp_path / "s.db", model) as db:
        with pytest.raises(SpeakerDBError, match="speaker_b_1.flac: given twice for 'bob'"):
            db.enroll("bob", [EXAMPLES / "speaker_b_1.flac", EXAMPLES / "speaker_b_1.flac"])
        with pytest.raises(SpeakerDBError, match="speaker_a_1.flac: already enrolled for 'alice'"):
            db.enroll("alice", [wav])
        with pytest.raises(SpeakerDBError, match="given twice for 'x'"):
            db.add_many([("x", wav), ("x", wav)])


def test_threshold_and_p_target_together_are_refused(tmp_path, capsys):
    with pytest.raises(SpeakerDBError, match="not both"):
        SpeakerDB(tmp_path / "s.db", None, threshold=0.5, p_target=0.01)
    rc = main(["verify", "--db", str(tmp_path / "s.db"), "--speaker", "a", str(EXAMPLES / "speaker_a_test.flac"),
               "--threshold", "0.5", "--p-target", "0.01"])
    assert rc == 2 and "not both" in capsys.readouterr().err


def test_narrowband_audio_is_named_in_a_warning(tmp_path, caplog):
    import torch

    from speakerid.audio import load_audio
    from speakerid.inference import load_model

    wave, _ = load_audio(EXAMPLES / "speaker_a_test.flac", 8000)
    narrow = tmp_path / "phone.wav"
    sf.write(narrow, wave.numpy(), 8000)
    embedder = load_model("starter")
    model = SpeakerModel.from_extractor(embedder.extractor, policy=embedder.policy)
    with caplog.at_level(logging.WARNING), torch.no_grad():
        model.embed([narrow, EXAMPLES / "speaker_a_test.flac"])
    warned = [r.getMessage() for r in caplog.records if "Hz audio" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(f"{narrow}: 8000 Hz audio, upsampled to the model's 16000 Hz")


def test_identify_help_states_its_exit_status(capsys):
    assert main(["identify", "--help"]) == 0
    assert "Exit status 0 for an answer, 'unknown' included" in " ".join(capsys.readouterr().out.split())


def test_top_level_and_every_command_help_print(capsys):
    """`speakerid --help` lists every command with its help; a '%' in one (e.g. '1% of the impostors')
    must not crash argparse's %-formatting."""
    from speakerid.cli.main import build_parser

    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    assert "accepted 1% of the impostors" in " ".join(top.split())
    commands = next(a for a in build_parser()._actions if a.choices and "verify" in a.choices).choices
    for name in commands:
        assert main([name, "--help"]) == 0, name
        assert "example:" in capsys.readouterr().out, name
