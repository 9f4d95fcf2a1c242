"""Tests of the data_prep adapters: small trees built here, plus the real speech tree and the
real VoxCeleb1-O trial list (conftest fixtures skip when /work/shared/data is absent)."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from data_prep import common, folder, musan, rirs, synthetic, voxceleb  # noqa: E402
from data_prep.common import PrepError, SplitTrialOptions  # noqa: E402
from speakerid.data.datadir import read_data_dir, read_kv  # noqa: E402
from speakerid.scoring.metrics import compute_eer  # noqa: E402


def _wav(path: Path, seconds: float = 0.5, sr: int = 16000, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    sf.write(str(path), 0.1 * rng.standard_normal(int(seconds * sr)).astype(np.float32), sr, format=fmt)
    return path


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "data_prep" / script), *args], capture_output=True, text=True, cwd=REPO
    )


def _trials(path: Path) -> list[tuple[str, str, bool]]:
    out = []
    for line in path.read_text().splitlines():
        e, t, lab = line.split()
        assert lab in ("target", "nontarget")
        out.append((e, t, lab == "target"))
    return out


# ------------------------------------------------------------------------------ folder.py


@pytest.fixture()
def small_tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for spk, n in (("a_1", 4), ("a_2", 4), ("a_3", 3), ("b_1", 4), ("b_2", 3), ("c_1", 1)):
        for i in range(n):
            ext = "flac" if i % 2 else "wav"
            _wav(root / spk / ("sub" if i == 2 else "") / f"u{i}.{ext}", 0.4 + 0.1 * i)
    return root


def test_folder_data_dir_and_skip_report(small_tree: Path, tmp_path: Path) -> None:
    _wav(small_tree / "stray.wav")  # not in a speaker folder
    (small_tree / "b_2" / "broken.wav").write_bytes(b"RIFF not really audio")
    _wav(small_tree / "b_1" / "tiny.wav", 0.05)
    _wav(small_tree / "b_1" / "u0.flac")  # same id as b_1/u0.wav
    (small_tree / "a_1" / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    summary = folder.prepare_folder(small_tree, out, SplitTrialOptions(), min_duration=0.2)
    dd = read_data_dir(out)
    assert len(dd.speakers) == 6 and len(dd.utts) == 19
    assert "a_1/sub/u2" in dd.wav and dd.utt2spk["a_1/sub/u2"] == "a_1"
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in dd.wav.values())
    assert dd.utt2dur["a_3/u1"] == pytest.approx(0.5, abs=1e-3)
    assert read_kv(out / "spk2utt")["c_1"] == "c_1/u0"
    reasons = dict(line.split("\t") for line in (out / "skipped.txt").read_text().splitlines())
    assert reasons[str(small_tree / "stray.wav")] == "not in a speaker folder"
    assert reasons[str(small_tree / "b_2" / "broken.wav")].startswith("unreadable")
    assert reasons[str(small_tree / "b_1" / "tiny.wav")].startswith("shorter than 0.2 s")
    assert "duplicate id" in reasons[str(small_tree / "b_1" / "u0.wav")]
    assert "skipped 4 (" in summary and "1 unreadable" in summary and "1 not in a speaker folder" in summary
    assert "ignored 1 non-audio files" in summary


def test_folder_cli_force_refusal_and_replace(small_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "feats.scp").write_text("stale x\n")
    r = _run("folder.py", str(small_tree), str(out))
    assert r.returncode == 2 and "not empty (use --force" in r.stderr and "Traceback" not in r.stderr
    assert (out / "feats.scp").exists() and not (out / "wav.scp").exists()  # untouched
    r = _run("folder.py", str(small_tree), str(out), "--force", "--make-trials", "10")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("kept 19 utterances of 6 speakers; skipped 0")
    assert not (out / "feats.scp").exists() and (out / "trials").is_file()  # replaced as a whole
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no staging left
    r = _run("folder.py", "--help")
    assert r.returncode == 0 and "example:\n  python data_prep/folder.py" in r.stdout
    with pytest.raises(PrepError, match="must not contain the input"):
        folder.prepare_folder(small_tree, small_tree.parent, SplitTrialOptions(), force=True)


def test_folder_split_and_grouped_trials(small_tree: Path, tmp_path: Path) -> None:
    opts = SplitTrialOptions(make_trials=16, dev_speakers=4, seed=3, group_of=common.group_function(True))
    folder.prepare_folder(small_tree, tmp_path / "o1", opts)
    train, dev = read_data_dir(tmp_path / "o1" / "train"), read_data_dir(tmp_path / "o1" / "dev")
    assert not set(train.speakers) & set(dev.speakers)
    assert len(dev.speakers) == 4 and "c_1" not in dev.speakers  # dev speakers need >= 2 utts
    assert {s.split("_")[0] for s in dev.speakers} == {"a", "b"}  # stratified, >= 2 per group
    assert not (tmp_path / "o1" / "train" / "trials").exists()
    trials = _trials(tmp_path / "o1" / "dev" / "trials")
    assert sum(t for _, _, t in trials) == sum(not t for _, _, t in trials) == 8
    for e, t, target in trials:
        assert e in dev.wav and t in dev.wav and e != t
        assert (dev.utt2spk[e] == dev.utt2spk[t]) == target
        assert dev.utt2spk[e].split("_")[0] == dev.utt2spk[t].split("_")[0]  # within group
    assert len({(min(e, t), max(e, t)) for e, t, _ in trials}) == len(trials)
    folder.prepare_folder(small_tree, tmp_path / "o2", opts)  # same seed -> same files
    for name in ("train/wav.scp", "dev/utt2spk", "dev/trials"):
        assert (tmp_path / "o1" / name).read_text() == (tmp_path / "o2" / name).read_text()
    # --dev-fraction: of the 5 speakers with >= 2 utterances
    folder.prepare_folder(small_tree, tmp_path / "o3", SplitTrialOptions(dev_fraction=0.4, seed=1))
    assert len(read_data_dir(tmp_path / "o3" / "dev").speakers) == 2


def test_make_trials_edge_cases() -> None:
    spk2utt = {"x_1": ["x_1/a", "x_1/b"], "x_2": ["x_2/a"], "y_1": ["y_1/a", "y_1/b", "y_1/c"]}
    trials, stats = common.make_trials(spk2utt, 7, seed=0)
    # 1 + 3 unique target pairs exist; each target gets a non-target with the same enrolment
    assert stats.target == stats.nontarget == 3 and len(trials) == 6
    assert stats.excluded_single_utt == 1
    grouped, gstats = common.make_trials(spk2utt, 100, seed=0, group_of=common.group_function(True))
    assert gstats.excluded_alone_in_group == 1  # y_1 has nobody to be a non-target against
    assert gstats.target == 1 and {e.split("/")[0] for e, _, _ in grouped} == {"x_1"}
    with pytest.raises(PrepError, match="cannot make trials"):
        common.make_trials({"x_1": ["x_1/a"], "y_1": ["y_1/a"]}, 10)
    regex = common.group_function(group_regex=r"([a-z]+)_")
    assert regex("ravdess_01") == "ravdess" and regex("NoMatch") == ""
    assert common.group_function(group_regex=r"[a-z]{3}")("ravdess_01") == "rav"  # no group: whole match


# ------------------------------------------------------------------------------ real speech tree


def test_folder_on_shared_speech(shared_speech: Path, tmp_path: Path) -> None:
    opts = SplitTrialOptions(make_trials=2000, seed=0, group_of=common.group_function(True))
    summary = folder.prepare_folder(shared_speech, tmp_path / "speech", opts)
    dd = read_data_dir(tmp_path / "speech")
    on_disk = {d.name for d in shared_speech.iterdir() if d.is_dir() and any(d.iterdir())}
    assert set(dd.speakers) == on_disk  # every speaker folder of the tree, whatever the tree holds
    assert "kept" in summary and f"{len(on_disk)} speakers" in summary
    fsdd = [u for u in dd.utts if u.startswith("fsdd_")]
    assert fsdd and all(0 < dd.utt2dur[u] < 2.0 for u in fsdd)  # 8 kHz files: seconds, not samples
    trials = _trials(tmp_path / "speech" / "trials")
    assert len(trials) == 2000
    ids = {u for e, t, _ in trials for u in (e, t)}
    assert ids <= set(dd.wav)
    assert all(dd.utt2spk[e].split("_")[0] == dd.utt2spk[t].split("_")[0] for e, t, _ in trials)
    assert not any(dd.utt2spk[e].startswith("libri_") for e, _, _ in trials)  # one utterance each
    trials_mod = pytest.importorskip("speakerid.scoring.trials")
    assert trials_mod.read_trials(tmp_path / "speech" / "trials")[0][2] in (0, 1)


# ------------------------------------------------------------------------------ voxceleb.py


def _m4a(path: Path, seconds: float) -> None:
    """A minimal MP4 container: ftyp + moov/mvhd (version 0) carrying the duration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mvhd_body = bytes([0, 0, 0, 0]) + struct.pack(">IIII", 0, 0, 1000, int(seconds * 1000)) + bytes(80)
    mvhd = struct.pack(">I4s", 8 + len(mvhd_body), b"mvhd") + mvhd_body
    moov = struct.pack(">I4s", 8 + len(mvhd), b"moov") + mvhd
    ftyp = struct.pack(">I4s4sI", 16, b"ftyp", b"M4A ", 0)
    path.write_bytes(ftyp + struct.pack(">I4s", 12, b"free") + b"\0" * 4 + moov)


