"""Parity with 3D-Speaker's own CAM++ code (PyPI ``speakerlab-slim``; ``.ci/run`` installs it
``--no-deps``): random weights with non-trivial BatchNorm statistics, saved as 3D-Speaker saves
them (a plain state dict), imported with ``speakerid import --from 3dspeaker`` and embedded with
``speakerid extract``; 3D-Speaker's inference path (its ``FBank(80, 16000, mean_nor=True)`` on the
wave as read, then ``CAMPPlus``) must agree within 1e-4 relative."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speakerid.audio import load_audio
from speakerid.cli.main import main
from speakerid.models import count_parameters

from _peers import PARITY_RTOL, randomize, rel_diff

DTDNN = pytest.importorskip("speakerlab.models.campplus.DTDNN",
                            reason="speakerlab-slim not installed (pip install --no-deps speakerlab-slim==0.1.0; .ci/run does it)")
processor = pytest.importorskip("speakerlab.process.processor", reason="speakerlab-slim's FBank not importable")

FRAMES = (70, 200, 330)  # under one CAM segment (100 frames), two, over three; whole multiples of 10 frames


def _clips(shared_speech: Path, out: Path) -> dict[str, Path]:
    """Pieces of real speech of exactly ``FRAMES`` 25 / 10 ms frames (whole frames of the segment
    policy, so extract embeds every sample), as float WAV."""
    src = sorted(shared_speech.glob("libri_*/*.flac"))[0]
    wave, _ = load_audio(src, 16000)
    out.mkdir(parents=True, exist_ok=True)
    clips = {}
    for i, frames in enumerate(FRAMES):
        n = 400 + 160 * (frames - 1)
        path = out / f"u{i}.wav"
        sf.write(path, wave[i * 8000: i * 8000 + n].numpy(), 16000, subtype="FLOAT")
        clips[f"spk-u{i}"] = path
    return clips


def _reference(model: torch.nn.Module, path: Path) -> torch.Tensor:
    """3D-Speaker's speakerlab/bin/infer_sv.py: soundfile read, FBank with mean_nor, model."""
    wave, sr = sf.read(path, dtype="float32")
    assert sr == 16000
    feat = processor.FBank(80, sample_rate=16000, mean_nor=True)(torch.from_numpy(wave))
    with torch.no_grad():
        return model(feat.unsqueeze(0))[0]


@pytest.mark.parametrize("embed_dim", [192, 512])
def test_campplus_matches_3dspeaker_through_extract(embed_dim: int, shared_speech: Path, tmp_path: Path) -> None:
    torch.manual_seed(embed_dim)
    peer = randomize(DTDNN.CAMPPlus(feat_dim=80, embedding_size=embed_dim), seed=embed_dim)
    ckpt = tmp_path / "campplus.pt"
    torch.save(peer.state_dict(), ckpt)
    exp = tmp_path / "exp"
    assert main(["import", "--from", "3dspeaker", "--checkpoint", str(ckpt), "--out", str(exp)]) == 0

    clips = _clips(shared_speech, tmp_path / "wav")
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in sorted(clips.items())))
    (data / "utt2spk").write_text("".join(f"{u} spk\n" for u in sorted(clips)))
    emb_dir = tmp_path / "emb"
    assert main(["extract", "--exp", str(exp), "--data", str(data), "--out", str(emb_dir), "--format", "npz", "--no-progress"]) == 0
    stored = np.load(emb_dir / "embeddings.npz")
    ours = dict(zip(stored["ids"].tolist(), torch.from_numpy(stored["embeddings"])))
    worst = 0.0
    for utt, path in sorted(clips.items()):
        diff = rel_diff(_reference(peer, path), ours[utt])
        print(f"CAM++ {embed_dim}-d, {path.name}: max relative difference {diff:.2e}")
        worst = max(worst, diff)
    assert worst < PARITY_RTOL


def test_parameter_count_and_names_match(tmp_path: Path) -> None:
    from speakerid.inference import load_experiment

    peer = DTDNN.CAMPPlus(feat_dim=80, embedding_size=192)
    torch.save(peer.state_dict(), tmp_path / "c.pt")
    assert main(["import", "--from", "3dspeaker", "--checkpoint", str(tmp_path / "c.pt"), "--out", str(tmp_path / "e")]) == 0
    encoder = load_experiment(tmp_path / "e")[0].encoder
    assert list(encoder.state_dict()) == list(peer.state_dict())
    assert count_parameters(encoder) == count_parameters(peer)
