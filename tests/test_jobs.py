"""Resumable jobs (features, extract) after kills and changed inputs: hand-made file states, no timing."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from _use_helpers import make_tiny_experiment, voice
from speakerid.data.datadir import write_data_dir
from speakerid.data.jobs import PartStore, inputs_digest, unique_temp
from speakerid.extract import extract_embeddings
from speakerid.inference import embed_files, load_experiment
from speakerid.scoring.embeddings import load_embeddings


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    torch.set_num_threads(1)
    return make_tiny_experiment(tmp_path_factory.mktemp("jobs") / "exp")


def _data_dir(root: Path, n: int = 4, seed0: int = 0) -> tuple[Path, dict[str, str]]:
    wav, utt2spk = {}, {}
    for i in range(n):
        utt = f"spk{i % 2}-u{i}"
        wav[utt] = str(voice(root / "wav" / f"{utt}.wav", 110 + 40 * i, seconds=0.7 + 0.3 * i, seed=seed0 + i))
        utt2spk[utt] = f"spk{i % 2}"
    write_data_dir(root / "data", wav, utt2spk)
    return root / "data", wav


def _hidden(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*")]


# ---------------------------------------------------------------- extract (issue 11 items 1, 2, 5)
def test_extract_ignores_temp_parts_and_removes_corrupt_ones(exp, tmp_path, caplog):
    from speakerid.cli.main import main

    data, _ = _data_dir(tmp_path)
    out = tmp_path / "emb"
    (out / ".parts").mkdir(parents=True)
    (out / ".parts" / ".rank000-000000.npz.abcdefgh.npz").write_bytes(b"")  # a writer killed mid-save
    (out / ".parts" / "rank000-000007.npz").write_bytes(b"PK\x03\x04 truncated")  # a corrupt finished part
    with caplog.at_level(logging.WARNING, logger="speakerid"):
        assert main(["extract", "--exp", str(exp), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    assert "rank000-000007.npz: unreadable part" in caplog.text
    ids, _ = load_embeddings(out / "embeddings.npz")
    assert len(ids) == 4 and not (out / ".parts").exists() and not _hidden(out)


def test_extract_recomputes_when_wav_scp_points_elsewhere(exp, tmp_path):
    data, wav = _data_dir(tmp_path)
    out = tmp_path / "emb"
    extract_embeddings(exp, data, out, device="cpu", progress=False)
    # same ids, other files (rotated): the rerun must not keep the old vectors
    utts = sorted(wav)
    moved = {u: wav[utts[(i + 1) % len(utts)]] for i, u in enumerate(utts)}
    write_data_dir(data, moved, {u: u.split("-")[0] for u in utts})
    extract_embeddings(exp, data, out, device="cpu", progress=False)
    _, emb = load_embeddings(out / "embeddings.npz")
    fresh = embed_files(load_experiment(exp)[0], [moved[u] for u in utts]).numpy()
    np.testing.assert_allclose(emb, fresh, atol=2e-5, rtol=1e-4)


def test_extract_rewritten_audio_is_recomputed(exp, tmp_path):
    data, wav = _data_dir(tmp_path)
    out = tmp_path / "emb"
    extract_embeddings(exp, data, out, device="cpu", progress=False)
    target = wav["spk0-u0"]
    voice(Path(target), 300, seconds=1.3, seed=42)  # same path, new content (size changes)
    extract_embeddings(exp, data, out, device="cpu", progress=False)
    ids, emb = load_embeddings(out / "embeddings.npz")
    fresh = embed_files(load_experiment(exp)[0], [target]).numpy()[0]
    np.testing.assert_allclose(emb[ids.index("spk0-u0")], fresh, atol=2e-5, rtol=1e-4)


def test_killed_merge_leaves_nothing_behind_after_rerun(exp, tmp_path):
    from speakerid.extract import ExtractError

    data, _ = _data_dir(tmp_path)
    out = tmp_path / "emb"
    with pytest.raises(ExtractError):  # rank 0 of 2 alone: its parts only
        extract_embeddings(exp, data, out, rank=0, world_size=2, chunk_utts=1, device="cpu", progress=False)
    extract_embeddings(exp, data, out, rank=1, world_size=2, chunk_utts=1, device="cpu", progress=False)
    # the state of a merge killed while writing: hidden temporaries of its outputs
    (out / ".embeddings.npz.k1ll3d00.npz").write_bytes(b"PK partial")
    (out / ".embedding.ark.k1ll3d01.tmp").write_bytes(b"partial")
    (out / ".extract_meta.json.k1ll3d02.tmp").write_bytes(b"{")
    extract_embeddings(exp, data, out, rank=0, world_size=2, device="cpu", progress=False)
    assert (out / "embeddings.npz").is_file() and not (out / ".parts").exists()
    assert not _hidden(out), _hidden(out)
    # leftovers next to complete outputs are cleared by a rerun that has nothing to do
    (out / ".embeddings.npz.k1ll3d03.npz").write_bytes(b"")
    (out / ".parts").mkdir()
    extract_embeddings(exp, data, out, device="cpu", progress=False)
    assert not _hidden(out) and not (out / ".parts").exists()


def test_part_store_rules(tmp_path):
    store = PartStore(tmp_path / ".parts", "k1")
    store.write(0, ["a", "b"], np.ones((2, 3)))
    (tmp_path / ".parts" / ".rank000-000001.npz.xxxx.npz").write_bytes(b"")
    PartStore(tmp_path / ".parts", "k2").write(1, ["c"], np.zeros((1, 3)))
    assert sorted(store.read()) == ["a", "b"]
    assert [p.name for p in store.paths()] == ["rank000-000000.npz"]  # the other key's part is gone
    assert unique_temp(tmp_path / "x") != unique_temp(tmp_path / "x")
    assert str(os.getpid()) in unique_temp(tmp_path / "x").name


def test_inputs_digest_sees_size_and_mtime(tmp_path):
    f = tmp_path / "a.wav"
    f.write_bytes(b"1234")
    d1 = inputs_digest([("u", str(f))])
    os.utime(f, ns=(1, 1))
    d2 = inputs_digest([("u", str(f))])
    f.write_bytes(b"123456")
    assert len({d1, d2, inputs_digest([("u", str(f))])}) == 3


# ---------------------------------------------------------------- features (issue 11 items 3, 4)
def _features(data: Path, **kw):
    from speakerid.data.feature_cache import compute_features_for_data_dir

    return compute_features_for_data_dir(data, progress=False, **kw)


def test_old_feature_shards_stay_valid_until_replaced(tmp_path, monkeypatch):
    import kaldiio

    import speakerid.data.feature_cache as fc
    from speakerid.config import FeatureConfig

    data, wav = _data_dir(tmp_path)
    scp = _features(data, utts_per_shard=2, feature_cfg=FeatureConfig(num_mel_bins=24))
    real = fc._write_shard
    calls = []

    def killed_after_one(job):
        if calls:
            raise KeyboardInterrupt  # the job dies after its first new shard
        calls.append(job[0])
        return real(job)

    monkeypatch.setattr(fc, "_write_shard", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        _features(data, utts_per_shard=2, feature_cfg=FeatureConfig(num_mel_bins=40))
    feats = kaldiio.load_scp(str(scp))  # the old set is still complete and readable
    assert sorted(feats) == sorted(wav) and all(feats[u].shape[1] == 24 for u in wav)
    monkeypatch.setattr(fc, "_write_shard", real)
    _features(data, utts_per_shard=2, feature_cfg=FeatureConfig(num_mel_bins=40))
    feats = kaldiio.load_scp(str(scp))
    assert all(feats[u].shape[1] == 40 for u in wav)
    assert len(list((data / "feats").glob("raw_fbank.*.ark"))) == 2  # the old shards are gone now
    assert not _hidden(data / "feats")


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux-only")
def test_feature_pool_workers_die_with_the_job(tmp_path):
    data, _ = _data_dir(tmp_path)
    script = textwrap.dedent(
        f"""
        import time
        import speakerid.data.feature_cache as fc

        def blocked(job):  # a worker stuck in its shard: only a signal ends it
            time.sleep(600)

        fc._write_shard = blocked
        fc.compute_features_for_data_dir({str(data)!r}, num_workers=2, utts_per_shard=1, progress=False)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    kids: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(kids) < 2 and time.monotonic() < deadline:
            kids = _children(proc.pid)
            time.sleep(0.05)
        assert len(kids) >= 2, "the pool did not start"
        for k in kids:
            os.kill(k, signal.SIGSTOP)  # stopped workers can only be ended by SIGKILL
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 30
        while any(_alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.05)
        survivors = [k for k in kids if _alive(k)]
        assert not survivors, f"pool workers {survivors} outlived the killed job"
    finally:
        if proc.poll() is None:
            proc.kill()
        for k in set(kids) | set(_children(proc.pid)):
            if _alive(k):
                os.kill(k, signal.SIGKILL)
