"""``speakerid import --from wespeaker``: random-weight WeSpeaker ResNet34 and CAM++ checkpoints,
saved as WeSpeaker saves them, imported through the CLI, then used unchanged by enroll / verify /
identify / export on shared speech; the imported experiment's embeddings equal WeSpeaker's own
(its model code and front end) within 1e-4 relative."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from speakerid.audio import load_audio
from speakerid.cli.main import main
from speakerid.config import load_config
from speakerid.inference import load_experiment

from _peers import PARITY_RTOL, randomize, rel_diff, save_wespeaker, wespeaker_embed

try:
    from speakerid.interop.peer import wespeaker_models

    wespeaker_models("resnet")
except ImportError as exc:  # pragma: no cover - depends on the environment
    pytest.skip(f"wespeaker-unofficial not installed ({exc}); .ci/run installs it --no-deps", allow_module_level=True)

CASES = {
    # name: (module, constructor, model_args, window, int16 audio) as WeSpeaker's CLI reads them
    "resnet34": ("resnet", "ResNet34", {"feat_dim": 80, "embed_dim": 256, "pooling_func": "TSTP", "two_emb_layer": False},
                 "hamming", True),
    "campplus": ("campplus", "CAMPPlus", {"feat_dim": 80, "embed_dim": 512, "pooling_func": "TSTP"}, "povey", False),
}


def _speakers(shared_speech: Path) -> dict[str, list[Path]]:
    spk = {}
    for name in ("ravdess_01", "ravdess_02", "libri_103"):
        files = sorted((shared_speech / name).glob("*.flac"))
        if len(files) < 2:
            files = sorted(p for d in sorted(shared_speech.glob("libri_*"))[:1] for p in d.glob("*.flac"))
        spk[name] = files
    return spk


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("arch", sorted(CASES))
def test_import_then_enroll_verify_identify_export(arch: str, tmp_path: Path, shared_speech: Path, capsys) -> None:
    module, ctor, args, window, int16 = CASES[arch]
    torch.manual_seed(1)
    peer = randomize(getattr(wespeaker_models(module), ctor)(**args), seed=3)
    ckpt, config = save_wespeaker(peer, ctor, args, tmp_path / "wespeaker")
    exp = tmp_path / "exp"
    assert main(["import", "--from", "wespeaker", "--checkpoint", str(ckpt), "--config", str(config), "--out", str(exp)]) == 0
    cfg = load_config(exp / "config.yaml")
    assert cfg.model.name == arch and cfg.features.window_type == window
    assert cfg.features.wave_scale == ("int16" if int16 else "float")
    assert json.loads((exp / "import.json").read_text())["architecture"] == ctor

    # The imported experiment (its front end + encoder, the module extract / enroll / export run)
    # embeds the same samples as WeSpeaker does. (embed_waveform would first trim the clip to a
    # 0.1 s multiple, its segment policy, so the comparison runs on the whole clip.)
    extractor, _ = load_experiment(exp)
    clips = sorted((shared_speech / "ravdess_01").glob("*.flac"))[:2] + sorted(shared_speech.glob("libri_*/*.flac"))[:1]
    for clip in clips:
        wave, _ = load_audio(clip, 16000)
        with torch.no_grad():
            ours = extractor(wave.unsqueeze(0))[0]
        diff = rel_diff(wespeaker_embed(peer, wave, window, int16), ours)
        print(f"{ctor} {clip.name}: max relative difference {diff:.2e}")
        assert diff < PARITY_RTOL

    # enroll / verify / identify through the CLI, with the imported experiment as --model.
    db = str(tmp_path / "speakers.db")
    a = sorted((shared_speech / "ravdess_01").glob("*.flac"))
    b = sorted((shared_speech / "ravdess_02").glob("*.flac"))
    assert main(["enroll", "--model", str(exp), "--db", db, "--speaker", "alice", *map(str, a[:3])]) == 0
    assert main(["enroll", "--model", str(exp), "--db", db, "--speaker", "bob", *map(str, b[:3])]) == 0
    capsys.readouterr()
    rc = main(["verify", "--model", str(exp), "--db", db, "--speaker", "alice", "--threshold", "-1", "--json", str(a[5])])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["accept"] and -1.0 <= result["score"] <= 1.0
    assert main(["identify", "--model", str(exp), "--db", db, "--top-k", "2", "--threshold", "-1", "--json", str(a[5])]) == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(m["speaker"] for m in result["candidates"]) == ["alice", "bob"] and result["decision"] in ("alice", "bob")

    # export: TorchScript (and ONNX where onnxruntime is installed) checked against the eager model.
    assert main(["export", "--model", str(exp), "--out", str(tmp_path / "embedder.ts")]) == 0
    scripted = torch.jit.load(str(tmp_path / "embedder.ts"))
    wave, _ = load_audio(a[5], 16000)
    with torch.no_grad():
        assert rel_diff(extractor(wave.unsqueeze(0)), scripted(wave.unsqueeze(0))) < 1e-5
    if arch != "resnet34":
        return  # ONNX export of CAM++ is checked by benchmarks/bench_import.py (40 s here: kept out of the suite)
    pytest.importorskip("onnxruntime")
    assert main(["export", "--model", str(exp), "--out", str(tmp_path / "embedder.onnx")]) == 0


def test_import_errors_name_the_file(tmp_path: Path, capsys) -> None:
    peer = randomize(wespeaker_models("resnet").ResNet18(feat_dim=80, embed_dim=64))
    ckpt, config = save_wespeaker(peer, "ResNet34", {"feat_dim": 80, "embed_dim": 64}, tmp_path / "ws")  # wrong depth
    out = tmp_path / "exp"
    assert main(["import", "--from", "wespeaker", "--checkpoint", str(ckpt), "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and "do not fit resnet34" in err and not out.exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: XVEC_unknown\n")
    assert main(["import", "--from", "wespeaker", "--checkpoint", str(ckpt), "--config", str(bad), "--out", str(out)]) == 2
    assert "bad.yaml: model 'XVEC_unknown' not supported" in capsys.readouterr().err
    not_pt = tmp_path / "x.pt"
    not_pt.write_bytes(b"not a checkpoint")
    assert main(["import", "--from", "wespeaker", "--checkpoint", str(not_pt), "--config", str(config), "--out", str(out)]) == 2
    assert "x.pt: not a loadable weights-only checkpoint" in capsys.readouterr().err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".exp")]
