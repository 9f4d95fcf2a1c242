"""The packaged starter model: complete, small, loads with weights_only, separates real speakers."""
import json

import numpy as np
import pytest
import torch

from speakerid.pretrained import PACKAGED_FILES, packaged_dir, packaged_names


def _starter():
    if "starter" not in packaged_names():
        pytest.skip("speakerid/pretrained/starter not built (bash recipes/starter/run.sh)")
    return packaged_dir("starter")


def test_packaged_files_and_sizes() -> None:
    folder = _starter()
    for name in PACKAGED_FILES:
        assert (folder / name).stat().st_size > 0, name
    assert (folder / "model.pt").stat().st_size <= 15 * 2**20
    state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and state
    cohort = np.load(folder / "cohort.npz")
    assert cohort["embeddings"].shape[0] == len(cohort["ids"]) <= 500
    assert np.allclose(np.linalg.norm(cohort["embeddings"], axis=1), 1.0, atol=1e-4)
    cal = json.loads((folder / "calibration.json").read_text())
    assert cal["a"] > 0
    card = (folder / "MODEL_CARD.md").read_text()
    for corpus in ("LibriSpeech", "Common Voice", "speechocean762", "Speech Commands", "DSPSpeech-20"):
        assert corpus in card
    assert "RAVDESS" in card and "never trained" in card


def test_missing_model_is_a_clear_error() -> None:
    with pytest.raises(FileNotFoundError, match="no packaged model 'nope'"):
        packaged_dir("nope")


def test_starter_separates_two_real_speakers(shared_speech) -> None:
    from speakerid.audio import load_audio
    from speakerid.inference import embed_waves, load_experiment
    from speakerid.features.vad import trim_silence

    extractor, _ = load_experiment(_starter())
    waves, spk = [], []
    for speaker in ("ravdess_03", "ravdess_05"):  # two male dev actors (never trained on)
        files = sorted((shared_speech / speaker).glob("*.flac"))[:4]
        if len(files) < 4:
            pytest.skip(f"{shared_speech / speaker}: too few files")
        for f in files:
            waves.append(trim_silence(load_audio(f)[0], 16000))
            spk.append(speaker)
    with torch.no_grad():
        emb = torch.nn.functional.normalize(embed_waves(extractor, waves), dim=1)
    cos = emb @ emb.T
    same = torch.tensor([[a == b for b in spk] for a in spk]) & ~torch.eye(len(spk), dtype=torch.bool)
    diff = torch.tensor([[a != b for b in spk] for a in spk])
    assert cos[same].mean() > cos[diff].mean() + 0.1
