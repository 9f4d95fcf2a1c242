"""speakerid.extract: experiment loading, whole-utterance segmentation, exact batching, resumable extraction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from _use_helpers import make_tiny_experiment, voice
from speakerid.data.datadir import write_data_dir
from speakerid.experiment import ExperimentError
from speakerid.inference import SegmentPolicy, cut_segments, embed_files, embed_waves, load_experiment, segment_plan
from speakerid.extractor import model_fingerprint
from speakerid.extract import ExtractError, extract_embeddings

SR = 16000


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    torch.set_num_threads(1)
    return make_tiny_experiment(tmp_path_factory.mktemp("extract") / "exp")


@pytest.fixture(scope="module")
def extractor(exp):
    return load_experiment(exp)[0]


def test_load_experiment_errors(tmp_path, exp):
    with pytest.raises(ExperimentError, match="run the train stage first"):
        load_experiment(tmp_path / "nope")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "config.yaml").write_text((exp / "config.yaml").read_text())
    with pytest.raises(ExperimentError, match="no model.pt.*run the train stage first"):
        load_experiment(tmp_path / "e")
    torch.save({"not": torch.zeros(2)}, tmp_path / "e" / "model.pt")
    with pytest.raises(ExperimentError, match="do not fit model 'ecapa_tdnn'"):
        load_experiment(tmp_path / "e")
    ex, cfg = load_experiment(exp)
    assert not ex.training and cfg.features.num_mel_bins == 24 and ex.embed_dim == 16
    assert ex(torch.randn(2, SR) * 0.1).shape == (2, 16)


def test_fingerprint_changes_with_weights_and_frontend(exp, tmp_path):
    a = load_experiment(exp)[0]
    b = load_experiment(make_tiny_experiment(tmp_path / "other", seed=1))[0]
    assert model_fingerprint(a) == model_fingerprint(load_experiment(exp)[0])
    assert model_fingerprint(a) != model_fingerprint(b)
    a.frontend.cmn = False
    assert model_fingerprint(a) != model_fingerprint(load_experiment(exp)[0])


@pytest.mark.parametrize("seconds", [0.05, 0.3, 0.52, 3.0, 7.77, 20.0, 20.05, 45.0, 61.3])
def test_segment_plan(seconds):
    pol = SegmentPolicy()
    n_samples = int(seconds * SR)
    seg, starts = segment_plan(n_samples, 400, 160, SR, pol)
    frames = 1 + (seg - 400) // 160
    assert (seg - 400) % 160 == 0 and frames % pol.length_quantum_frames == 0
    assert frames >= 50  # min 0.5 s
    assert frames <= 2000  # max window 20 s
    if seconds >= 0.5:
        assert starts[0] == 0 and starts[-1] + seg <= n_samples
        assert n_samples - (starts[-1] + seg) < 400 + 160 * pol.length_quantum_frames  # the end is covered
        assert len(starts) == max(1, int(np.ceil((1 + (n_samples - 400) // 160) / 2000)))
    else:
        assert starts == [0] and seg > n_samples


def test_short_waves_are_tiled():
    w = torch.arange(1000, dtype=torch.float32)
    seg = cut_segments(w, 400, 160, SR, SegmentPolicy())
    assert seg.shape == (1, 400 + 160 * 49)
    assert torch.equal(seg[0, :1000], w) and torch.equal(seg[0, 1000:2000], w)


def test_batched_equals_one_at_a_time(extractor):
    g = torch.Generator().manual_seed(0)
    lengths = [1.0, 1.04, 1.05, 2.5, 0.3, 2.5, 21.0]  # 1.04 and 1.05 s quantise to the same length
    waves = [0.1 * torch.randn(int(s * SR), generator=g) for s in lengths]
    batched = embed_waves(extractor, waves, batch_size=4)
    single = torch.stack([embed_waves(extractor, [w], batch_size=1)[0] for w in waves])
    torch.testing.assert_close(batched, single, atol=2e-5, rtol=1e-4)
    # a long utterance is the mean of its window embeddings
    windows = cut_segments(waves[-1], 400, 160, SR, SegmentPolicy())
    assert windows.shape[0] == 2
    with torch.no_grad():
        expected = extractor(windows).mean(0)
    torch.testing.assert_close(batched[-1], expected, atol=2e-5, rtol=1e-4)


def _data_dir(root, n=7):
    wav, utt2spk = {}, {}
    for i in range(n):
        spk = f"spk{i % 3}"
        utt = f"{spk}-u{i}"
        wav[utt] = str(voice(root / "wav" / f"{utt}.wav", 100 + 30 * i, seconds=0.8 + 0.4 * i, seed=i))
        utt2spk[utt] = spk
    write_data_dir(root / "data", wav, utt2spk)  # no utt2dur: durations come from the headers
    return root / "data", wav


def test_extract_resume_and_ranks(exp, extractor, tmp_path, monkeypatch):
    from speakerid.scoring.embeddings import load_embeddings

    data, wav = _data_dir(tmp_path)
    out = tmp_path / "emb"
    utts = sorted(wav)
    expected = embed_files(extractor, [wav[u] for u in utts]).numpy()
    embedded: list[int] = []
    real = embed_waves

    def counting(ex, waves, *a, **k):
        embedded.append(len(waves))
        return real(ex, waves, *a, **k)

    monkeypatch.setattr("speakerid.extract.embed_waves", counting)
    # rank 0 of 2 alone: its share is saved, but it cannot merge without rank 1's
    with pytest.raises(ExtractError, match="have no embedding yet"):
        extract_embeddings(exp, data, out, rank=0, world_size=2, chunk_utts=2, device="cpu", progress=False)
    assert sum(embedded) == 4 and len(list((out / ".parts").glob("rank000-*.npz"))) == 2
    extract_embeddings(exp, data, out, rank=1, world_size=2, chunk_utts=2, device="cpu", progress=False)
    assert sum(embedded) == 7 and not (out / "embeddings.npz").exists()  # only rank 0 merges
    # rank 0 again: everything is in the parts, nothing is recomputed, the merge happens
    paths = extract_embeddings(exp, data, out, rank=0, world_size=2, device="cpu", progress=False)
    assert sum(embedded) == 7 and not (out / ".parts").exists()
    assert [p.name for p in paths] == ["embeddings.npz", "embedding.scp"]
    ids, emb = load_embeddings(out / "embeddings.npz")
    ids_scp, emb_scp = load_embeddings(out / "embedding.scp")
    assert ids == utts == ids_scp
    np.testing.assert_array_equal(emb, emb_scp)
    np.testing.assert_allclose(emb, expected, atol=2e-5, rtol=1e-4)
    # complete outputs for this model: a rerun does nothing
    extract_embeddings(exp, data, out, device="cpu", progress=False)
    assert sum(embedded) == 7
    assert json.loads((out / "extract_meta.json").read_text())["num_utts"] == 7


def test_parts_of_another_model_are_not_reused(exp, tmp_path, monkeypatch):
    from speakerid.scoring.embeddings import load_embeddings

    data, wav = _data_dir(tmp_path, n=3)
    out = tmp_path / "emb"
    other = make_tiny_experiment(tmp_path / "other", seed=5)
    with pytest.raises(ExtractError):
        extract_embeddings(other, data, out, rank=0, world_size=2, chunk_utts=1, device="cpu", progress=False)
    extract_embeddings(exp, data, out, chunk_utts=1, device="cpu", progress=False)
    _, emb = load_embeddings(out)
    expected = embed_files(load_experiment(exp)[0], [wav[u] for u in sorted(wav)]).numpy()
    np.testing.assert_allclose(emb, expected, atol=2e-5, rtol=1e-4)


def test_cli_extract(exp, tmp_path, capsys):
    from speakerid.cli.main import main

    data, _ = _data_dir(tmp_path, n=2)
    assert main(["extract", "--exp", str(exp), "--data", str(data), "--out", str(tmp_path / "e"), "--format", "npz", "--no-progress"]) == 0
    assert (tmp_path / "e" / "embeddings.npz").is_file() and not (tmp_path / "e" / "embedding.scp").exists()
    assert main(["extract", "--exp", str(tmp_path / "missing"), "--data", str(data), "--out", str(tmp_path / "e2")]) == 2
    assert "run the train stage first" in capsys.readouterr().err


RECIPE_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*/conf/*.yaml"))


@pytest.mark.parametrize("path", RECIPE_CONFIGS, ids=[f"{p.parent.parent.name}/{p.name}" for p in RECIPE_CONFIGS])
def test_recipe_configs_load_and_build(path):
    """Every recipe config loads with load_config, and its model and loss build with their kwargs."""
    from speakerid.config import load_config
    from speakerid.losses import build_loss
    from speakerid.models import build_model

    cfg = load_config(path)
    with torch.device("meta"):  # shapes only: no memory, no time
        model = build_model(cfg.model.name, feat_dim=cfg.features.num_mel_bins, **cfg.model.kwargs)
        build_loss(cfg.loss.name, model.embed_dim, 12, **cfg.loss.kwargs)
    if cfg.loss.name == "circle":  # pair-based: needs P x K batches
        assert cfg.data.sampler == "pk" and cfg.data.utts_per_speaker >= 2


def test_recipe_configs_exist():
    names = {f"{p.parent.parent.name}/{p.name}" for p in RECIPE_CONFIGS}
    assert {"mini/ecapa_circle.yaml", "voxceleb/resnet34_circle.yaml", "voxceleb/ecapa_c1024_aam.yaml"} <= names
