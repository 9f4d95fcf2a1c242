"""Training data: samplers, chunk dataset, batch step, cached features, tar shards."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speakerid.config import AugmentConfig, FeatureConfig
from speakerid.data.datadir import DataDirError, write_data_dir
from speakerid.data.batch import BatchAugment, collate
from speakerid.data.dataset import ChunkDataset, chunk_num_samples, fit_length, read_region
from speakerid.data.sampler import PKBatchSampler, SampleKey, SamplerError, ShuffleBatchSampler

SR = 16000
CHUNK = 50  # frames: 0.515 s, keeps the tests fast
FEAT = FeatureConfig(num_mel_bins=40)


def _indices(batches):
    return [[k.index for k in b] for b in batches]


# -- samplers -------------------------------------------------------------------------------------
def _labels(num_spk: int = 10, per_spk=(1, 2, 3, 5, 8)) -> list[int]:
    return [s for s in range(num_spk) for _ in range(per_spk[s % len(per_spk)])]


def test_pk_batches_have_p_speakers_times_k_utts():
    labels = _labels()
    sampler = PKBatchSampler(labels, P=4, K=3, seed=1)
    batches = _indices(sampler)
    assert len(batches) == len(sampler) == len(labels) // 12
    for b in batches:
        assert len(b) == 12
        groups = [b[i : i + 3] for i in range(0, 12, 3)]
        spk = [labels[g[0]] for g in groups]
        assert len(set(spk)) == 4, "P distinct speakers per batch"
        for g in groups:
            assert {labels[i] for i in g} == {labels[g[0]]}, "K utterances of one speaker, contiguous"
            if Counter(labels)[labels[g[0]]] >= 3:
                assert len(set(g)) == 3, "no repeats when the speaker has >= K utterances"


def test_pk_draws_with_replacement_for_small_speakers_and_covers_speakers():
    labels = [0] + [1] * 4 + [2] * 4 + [3] * 4  # speaker 0 has 1 utterance < K
    sampler = PKBatchSampler(labels, P=2, K=3, seed=0, batches_per_epoch=20)
    seen = Counter()
    for b in _indices(sampler):
        for i in range(0, len(b), 3):
            seen[labels[b[i]]] += 1
            if labels[b[i]] == 0:
                assert b[i : i + 3] == [0, 0, 0]
    # speakers are visited in cycles: counts differ by at most one cycle
    assert set(seen) == {0, 1, 2, 3} and max(seen.values()) - min(seen.values()) <= 1


def test_shuffle_sampler_covers_all_items():
    s = ShuffleBatchSampler(10, batch_size=3, seed=0, drop_last=False)
    flat = [i for b in _indices(s) for i in b]
    assert len(flat) == 12 and set(flat) == set(range(10))
    s = ShuffleBatchSampler(10, batch_size=3, seed=0)
    flat = [i for b in _indices(s) for i in b]
    assert len(flat) == 9 == len(set(flat))


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("kind", ["shuffle", "pk"])
def test_ddp_slices_are_disjoint_and_union_is_the_global_batch(kind, world):
    labels = _labels(12)

    def make(rank: int, w: int):
        if kind == "shuffle":
            return ShuffleBatchSampler(len(labels), batch_size=12 // w, seed=3, rank=rank, world_size=w)
        return PKBatchSampler(labels, P=6 // w, K=2, seed=3, rank=rank, world_size=w)

    single = make(0, 1)
    single.set_epoch(2)
    full = list(single)
    parts = []
    for r in range(world):
        s = make(r, world)
        s.set_epoch(2)
        parts.append(list(s))
    assert all(len(p) == len(full) for p in parts)
    for b, global_batch in enumerate(full):
        slices = [p[b] for p in parts]
        joined = [k for sl in slices for k in sl]
        assert joined == global_batch, "rank r takes the r-th contiguous slice of the same global batch"
        if kind == "shuffle":
            assert len({k.index for k in joined}) == len(joined)
        else:  # each rank gets whole speakers, disjoint between ranks
            spk = [{labels[k.index] for k in sl} for sl in slices]
            assert all(len(s) == 6 // world for s in spk)
            assert len(set.union(*spk)) == 6


def test_sampler_deterministic_per_seed_and_epoch():
    labels = _labels()
    for make in (
        lambda seed: ShuffleBatchSampler(len(labels), 4, seed),
        lambda seed: PKBatchSampler(labels, 3, 2, seed),
    ):
        a, b, c = make(5), make(5), make(6)
        assert list(a) == list(b)
        assert _indices(a) != _indices(c)
        b.set_epoch(1)
        assert _indices(a) != _indices(b)
        a.set_epoch(1)
        assert list(a) == list(b)


def test_sampler_resume_with_start_batch_and_state_dict():
    labels = _labels()
    for s in (ShuffleBatchSampler(len(labels), 4, 7), PKBatchSampler(labels, 3, 2, 7)):
        s.set_epoch(3)
        full = list(s)
        s.set_epoch(3, start_batch=2)
        assert len(s) == len(full) - 2
        assert list(s) == full[2:]
        state = s.state_dict(batches_done=1)  # trained one more batch after resuming at 2
        fresh = type(s).__new__(type(s))
        fresh.__dict__.update(s.__dict__)
        fresh.set_epoch(0)
        fresh.load_state_dict(state)
        assert list(fresh) == full[3:]
        with pytest.raises(SamplerError, match="start_batch"):
            s.set_epoch(0, start_batch=len(full) + 1)


def test_sampler_errors_name_the_problem():
    with pytest.raises(SamplerError, match="speakers"):
        PKBatchSampler([0, 1, 2], P=2, K=2, seed=0, world_size=2)
    with pytest.raises(SamplerError, match="fewer than one global batch"):
        ShuffleBatchSampler(5, batch_size=4, seed=0, world_size=2)


# -- synthetic data -------------------------------------------------------------------------------
def _tone(freq: float, seconds: float, seed: int, sr: int = SR) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """4 speakers x 3 utterances, 0.2-1.5 s; one 8 kHz file and one stereo file."""
    root = tmp_path_factory.mktemp("data")
    wav, utt2spk = {}, {}
    for s in range(4):
        for u in range(3):
            utt = f"spk{s}-u{u}"
            seconds = [1.5, 0.9, 0.2][u]
            path = root / "wav" / f"{utt}.wav"
            path.parent.mkdir(exist_ok=True)
            if (s, u) == (1, 0):
                sf.write(path, _tone(200 + 100 * s, seconds, s * 10 + u, sr=8000), 8000, subtype="PCM_16")
            elif (s, u) == (2, 0):
                x = _tone(200 + 100 * s, seconds, s * 10 + u)
                sf.write(path, np.stack([x, 0.5 * x], axis=1), SR, subtype="PCM_16")
            else:
                sf.write(path, _tone(200 + 100 * s, seconds, s * 10 + u), SR, subtype="PCM_16")
            wav[utt], utt2spk[utt] = str(path), f"spk{s}"
    out = root / "train"
    write_data_dir(out, wav, utt2spk)
    return out


def _dataset(data_dir, aug: AugmentConfig | None = None, **kw) -> ChunkDataset:
    return ChunkDataset(data_dir, FEAT, aug or AugmentConfig(), CHUNK, seed=11, **kw)


def test_chunk_shapes_labels_and_exact_frame_count(data_dir):
    ds = _dataset(data_dir)
    assert len(ds) == 12 and ds.num_speakers == ds.num_classes == 4
    assert ds.chunk_samples == chunk_num_samples(FEAT, CHUNK) == (CHUNK - 1) * 160 + 400
    for i in range(len(ds)):
        item = ds[SampleKey(0, 0, i, i)]
        assert item["feats"].shape == (CHUNK, 40) and item["feats"].dtype == torch.float32
        assert torch.isfinite(item["feats"]).all()
        assert item["label"] == int(item["utt"][3]), "sorted speakers -> 0..N-1"
        assert item["feats"].mean(0).abs().max() < 1e-3, "CMN over the chunk"
    batch = collate([ds[i] for i in range(3)])
    assert batch["feats"].shape == (3, CHUNK, 40) and batch["labels"].dtype == torch.long
    assert batch["keys"].shape == (3, 3) and batch["utts"] == ds.utts[:3]


def test_same_seed_epoch_pos_gives_identical_chunk(data_dir):
    ds1, ds2 = _dataset(data_dir), _dataset(data_dir)
    key = SampleKey(epoch=3, batch=1, pos=7, index=0)  # spk0-u0: 1.5 s, longer than a chunk
    a, b = ds1[key]["feats"], ds2[key]["feats"]
    assert torch.equal(a, b)
    assert not torch.equal(a, ds1[key._replace(pos=8)]["feats"]), "another position, another crop"
    assert not torch.equal(a, ds1[key._replace(epoch=4)]["feats"]), "another epoch, another crop"


def test_dataloader_workers_do_not_change_results(data_dir):
    ds = _dataset(data_dir)
    sampler = ShuffleBatchSampler(len(ds), 4, seed=0)
    sampler.set_epoch(1)
    loads = []
    for workers in (0, 2):
        dl = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=workers, collate_fn=collate)
        loads.append([b["feats"] for b in dl])
    assert all(torch.equal(x, y) for x, y in zip(*loads)) and len(loads[0]) == 3


def test_short_utterances_are_repeated_or_zero_padded():
    x = torch.arange(5.0)
    g = torch.Generator().manual_seed(0)
    y = fit_length(x, 12, g)
    assert y.shape == (12,) and all(y[i + 5] == y[i] for i in range(7)), "periodic repetition"
    z = fit_length(x, 8, g, pad_mode="zero")
    assert torch.equal(z, torch.tensor([0, 1, 2, 3, 4, 0, 0, 0.0]))
    long = fit_length(torch.arange(100.0), 10, g)
    assert torch.equal(long, long[0] + torch.arange(10.0)), "a contiguous crop"


def test_short_utterance_chunk_and_waveform_mode(data_dir):
    aug = AugmentConfig()
    aug.mixup = dataclasses.replace(aug.mixup, enabled=True, domain="waveform")
    ds = _dataset(data_dir, aug)
    item = ds[2]  # spk0-u2 is 0.2 s, shorter than the 0.515 s chunk
    assert item["utt"] == "spk0-u2" and "feats" not in item
    wave = item["wave"]
    assert wave.shape == (ds.chunk_samples,)
    period = int(0.2 * SR)
    assert torch.equal(wave[period:], wave[:-period]), "repeat padding"


def test_read_region_seek_equals_full_load(data_dir):
    from speakerid.audio import load_audio

    path = str(Path(data_dir).parent / "wav" / "spk0-u0.wav")
    full, _ = load_audio(path)
    region = read_region(path, 1000, SR, torch.Generator().manual_seed(4))
    start = int(torch.randint(full.numel() - 1000 + 1, (1,), generator=torch.Generator().manual_seed(4)))
    assert torch.equal(region, full[start : start + 1000])
    resampled = read_region(str(Path(data_dir).parent / "wav" / "spk1-u0.wav"), 1000, SR, torch.Generator())
    assert resampled.shape == (1000,)  # 8 kHz file: loaded, resampled, then cropped


def test_cached_features_path(data_dir, tmp_path):
    kaldiio = pytest.importorskip("kaldiio")
    import shutil

    d = tmp_path / "cached"
    shutil.copytree(data_dir, d)
    rng = np.random.default_rng(0)
    lengths = {}
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path / 'feats.ark'},{d / 'feats.scp'}") as w:
        for i, utt in enumerate(sorted(l.split()[0] for l in (d / "utt2spk").read_text().splitlines())):
            lengths[utt] = [120, 30][i % 2]
            w(utt, (rng.standard_normal((lengths[utt], 40)) + 5).astype(np.float32))
    ds = ChunkDataset(d, FEAT, AugmentConfig(), CHUNK, seed=0, use_cached_features=True)
    for i in (0, 1):
        item = ds[SampleKey(0, 0, 5, i)]
        assert item["feats"].shape == (CHUNK, 40)
        assert item["feats"].mean(0).abs().max() < 1e-4
        assert torch.equal(item["feats"], ds[SampleKey(0, 0, 5, i)]["feats"])
    short = ds[1]["feats"]  # 30 frames repeated to 50 (CMN shifts all rows alike)
    assert torch.allclose(short[30:], short[:20])
    noisy = AugmentConfig()
    noisy.speed = dataclasses.replace(noisy.speed, enabled=True)
    with pytest.raises(ValueError, match="cached features"):
        ChunkDataset(d, FEAT, noisy, CHUNK, seed=0, use_cached_features=True)
    with pytest.raises(DataDirError, match="feats.scp"):
        ChunkDataset(data_dir, FEAT, AugmentConfig(), CHUNK, seed=0, use_cached_features=True)


def test_two_views_are_different_crops(data_dir):
    ds = _dataset(data_dir, two_views=True)
    item = ds[SampleKey(0, 0, 3, 0)]
    assert item["feats"].shape == item["feats_k"].shape == (CHUNK, 40)
    assert not torch.equal(item["feats"], item["feats_k"])
    assert item["label"] == item["label_k"]


# -- shards ---------------------------------------------------------------------------------------
def test_shards_round_trip_rank_split_and_equal_chunks(data_dir, tmp_path):
    from speakerid.cli.main import main
    from speakerid.data.shards import ShardDataset, write_shards

    out = tmp_path / "shards"
    assert main(["shards", "--data", str(data_dir), "--out", str(out), "--utts-per-shard", "5"]) == 0
    names = (out / "shards.list").read_text().split()
    assert names == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    mtimes = [(out / n).stat().st_mtime_ns for n in names]
    write_shards(data_dir, out, 5)  # same arguments: finished shards are kept
    assert [(out / n).stat().st_mtime_ns for n in names] == mtimes

    ds = ShardDataset(out, FEAT, AugmentConfig(), CHUNK, seed=11, shuffle_buffer=4)
    ds.set_epoch(2)
    items = list(ds)
    assert len(items) == len(ds) == 12
    assert sorted(it["utt"] for it in items) == _dataset(data_dir).utts, "one epoch = every utterance once"
    chunk_ds = _dataset(data_dir)
    for it in items:
        epoch, batch, pos = it["key"]
        ref = chunk_ds[SampleKey(epoch, batch, pos, chunk_ds.utts.index(it["utt"]))]
        assert it["label"] == ref["label"]
        # The shard's FLAC holds the wav's 16-bit samples: identical chunks, except where the
        # shard had to requantise: the stereo mix-down (close), and the 8 kHz file resampled to
        # 16 kHz, whose empty 4-8 kHz bins hold only requantisation noise (not compared).
        if it["utt"] != "spk1-u0":
            atol = 2e-2 if it["utt"] == "spk2-u0" else 1e-4
            assert torch.allclose(it["feats"], ref["feats"], atol=atol), it["utt"]
    assert [it["utt"] for it in ShardDataset(out, FEAT, AugmentConfig(), CHUNK, seed=11, shuffle_buffer=4)] != [
        it["utt"] for it in items
    ], "another epoch, another order"

    # 3 shards for 2 ranks: equal sample counts per rank all the same (a rank cycles its shards).
    ranks = [ShardDataset(str(out / "shards.list"), FEAT, AugmentConfig(), CHUNK, seed=1, rank=r, world_size=2) for r in (0, 1)]
    assert [len(list(r)) for r in ranks] == [6, 6]
    # 4 shards of 3 for 2 ranks: disjoint halves whose union is the data.
    write_shards(data_dir, tmp_path / "s3", 3)
    ranks = [ShardDataset(tmp_path / "s3", FEAT, AugmentConfig(), CHUNK, seed=1, rank=r, world_size=2) for r in (0, 1)]
    per_rank = [[it["utt"] for it in r] for r in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == 6
    assert sorted(per_rank[0] + per_rank[1]) == chunk_ds.utts
    loader = torch.utils.data.DataLoader(ranks[0], batch_size=3, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert [b["feats"].shape for b in batches] == [(3, CHUNK, 40)] * 2


def test_shard_source_errors(tmp_path):
    from speakerid.data.shards import ShardDataset, ShardError

    with pytest.raises(ShardError, match="shard list not found"):
        ShardDataset(tmp_path, FEAT, AugmentConfig(), CHUNK, seed=0)
    with pytest.raises(ShardError, match="not found"):
        ShardDataset(str(tmp_path / "shard-{000000..000003}.tar"), FEAT, AugmentConfig(), CHUNK, seed=0)


# -- augmentation and the batch step --------------------------------------------------------------
@pytest.fixture(scope="module")
def aug_lists(tmp_path_factory) -> tuple[Path, Path]:
    """A noise list with one synthetic noise and an RIR list with one synthetic decaying RIR."""
    root = tmp_path_factory.mktemp("aug")
    rng = np.random.default_rng(0)
    sf.write(root / "noise.wav", (0.1 * rng.standard_normal(SR)).astype(np.float32), SR)
    rir = rng.standard_normal(SR // 4) * np.exp(-np.arange(SR // 4) / (0.03 * SR))
    rir[0] = 3.0
    sf.write(root / "rir.wav", (rir / np.abs(rir).max()).astype(np.float32), SR)
    (root / "noise.list").write_text(f"{root / 'noise.wav'} noise\n")
    (root / "rir.list").write_text(f"{root / 'rir.wav'}\n")
    return root / "noise.list", root / "rir.list"


def _aug(noise_list=None, rir_list=None, speed=False, specaug=False, mixup_on=None) -> AugmentConfig:
    aug = AugmentConfig()
    if noise_list:
        aug.noise = dataclasses.replace(aug.noise, enabled=True, prob=1.0, noise_list=str(noise_list))
    if rir_list:
        aug.reverb = dataclasses.replace(aug.reverb, enabled=True, prob=1.0, rir_list=str(rir_list))
    aug.speed = dataclasses.replace(aug.speed, enabled=speed, prob=1.0)
    aug.specaug = dataclasses.replace(aug.specaug, enabled=specaug, prob=1.0, freq_width=8, time_width=10)
    if mixup_on:
        aug.mixup = dataclasses.replace(aug.mixup, enabled=True, prob=1.0, domain=mixup_on)
    return aug


def test_speed_perturbation_as_new_speakers_keeps_exact_chunk_length(data_dir):
    ds = _dataset(data_dir, _aug(speed=True))
    assert ds.num_classes == 3 * ds.num_speakers == 12
    labels = []
    for pos in range(12):
        item = ds[SampleKey(0, 0, pos, 0)]  # spk0-u0, 1.5 s
        assert item["feats"].shape == (CHUNK, 40)
        assert item["label"] % 4 == 0 and 0 <= item["label"] < 12
        labels.append(item["label"])
    assert set(labels) == {4, 8}, "prob 1: always a non-1.0 speed, each speed its own label block"


def test_noise_and_reverb_change_the_chunk_deterministically(data_dir, aug_lists):
    noise_list, rir_list = aug_lists
    clean = _dataset(data_dir, train=False)
    noisy = _dataset(data_dir, _aug(noise_list, rir_list))
    key = SampleKey(1, 0, 4, 0)
    a, b = noisy[key]["feats"], noisy[key]["feats"]
    assert torch.equal(a, b) and a.shape == (CHUNK, 40)
    assert (a - clean[key]["feats"]).abs().mean() > 0.1


def test_batch_step_specaugment_is_per_sample_and_mixup_labels(data_dir):
    ds = _dataset(data_dir)
    sampler = ShuffleBatchSampler(len(ds), 4, seed=2)
    keys = next(iter(sampler))
    batch = collate([ds[k] for k in keys])
    spec = BatchAugment(_aug(specaug=True), FEAT, seed=11)
    whole = spec({k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()})
    assert whole["lam"] == 1.0 and torch.equal(whole["labels_b"], batch["labels"])
    assert (whole["feats"] == 0).any() and not torch.equal(whole["feats"], batch["feats"])
    # the DDP view: two ranks each augment half of the global batch -> the same samples
    halves = [spec(collate([ds[k] for k in keys[i : i + 2]]))["feats"] for i in (0, 2)]
    assert torch.equal(torch.cat(halves), whole["feats"])

    mixed = BatchAugment(_aug(specaug=True, mixup_on="features"), FEAT, seed=11)(collate([ds[k] for k in keys]))
    assert 0.0 < mixed["lam"] < 1.0 and mixed["feats"].shape == (4, CHUNK, 40)
    assert sorted(mixed["labels_b"].tolist()) == sorted(batch["labels"].tolist())
    assert torch.equal(mixed["labels_a"], batch["labels"])


def test_waveform_mixup_mixes_before_fbank(data_dir):
    aug = _aug(mixup_on="waveform")
    ds = _dataset(data_dir, aug)
    keys = [SampleKey(0, 0, p, i) for p, i in enumerate((0, 3, 6, 9))]
    items = [ds[k] for k in keys]
    assert all("wave" in it and "feats" not in it for it in items)
    step = BatchAugment(aug, FEAT, seed=11)
    out = step(collate(items))
    assert "wave" not in out and out["feats"].shape == (4, CHUNK, 40)
    assert 0.0 < out["lam"] < 1.0 and torch.isfinite(out["feats"]).all()
    again = step(collate(items))
    assert torch.equal(out["feats"], again["feats"]) and again["lam"] == out["lam"]
    # the mixed waveform's fbank, not a mix of fbanks
    unmixed = BatchAugment(_aug(), FEAT, seed=11, train=False)(collate(items))["feats"]
    assert not torch.allclose(out["feats"], unmixed, atol=1e-2)


def test_real_speech_chunks(shared_speech, tmp_path):
    """Two-second chunks of real speech (RAVDESS, 16 kHz FLAC) with PK batches."""
    files = [f for d in sorted(shared_speech.glob("ravdess_0[1-4]")) for f in sorted(d.glob("*.flac"))[:2]]
    if len(files) < 8:
        pytest.skip(f"{shared_speech}: RAVDESS actors 01-04 not found")
    wav = {f"{f.parent.name}/{f.stem}": str(f) for f in files}
    write_data_dir(tmp_path / "d", wav, {u: u.split("/")[0] for u in wav})
    ds = ChunkDataset(tmp_path / "d", FeatureConfig(), AugmentConfig(), 200, seed=0)
    sampler = PKBatchSampler(ds.utt_labels, P=2, K=2, seed=0)
    batch = collate([ds[k] for k in next(iter(sampler))])
    assert batch["feats"].shape == (4, 200, 80) and torch.isfinite(batch["feats"]).all()
    assert batch["labels"].tolist()[0] == batch["labels"].tolist()[1] != batch["labels"].tolist()[2]
    assert batch["feats"].std() > 1.0, "real speech has structure, not a flat floor"