def test_voxceleb_trials_match_wav_scp(vox1_o_trials: Path, tmp_path: Path) -> None:
    lines = vox1_o_trials.read_text().splitlines()
    official = [line.split() for line in lines[:400:20]]  # 20 trials
    ids = sorted({i for _, e, t in official for i in (e, t)})
    assert all(i.endswith(".wav") for i in ids)
    root = tmp_path / "vox1" / "wav"
    for i in ids:
        _wav(root / i, 0.3, sr=8000)
    _m4a(tmp_path / "vox1" / "wav" / "id00001" / "abc" / "00001.m4a", 2.5)
    _wav(root / "id00001" / "extra.wav")  # wrong depth
    # the whole official list: trials with utterances outside this tree are counted and dropped
    out = tmp_path / "out"
    summary = voxceleb.prepare_voxceleb(
        [tmp_path / "vox1"], out, SplitTrialOptions(), trials=[vox1_o_trials], missing="drop"
    )
    dd = read_data_dir(out)
    assert set(dd.wav) == {i[:-4] for i in ids} | {"id00001/abc/00001"}
    assert dd.utt2dur["id00001/abc/00001"] == pytest.approx(2.5)
    written = [line.split() for line in (out / "trials").read_text().splitlines()]
    have = set(dd.wav)
    expected = [(lab, e[:-4], t[:-4]) for lab, e, t in (x.split() for x in lines) if e[:-4] in have and t[:-4] in have]
    assert [tuple(w) for w in written] == expected and len(expected) >= 20
    assert all(e in dd.wav and t in dd.wav for _, e, t in written)
    assert f"of {len(lines)} ({len(lines) - len(expected)} dropped" in summary
    assert "1 not at <spk>/<video>/<utt>" in summary
    with pytest.raises(PrepError, match=rf"{len(lines) - len(expected)} of {len(lines)} trials reference"):
        voxceleb.prepare_voxceleb([tmp_path / "vox1"], tmp_path / "o2", SplitTrialOptions(), trials=[vox1_o_trials])
    assert not (tmp_path / "o2").exists()  # failed run leaves nothing behind


