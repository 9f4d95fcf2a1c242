"""Parity with WeSpeaker's own model code (wespeaker-unofficial): random weights with non-trivial
BatchNorm statistics, the same waveforms through each toolkit's whole front end, embeddings
within 1e-4 relative."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from speakerid.audio import load_audio
from speakerid.features.kaldi import Fbank
from speakerid.models import build_model, count_parameters

from _peers import PARITY_RTOL, randomize, rel_diff, wespeaker_embed

try:
    from speakerid.interop.peer import wespeaker_models

    wespeaker_models("resnet")
except ImportError as exc:  # pragma: no cover - depends on the environment
    pytest.skip(f"wespeaker-unofficial not installed ({exc}); .ci/run installs it --no-deps", allow_module_level=True)

DEPTHS = [18, 34, 50, 101, 152, 221, 293]


@pytest.fixture(scope="module")
def clip(shared_speech: Path) -> torch.Tensor:
    path = sorted(shared_speech.glob("libri_*/*.flac"))[0]
    wave, _ = load_audio(path, 16000)
    return wave[: 2 * 16000]  # 2 s: 198 frames, enough to exercise every layer


@pytest.mark.parametrize("depth", DEPTHS)
def test_resnet_matches_wespeaker(depth: int, clip: torch.Tensor) -> None:
    torch.manual_seed(depth)
    peer = randomize(getattr(wespeaker_models("resnet"), f"ResNet{depth}")(feat_dim=80, embed_dim=256), depth)
    ours = build_model(f"resnet{depth}", feat_dim=80, embed_dim=256).eval()
    assert list(ours.state_dict()) == list(peer.state_dict())
    assert count_parameters(ours) == count_parameters(peer)
    ours.load_state_dict(peer.state_dict())
    frontend = Fbank(window_type="hamming", wave_scale="int16", cmn=True)
    with torch.no_grad():
        emb = ours(frontend(clip.unsqueeze(0)))[0]
    diff = rel_diff(wespeaker_embed(peer, clip), emb)
    print(f"ResNet{depth}: max relative difference {diff:.2e}")
    assert diff < PARITY_RTOL


ECAPA = ["ECAPA_TDNN_GLOB_c512", "ECAPA_TDNN_GLOB_c1024", "ECAPA_TDNN_c512"]


def _imported(peer: torch.nn.Module, name: str, model_args: dict, tmp_path: Path):
    """Save ``peer`` as WeSpeaker does, import it, and load the experiment's extractor."""
    from _peers import save_wespeaker

    from speakerid.inference import load_experiment
    from speakerid.interop import import_model

    ckpt, config = save_wespeaker(peer, name, model_args, tmp_path / "ws")
    exp = import_model("wespeaker", tmp_path / "exp", checkpoint=ckpt, config=config)
    return load_experiment(exp)[0]


@pytest.mark.parametrize("name", ECAPA)
def test_ecapa_matches_wespeaker(name: str, clip: torch.Tensor, tmp_path: Path) -> None:
    torch.manual_seed(0)
    args = {"feat_dim": 80, "embed_dim": 192, "pooling_func": "ASTP"}
    peer = randomize(getattr(wespeaker_models("ecapa_tdnn"), name)(**args), 5)
    extractor = _imported(peer, name, args, tmp_path)
    assert count_parameters(extractor.encoder) == count_parameters(peer)
    with torch.no_grad():
        emb = extractor(clip.unsqueeze(0))[0]
    diff = rel_diff(wespeaker_embed(peer, clip), emb)
    print(f"{name}: max relative difference {diff:.2e}")
    assert diff < PARITY_RTOL


def test_campplus_matches_wespeaker(clip: torch.Tensor, tmp_path: Path) -> None:
    torch.manual_seed(0)
    args = {"feat_dim": 80, "embed_dim": 512, "pooling_func": "TSTP"}
    peer = randomize(wespeaker_models("campplus").CAMPPlus(**args), 6)
    extractor = _imported(peer, "CAMPPlus", args, tmp_path)
    assert list(extractor.encoder.state_dict()) == list(peer.state_dict())
    with torch.no_grad():
        emb = extractor(clip.unsqueeze(0))[0]
    diff = rel_diff(wespeaker_embed(peer, clip, window_type="povey", int16=False), emb)
    print(f"CAMPPlus: max relative difference {diff:.2e}")
    assert diff < PARITY_RTOL


@pytest.mark.parametrize("config", ["B0", "B1", "B2", "B3", "B4", "B5", "B6"])
def test_redimnet_matches_wespeaker(config: str, clip: torch.Tensor, tmp_path: Path) -> None:
    torch.manual_seed(0)
    feat_dim = 60 if config == "B0" else 72
    args = {"feat_dim": feat_dim, "embed_dim": 192, "pooling_func": "ASTP", "two_emb_layer": False}
    peer = randomize(getattr(wespeaker_models("redimnet"), f"ReDimNet{config}")(**args), 7)
    with torch.no_grad():  # non-uniform mixing of the stage outputs (zeros, i.e. uniform, at init)
        for w in list(peer.backbone.inputs_weights)[1:]:
            w.normal_()
    from _peers import save_wespeaker

    from speakerid.inference import load_experiment
    from speakerid.interop import import_model

    ckpt, cfg_path = save_wespeaker(peer, f"ReDimNet{config}", args, tmp_path / "ws")
    cfg_text = cfg_path.read_text().replace("num_mel_bins: 80", f"num_mel_bins: {feat_dim}")
    cfg_path.write_text(cfg_text)
    extractor = load_experiment(import_model("wespeaker", tmp_path / "exp", checkpoint=ckpt, config=cfg_path))[0]
    assert count_parameters(extractor.encoder) == count_parameters(peer)
    wave = clip[:16000]  # 1 s keeps B6 quick
    with torch.no_grad():
        emb = extractor(wave.unsqueeze(0))[0]
    import torchaudio.compliance.kaldi as kaldi

    feats = kaldi.fbank((wave * 32768.0).unsqueeze(0), num_mel_bins=feat_dim, frame_length=25, frame_shift=10,
                        sample_frequency=16000, window_type="hamming")
    with torch.no_grad():
        ref = peer((feats - feats.mean(0)).unsqueeze(0))[-1][0]
    diff = rel_diff(ref, emb)
    print(f"ReDimNet{config}: max relative difference {diff:.2e}")
    assert diff < PARITY_RTOL


def test_population_std_was_the_resnet34_difference(clip: torch.Tensor) -> None:
    """The cause of the old resnet34 mismatch: with population-variance statistics (the former
    default) the same weights give an embedding off by far more than the tolerance."""
    from speakerid.models.pooling import TSTP

    peer = randomize(wespeaker_models("resnet").ResNet34(feat_dim=80, embed_dim=256), 34)
    ours = build_model("resnet34", feat_dim=80, embed_dim=256).eval()
    ours.load_state_dict(peer.state_dict())
    ours.pool = TSTP(ours.pool.in_dim, unbiased=False)
    with torch.no_grad():
        emb = ours(Fbank(window_type="hamming")(clip.unsqueeze(0)))[0]
    diff = rel_diff(wespeaker_embed(peer, clip), emb)
    print(f"ResNet34 with population-std TSTP: max relative difference {diff:.2e}")
    assert diff > 10 * PARITY_RTOL
