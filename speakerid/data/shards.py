"""Tar shards (webdataset format) for corpora that outgrow random file reads.

Writing (:func:`write_shards`, CLI ``speakerid shards``): the utterances of a data dir, in
a seeded random order (so that every shard mixes many speakers and a small shuffle buffer
suffices), go ``utts_per_shard`` at a time into ``shard-NNNNNN.tar``. Each sample is::

    <key>.utt.txt   utterance id        <key>.spk.txt   speaker id
    <key>.flac      mono 16-bit audio at the feature sample rate (or <key>.wav)

(``<key>`` is the sample's running number: webdataset splits names at the first dot, so
utterance ids, which may hold dots and slashes, are stored as content.) Each shard is written
to a temporary file and renamed (atomic). ``shards.list`` (one shard file name per line) and
``shards.json`` (per-shard counts, speakers, sample rate) are written last; a rerun with the
same arguments skips finished shards (``shards.plan.json`` records the arguments).

Reading (:class:`ShardDataset`): an ``IterableDataset`` that yields the same chunk dicts as
:class:`speakerid.data.dataset.ChunkDataset`. Each epoch, the shards are shuffled by
``(seed, epoch)`` and dealt round-robin to the ``world_size * num_workers`` readers (reader
``rank * num_workers + worker``). Every rank yields exactly ``samples_per_epoch //
world_size`` samples (readers cycle their shards when short), so DDP ranks never wait on
each other at the end of an epoch. A seeded buffer shuffles the samples of each reader.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import soundfile as sf
import torch
from torch.utils.data import IterableDataset, get_worker_info

from speakerid.audio import AudioError, load_audio
from speakerid.config import AugmentConfig, FeatureConfig
from speakerid.data.datadir import DataDirError, read_data_dir
from speakerid.augment.spec import check_mixup, mixes_waveforms
from speakerid.data.dataset import ChunkPipeline, randint_below, build_item
from speakerid.data.jobs import die_with_parent, inputs_digest

from speakerid.data.sampler import derive_seed
from speakerid.fileio import atomic_path, write_text_atomic

logger = logging.getLogger(__name__)

SHARD_LIST = "shards.list"
SHARD_META = "shards.json"
SHARD_PLAN = "shards.plan.json"
AUDIO_FORMATS = ("flac", "wav")
STREAM_SHUFFLE = 300


class ShardError(ValueError):
    """A shard source or shard file that cannot be used."""


# -- writing ------------------------------------------------------------------------------
def _encode_audio(path: str, sample_rate: int, audio_format: str) -> bytes:
    wave, _ = load_audio(path, sample_rate)
    buf = io.BytesIO()
    sf.write(buf, wave.clamp(-1.0, 1.0).numpy(), sample_rate, format=audio_format.upper(), subtype="PCM_16")
    return buf.getvalue()


def _write_one_shard(
    path: str, items: list[tuple[int, str, str, str]], sample_rate: int, audio_format: str
) -> tuple[str, int]:
    """Write one shard atomically; ``items`` are (number, utt, spk, audio path)."""
    import webdataset as wds

    with atomic_path(path, suffix=".tar") as tmp:
        with open(tmp, "wb") as f:
            writer = wds.TarWriter(f, encoder=False, mtime=0.0)
            for number, utt, spk, audio in items:
                writer.write(
                    {
                        "__key__": f"{number:09d}",
                        "utt.txt": utt.encode("utf-8"),
                        "spk.txt": spk.encode("utf-8"),
                        audio_format: _encode_audio(audio, sample_rate, audio_format),
                    }
                )
            writer.close()
            f.flush()
            os.fsync(f.fileno())
    return Path(path).name, len(items)


def write_shards(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    utts_per_shard: int,
    sample_rate: int = 16000,
    audio_format: str = "flac",
    seed: int = 0,
    num_workers: int = 1,
) -> Path:
    """Write the utterances of ``data_dir`` as webdataset tar shards into ``out_dir``.

    Returns the path of ``shards.list``. Audio is decoded with :func:`load_audio`
    (validated, mono, resampled to ``sample_rate``) and stored as 16-bit FLAC or WAV.
    """
    if utts_per_shard < 1:
        raise ValueError(f"--utts-per-shard must be >= 1, got {utts_per_shard}")
    if audio_format not in AUDIO_FORMATS:
        raise ValueError(f"audio format must be one of {AUDIO_FORMATS}, got {audio_format!r}")
    data = read_data_dir(data_dir)
    utts = data.utts
    if not utts:
        raise DataDirError(f"{data.path / 'wav.scp'}: no utterances")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    order = torch.randperm(len(utts), generator=torch.Generator().manual_seed(derive_seed(seed))).tolist()
    plan = {
        "data_dir": str(data.path.resolve()),
        "utts_per_shard": utts_per_shard,
        "sample_rate": sample_rate,
        "audio_format": audio_format,
        "seed": seed,
        "inputs_sha256": inputs_digest((u, data.wav[u]) for u in utts),  # paths, sizes, mtimes
    }
    plan_path = out / SHARD_PLAN
    resume = plan_path.exists() and _read_json(plan_path) == plan
    if not resume:
        write_text_atomic(plan_path, json.dumps(plan, indent=1) + "\n")
    jobs = []
    for start in range(0, len(order), utts_per_shard):
        idx = order[start : start + utts_per_shard]
        name = f"shard-{start // utts_per_shard:06d}.tar"
        items = [(i, utts[i], data.utt2spk[utts[i]], data.wav[utts[i]]) for i in idx]
        jobs.append((name, items))
    todo = [(n, it) for n, it in jobs if not (resume and (out / n).exists())]
    if len(todo) < len(jobs):
        logger.info("%s: %d of %d shards already written; resuming", out, len(jobs) - len(todo), len(jobs))
    _run_jobs(out, todo, sample_rate, audio_format, num_workers)
    meta = {
        "shards": [{"name": n, "num_utts": len(it)} for n, it in jobs],
        "num_utts": len(utts),
        "speakers": data.speakers,
        "sample_rate": sample_rate,
        "audio_format": audio_format,
    }
    write_text_atomic(out / SHARD_META, json.dumps(meta, indent=1) + "\n")
    write_text_atomic(out / SHARD_LIST, "".join(f"{n}\n" for n, _ in jobs))
    logger.info("%s: %d utterances in %d shards", out, len(utts), len(jobs))
    return out / SHARD_LIST


def _run_jobs(out: Path, todo: list, sample_rate: int, audio_format: str, num_workers: int) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="shards", unit="shard", disable=not todo)
    if num_workers <= 1:
        for name, items in todo:
            _write_one_shard(str(out / name), items, sample_rate, audio_format)
            bar.update()
    else:
        with ProcessPoolExecutor(num_workers, initializer=die_with_parent) as pool:
            futures = [pool.submit(_write_one_shard, str(out / n), it, sample_rate, audio_format) for n, it in todo]
            for fut in futures:
                fut.result()
                bar.update()
    bar.close()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ShardError(f"{path}: not valid JSON ({e})") from None


# -- reading ------------------------------------------------------------------------------
def resolve_shards(source: str | os.PathLike) -> tuple[list[Path], dict[str, Any]]:
    """Shard paths and the ``shards.json`` metadata for a shard dir, list file, or glob/brace pattern."""
    src = str(source)
    if os.path.isdir(src):
        src = os.path.join(src, SHARD_LIST)
    if src.endswith(".list") or (os.path.isfile(src) and not src.endswith(".tar")):
        if not os.path.isfile(src):
            raise ShardError(f"{src}: shard list not found (write shards with `speakerid shards`)")
        base = Path(src).parent
        names = [ln.strip() for ln in Path(src).read_text(encoding="utf-8").splitlines() if ln.strip()]
        paths = [p if p.is_absolute() else base / p for p in map(Path, names)]
    else:
        from webdataset.tariterators import braceexpand

        paths = sorted({Path(p) for pat in braceexpand.braceexpand(src) for p in (glob.glob(pat) or [pat])})
    if not paths:
        raise ShardError(f"{source}: no shards")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ShardError(f"{source}: {len(missing)} shard file(s) not found, e.g. {missing[0]}")
    meta_path = paths[0].parent / SHARD_META
    if not meta_path.is_file():
        raise ShardError(f"{meta_path}: shard metadata not found (shards must be written by `speakerid shards`)")
    meta = _read_json(meta_path)
    return paths, meta


class ShardDataset(IterableDataset):
    """Streaming chunks from tar shards, split by DDP rank and DataLoader worker.

    Yields the same dicts as :class:`speakerid.data.dataset.ChunkDataset` (``feats`` or
    ``wave``, ``label``, ``utt``, ``key``; ``*_k`` with two views) and collates with
    :func:`speakerid.data.dataset.collate`. Call :meth:`set_epoch` before each epoch (use
    ``persistent_workers=False`` so workers see it). ``len()`` is the samples of this rank.
    Sample ``n`` of reader ``c`` (of ``C``) has position ``n * C + c``, which seeds its
    random choices with ``(seed, epoch, pos)``: the stream depends on the world size and the
    number of workers, but is reproducible for a given setup.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        feature_cfg: FeatureConfig,
        augment_cfg: AugmentConfig,
        chunk_frames: int,
        seed: int,
        speaker_to_label: dict[str, int] | None = None,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 1000,
        samples_per_epoch: int | None = None,
        two_views: bool = False,
        train: bool = True,
        pad_mode: str = "repeat",
    ) -> None:
        super().__init__()
        if world_size < 1 or not 0 <= rank < world_size:
            raise ShardError(f"rank {rank} is not in [0, world_size={world_size})")
        self.paths, meta = resolve_shards(source)
        if int(meta.get("sample_rate", feature_cfg.sample_rate)) != feature_cfg.sample_rate:
            raise ShardError(
                f"{source}: shards hold {meta['sample_rate']} Hz audio but features.sample_rate is {feature_cfg.sample_rate}"
            )
        counts = {s["name"]: int(s["num_utts"]) for s in meta.get("shards", [])}
        self.num_utts = sum(counts.get(p.name, 0) for p in self.paths)
        check_mixup(augment_cfg, two_views)
        waveform_mixup = mixes_waveforms(augment_cfg, train)
        self.pipeline = ChunkPipeline(
            feature_cfg, augment_cfg, chunk_frames, train=train, return_waveform=waveform_mixup, pad_mode=pad_mode
        )
        speakers = sorted(meta.get("speakers", []))
        self.speaker_to_label = speaker_to_label or {s: i for i, s in enumerate(speakers)}
        self.num_speakers = len(self.speaker_to_label)
        spd = augment_cfg.speed
        self._speed_as_new_speaker = train and spd.enabled and spd.as_new_speaker
        self.num_classes = self.num_speakers * (len(spd.speeds) if self._speed_as_new_speaker else 1)
        self.seed = int(seed)
        self.rank, self.world_size = rank, world_size
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        total = int(samples_per_epoch) if samples_per_epoch is not None else self.num_utts
        self.samples_per_rank = total // world_size
        if self.samples_per_rank < 1:
            raise ShardError(f"{source}: {total} samples per epoch cannot feed {world_size} ranks")
        self.two_views = two_views
        self.epoch = 0

    @property
    def returns_waveform(self) -> bool:
        return self.pipeline.return_waveform

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_rank

    def _reader(self) -> tuple[int, int, int]:
        """(reader id, number of readers, samples this reader yields)."""
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        quota = self.samples_per_rank // nw + (1 if wid < self.samples_per_rank % nw else 0)
        return self.rank * nw + wid, self.world_size * nw, quota

    def _my_shards(self, reader: int, readers: int, round_: int) -> list[Path]:
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, round_, STREAM_SHUFFLE))
        order = [self.paths[i] for i in torch.randperm(len(self.paths), generator=g).tolist()]
        if len(order) >= readers:
            return order[reader::readers]
        return [order[reader % len(order)]]  # fewer shards than readers: some share a shard

    def _samples(self, reader: int, readers: int) -> Iterator[dict[str, Any]]:
        """Raw samples of this reader's shards, round after round (shards reshuffled each round).

        Within a round a seeded buffer shuffles the samples; the buffer is flushed (in random
        order) at the end of the round, so one round yields each of its samples exactly once.
        """
        from webdataset.tariterators import group_by_keys, tar_file_expander

        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, reader, STREAM_SHUFFLE + 1))
        round_ = 0
        while True:
            buf: list[dict[str, Any]] = []
            for path in self._my_shards(reader, readers, round_):
                with open(path, "rb") as stream:
                    for sample in group_by_keys(tar_file_expander([{"url": str(path), "stream": stream}])):
                        if len(buf) < self.shuffle_buffer:
                            buf.append(sample)
                            continue
                        j = randint_below(g, len(buf))
                        out, buf[j] = buf[j], sample
                        yield out
            for j in torch.randperm(len(buf), generator=g).tolist():
                yield buf[j]
            round_ += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        reader, readers, quota = self._reader()
        stream = self._samples(reader, readers)
        for n in range(quota):
            yield self._make_item(next(stream), n * readers + reader)

    def _make_item(self, sample: dict[str, Any], pos: int) -> dict[str, Any]:
        url = sample.get("__url__", "?")
        try:
            utt = sample["utt.txt"].decode("utf-8")
            spk = sample["spk.txt"].decode("utf-8")
        except KeyError as e:
            raise ShardError(f"{url}: sample {sample.get('__key__')} lacks {e.args[0]}") from None
        audio = sample.get("flac", sample.get("wav"))
        if audio is None:
            raise ShardError(f"{url}: sample {sample.get('__key__')} ({utt}) has no .flac or .wav audio")
        if spk not in self.speaker_to_label:
            raise ShardError(f"{url}: speaker {spk!r} of {utt} has no label")
        try:
            data, sr = sf.read(io.BytesIO(audio), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError) as e:
            raise AudioError(f"{url}: audio of {utt} is unreadable ({e})") from None
        wave = torch.from_numpy(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0].copy())
        need = self.pipeline.source_samples

        def make_chunk(g: torch.Generator) -> tuple[torch.Tensor, int]:
            region = wave
            if wave.numel() > need:  # the same random region ChunkDataset's read_region takes
                start = randint_below(g, wave.numel() - need + 1)
                region = wave[start : start + need]
            return self.pipeline(region, g)

        return build_item(self, utt, self.speaker_to_label[spk], (self.epoch, -1, pos), make_chunk)