def test_voxceleb_hold_out_and_filters(tmp_path: Path) -> None:
    root = tmp_path / "vox"
    for spk in ("id001", "id002", "id003", "id004"):
        for vid in ("v1", "v2"):
            for u in range(2):
                _wav(root / spk / vid / f"{u:05d}.wav", 0.3 + 0.2 * u)
    trial_list = tmp_path / "veri.txt"
    trial_list.write_text("1 id001/v1/00000.wav id001/v2/00000.wav\n0 id001/v1/00000.wav id002/v1/00000.wav\n")
    out = tmp_path / "out"
    voxceleb.prepare_voxceleb(
        [root], out, SplitTrialOptions(), trials=[trial_list], hold_out_trial_speakers=True, exclude={"id004"}
    )
    test, train = read_data_dir(out / "test"), read_data_dir(out / "train")
    assert test.speakers == ["id001", "id002"] and train.speakers == ["id003"]
    assert (out / "test" / "trials").read_text().splitlines()[1] == "0 id001/v1/00000 id002/v1/00000"
    # min duration removes the 0.3 s utterances, so the trials' utterances are missing
    with pytest.raises(PrepError, match="2 of 2 trials reference"):
        voxceleb.prepare_voxceleb([root], tmp_path / "o2", SplitTrialOptions(), trials=[trial_list], min_duration=0.4)
    assert voxceleb.normalise_id("id1/v/00001.wav") == "id1/v/00001"
    r = _run("voxceleb.py", str(root), str(tmp_path / "o3"), "--speakers", "id003,id004")
    assert r.returncode == 0, r.stderr
    assert read_data_dir(tmp_path / "o3").speakers == ["id003", "id004"]


# ------------------------------------------------------------------------------ musan.py / rirs.py


def test_musan_noise_list(tmp_path: Path) -> None:
    root = tmp_path / "musan"
    _wav(root / "noise" / "free-sound" / "n1.wav")
    _wav(root / "music" / "fma" / "m1.flac")
    _wav(root / "speech" / "us-gov" / "s1.wav")
    _wav(root / "README" / "x.wav")  # no category
    (root / "noise" / "bad.wav").write_bytes(b"junk")
    out = tmp_path / "noise.list"
    summary = musan.prepare_noise_list([root], out)
    lines = [line.split() for line in out.read_text().splitlines()]
    assert [(Path(p).name, c) for p, c in lines] == [("m1.flac", "music"), ("n1.wav", "noise"), ("s1.wav", "speech")]
    assert all(Path(p).is_absolute() for p, _ in lines)
    assert "kept 3 noise files" in summary and "1 no category" in summary and "1 unreadable" in summary
    assert (tmp_path / "noise.list.skipped.txt").is_file()
    with pytest.raises(PrepError, match="use --force"):
        musan.prepare_noise_list([root], out)
    flat = tmp_path / "flat"
    _wav(flat / "hum.wav")
    r = _run("musan.py", str(flat), str(out), "--category", "babble", "--force")
    assert r.returncode == 0, r.stderr
    assert out.read_text() == f"{flat.resolve() / 'hum.wav'} babble\n"
    assert not (tmp_path / "noise.list.skipped.txt").exists()  # stale details removed


def test_rir_list(tmp_path: Path) -> None:
    root = tmp_path / "rirs"
    _wav(root / "room1" / "rir_a.wav", 0.3)
    _wav(root / "room2" / "rir_b.flac", 0.2)
    _wav(root / "real" / "RVB_noise_1.wav", 1.0)
    (root / "room1" / "rir_c.wav").write_bytes(b"")
    out = tmp_path / "rir.list"
    summary = rirs.prepare_rir_list([root], out)
    assert [Path(p).name for p in out.read_text().splitlines()] == ["rir_a.wav", "rir_b.flac"]
    assert "skipped 2" in summary and "excluded by --exclude-regex" in summary
    r = _run("rirs.py", str(root), str(out))
    assert r.returncode == 2 and "use --force" in r.stderr


def test_keep_by_duration_reasons_and_order(tmp_path: Path) -> None:
    """The one duration filter of every script: reasons, both limits, input order kept."""
    ok2, ok1 = _wav(tmp_path / "ok2.wav", 0.5), _wav(tmp_path / "ok1.wav", 0.4)
    short, long_ = _wav(tmp_path / "short.wav", 0.1), _wav(tmp_path / "long.wav", 1.0)
    empty, broken = _wav(tmp_path / "empty.wav", 0.0), tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF junk")
    skipped = common.SkipReport()
    cands = [(p, i) for i, p in enumerate((ok2, short, long_, empty, broken, ok1))]
    kept = common.keep_by_duration(cands, lambda c: c[0], skipped, 1, min_duration=0.2, max_duration=0.8)
    assert [(c[1], round(d, 2)) for c, d in kept] == [(0, 0.5), (5, 0.4)]
    reasons = {Path(p).name: r for p, r in skipped.items}
    assert reasons["short.wav"] == "shorter than 0.2 s: 0.10 s"
    assert reasons["long.wav"] == "longer than 0.8 s: 1.00 s"
    assert reasons["empty.wav"].startswith("empty") and reasons["broken.wav"].startswith("unreadable")


def test_shared_noise_and_rir_folders(shared_data: Path, tmp_path: Path) -> None:
    musan.prepare_noise_list([shared_data / "noise"], tmp_path / "n.list", category="noise")
    rirs.prepare_rir_list([shared_data / "rir"], tmp_path / "r.list")
    assert len((tmp_path / "n.list").read_text().splitlines()) == 11
    assert len((tmp_path / "r.list").read_text().splitlines()) == 4


# ------------------------------------------------------------------------------ synthetic.py


def test_synthetic_parameters_identify_speakers() -> None:
    """Speakers are learnable: session parameters of one speaker cluster tightly (1-NN finds the
    speaker) while the between-speaker spread is much larger than the session drift."""
    feats, labels = [], []
    for s in range(8):
        spk = synthetic.speaker_params(0, s)
        for u in range(6):
            p = synthetic.session_params(spk, np.random.default_rng([0, 1, s, u]))
            feats.append([np.log(p.f0), p.formant_scale, p.glottal_pole, np.log(p.breathiness), *np.log(p.f45)])
            labels.append(s)
    x, y = np.array(feats), np.array(labels)
    x = (x - x.mean(0)) / x.std(0)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1) + np.eye(len(y)) * 1e9
    assert np.mean(y[np.argmin(d, axis=1)] == y) == 1.0
    within = np.mean([x[y == s].var(0).sum() for s in range(8)])
    assert within < 0.1 * x.var(0).sum()


def test_synthetic_corpus_baseline_not_separable(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi")
    torch.set_num_threads(1)
    out = tmp_path / "synth"
    summary = synthetic.prepare_synthetic(out, 8, 6, SplitTrialOptions(make_trials=40, seed=0))
    assert summary.startswith("kept 48 utterances of 8 speakers; skipped 0")
    dd = read_data_dir(out)
    assert dd.speakers == [f"spk{i:03d}" for i in range(8)] and dd.utts[0] == "spk000/utt000"
    assert all(1.5 <= d <= 4.0 for d in dd.utt2dur.values())
    assert all(Path(p).is_file() and Path(p).parent.parent == out / "audio" for p in dd.wav.values())
    info = sf.info(dd.wav["spk003/utt002"])
    assert info.samplerate == 16000 and info.subtype == "PCM_16"
    assert {u for e, t, _ in _trials(out / "trials") for u in (e, t)} <= set(dd.wav)
    # deterministic from the seed, independent of generation order
    again = synthetic.synthesize_utterance(synthetic.speaker_params(0, 3), 0, 3, 2)
    np.testing.assert_allclose(sf.read(dd.wav["spk003/utt002"], dtype="float32")[0], again, atol=1 / 32768 + 1e-6)
    other = synthetic.synthesize_utterance(synthetic.speaker_params(1, 3), 1, 3, 2)
    assert other.shape != again.shape or not np.allclose(other, again)
    # untrained baseline: mean fbank over frames, cosine, all pairs -> must NOT be perfect
    emb = []
    for u in dd.utts:
        wave = torch.from_numpy(sf.read(dd.wav[u], dtype="float32")[0])
        emb.append(kaldi.fbank(wave[None] * 32768, num_mel_bins=80, dither=0.0).mean(0).numpy())
    e = np.array(emb)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    spk = np.array([dd.utt2spk[u] for u in dd.utts])
    iu = np.triu_indices(len(spk), 1)
    scores, labels = (e @ e.T)[iu], (spk[:, None] == spk[None])[iu].astype(int)
    eer, _ = compute_eer(scores, labels)
    assert 0.05 < eer < 0.45, eer  # some identity in the spectrum, far from separable
    assert scores[labels == 1].mean() > scores[labels == 0].mean()


def test_synthetic_cli_split(tmp_path: Path) -> None:
    r = _run("synthetic.py", str(tmp_path / "s"), "--speakers", "6", "--utts", "3", "--dev-speakers", "2",
             "--make-trials", "8", "--seed", "5")
    assert r.returncode == 0, r.stderr
    assert "train: 4 speakers / 12 utts; dev: 2 speakers / 6 utts" in r.stdout
    dev = read_data_dir(tmp_path / "s" / "dev")
    assert all(Path(p).is_file() for p in dev.wav.values())  # paths point at the final location
    assert len(_trials(tmp_path / "s" / "dev" / "trials")) == 8
    with pytest.raises(PrepError, match="not empty"):
        synthetic.prepare_synthetic(tmp_path / "s", 2, 1, SplitTrialOptions())


# ------------------------------------------------------------------------------ content checks


def _bad_files(folder: Path) -> dict[str, str]:
    """Files whose headers are fine but whose content the library refuses -> expected reason."""
    folder.mkdir(parents=True, exist_ok=True)
    x = 0.1 * np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    nan = x.copy()
    nan[100] = np.nan
    sf.write(str(folder / "nan.wav"), nan, 16000, subtype="FLOAT")
    sf.write(str(folder / "zero.wav"), np.zeros(8000, np.float32), 16000)
    sf.write(str(folder / "one.wav"), x[:1], 16000)
    sf.write(str(folder / "full.wav"), x, 16000)
    data = (folder / "full.wav").read_bytes()
    (folder / "cut.wav").write_bytes(data[: len(data) // 2])
    (folder / "full.wav").unlink()
    return {"nan.wav": "nan", "zero.wav": "silent", "one.wav": "too short", "cut.wav": "truncated"}


def _reasons(skipped_file: Path) -> dict[str, str]:
    return {Path(p).name: r for p, r in (line.split("\t") for line in skipped_file.read_text().splitlines())}


def test_folder_skips_content_the_library_refuses(small_tree: Path, tmp_path: Path) -> None:
    expected = _bad_files(small_tree / "a_1" / "bad")
    summary = folder.prepare_folder(small_tree, tmp_path / "out", SplitTrialOptions())
    wav = read_kv(tmp_path / "out" / "wav.scp")
    assert not any(Path(p).name in expected for p in wav.values())
    reasons = _reasons(tmp_path / "out" / "skipped.txt")
    for name, reason in expected.items():
        assert reasons[name].startswith(reason + ": "), reasons[name]
    assert "truncated WAV: the header promises 8000 frames" in reasons["cut.wav"]
    assert "1 nan" in summary and "1 silent" in summary and "1 truncated" in summary and "1 too short" in summary


def test_noise_and_rir_lists_skip_content_the_library_refuses(tmp_path: Path) -> None:
    expected = _bad_files(tmp_path / "noise" / "noise")
    _wav(tmp_path / "noise" / "noise" / "good.wav")
    musan.prepare_noise_list([tmp_path / "noise"], tmp_path / "noise.list")
    assert [Path(line.split()[0]).name for line in (tmp_path / "noise.list").read_text().splitlines()] == ["good.wav"]
    reasons = _reasons(tmp_path / "noise.list.skipped.txt")
    assert {n: r.split(":")[0] for n, r in reasons.items()} == expected
    rirs.prepare_rir_list([tmp_path / "noise"], tmp_path / "rir.list", exclude_regex="")
    assert [Path(p).name for p in (tmp_path / "rir.list").read_text().splitlines()] == ["good.wav"]


def test_empty_trial_list_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PrepError, match="no trials to write"):
        common.write_trials_kaldi(tmp_path / "trials", [])
    with pytest.raises(PrepError, match="no trials to write"):
        voxceleb.write_trials_vox(tmp_path / "trials", [])
    assert not (tmp_path / "trials").exists()
    listed = tmp_path / "veri.txt"
    listed.write_text("1 id1/a/1.wav id1/b/2.wav\n0 id1/a/1.wav id2/c/3.wav\n", encoding="utf-8")
    with pytest.raises(PrepError, match="none of its 2 trials has both utterances"):
        voxceleb.load_trials(listed, {"id1/a/1"}, "drop")
    trials, _ = voxceleb.load_trials(listed, {"id1/a/1", "id1/b/2", "id2/c/3"}, "error")
    assert trials == [("id1/a/1", "id1/b/2", True), ("id1/a/1", "id2/c/3", False)]
