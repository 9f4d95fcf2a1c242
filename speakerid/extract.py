"""The data-dir job: embeddings of every utterance of a data dir, batched, resumable, torchrun.

The embedding rule itself (model loading, front end, segment policy, batching) is
:mod:`speakerid.inference`; this module runs it over a data dir.

Large sets: ``extract_embeddings`` sorts utterances by duration, processes them in chunks
of ``chunk_utts`` and saves each finished chunk atomically to ``<out>/.parts/`` (with a
fingerprint of the model and the policy), so a rerun after a crash or Ctrl-C skips the
utterances already done. The run key covers the model, the policy and the inputs (every
``wav.scp`` path with its file size and mtime, :func:`speakerid.data.jobs.inputs_digest`),
so a changed ``wav.scp`` or a rewritten file recomputes. Parts are kept by
:class:`speakerid.data.jobs.PartStore` (temporaries never read, unreadable parts removed). Under ``torchrun`` every rank takes a strided share of the sorted
list (which balances the work), and rank 0 merges the parts into ``embeddings.npz`` and
``embedding.scp``/``.ark`` after a barrier.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from speakerid.data.jobs import PartStore, inputs_digest, remove_temporaries
from speakerid.distributed import apply_thread_policy, barrier, setup_distributed
from speakerid.fileio import write_text_atomic
from speakerid.extractor import EmbeddingExtractor, model_fingerprint
from speakerid.inference import SegmentPolicy, embed_waves, load_experiment

logger = logging.getLogger(__name__)

__all__ = ["ExtractError", "extract_embeddings", "output_paths"]

PARTS_DIR = ".parts"
META_FILE = "extract_meta.json"
NPZ_NAME = "embeddings.npz"
SCP_NAME = "embedding.scp"


class ExtractError(ValueError):
    """Extraction cannot proceed (bad data dir, incomplete parts, ...)."""


# --------------------------------------------------------------------------- data-dir extraction
@dataclasses.dataclass
class _Ranks:
    rank: int
    world_size: int
    info: object = None  # speakerid.distributed.DistInfo when this job set up torchrun's group


def _ranks(rank: int | None, world_size: int | None) -> _Ranks:
    """Explicit rank/world (tests, job arrays) or torchrun's environment (a process group for the barrier)."""
    if rank is not None or world_size is not None:
        world = int(world_size or 1)
        r = int(rank or 0)
        if not 0 <= r < world:
            raise ExtractError(f"rank {r} is outside world size {world}")
        return _Ranks(r, world)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _Ranks(0, 1)
    info = setup_distributed()
    return _Ranks(info.rank, info.world_size, info)


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    return torch.device("cpu")


def _run_key(fingerprint: str, policy: SegmentPolicy, inputs: str) -> str:
    """What makes two extractions interchangeable: the model, the segmentation policy and the inputs."""
    return hashlib.sha256(json.dumps([fingerprint, dataclasses.asdict(policy), inputs], sort_keys=True).encode()).hexdigest()[:16]


def _durations(data) -> dict[str, float]:
    """Utterance durations from utt2dur, else from the audio headers (cheap)."""
    from speakerid.audio import audio_duration

    if all(u in data.utt2dur for u in data.wav):
        return dict(data.utt2dur)
    logger.info("%s: no complete utt2dur; reading durations from the audio headers", data.path)
    return {u: data.utt2dur.get(u) or audio_duration(p) for u, p in data.wav.items()}


class _AudioList(torch.utils.data.Dataset):
    """(utt, waveform) for a list of utterances; lets a DataLoader read audio in worker processes."""

    def __init__(self, utts: list[str], wav: dict[str, str], sample_rate: int) -> None:
        self.utts, self.wav, self.sample_rate = utts, wav, sample_rate

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int) -> tuple[str, Tensor]:
        from speakerid.audio import load_audio, require_min_length

        utt = self.utts[i]
        return utt, require_min_length(load_audio(self.wav[utt], self.sample_rate)[0], self.sample_rate, self.wav[utt])


def _chunks(utts: list[str], wav: dict[str, str], sample_rate: int, chunk_utts: int, num_workers: int) -> Iterator[list[tuple[str, Tensor]]]:
    loader = torch.utils.data.DataLoader(
        _AudioList(utts, wav, sample_rate),
        batch_size=chunk_utts,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=list,
    )
    yield from loader


def output_paths(out_dir: str | os.PathLike, formats: Iterable[str] = ("npz", "scp")) -> list[Path]:
    """The files ``extract_embeddings`` writes: ``embeddings.npz`` and/or ``embedding.scp`` (+ ``.ark``)."""
    names = {"npz": NPZ_NAME, "scp": SCP_NAME}
    bad = [f for f in formats if f not in names]
    if bad:
        raise ExtractError(f"unknown embedding format(s) {bad}; choose from npz, scp")
    return [Path(out_dir) / names[f] for f in formats]


def _already_done(out_dir: Path, key: str, utts: list[str], outputs: list[Path]) -> bool:
    meta_path = out_dir / META_FILE
    if not meta_path.is_file() or not all(p.is_file() for p in outputs):
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return False
    return meta.get("key") == key and meta.get("num_utts") == len(utts) and meta.get("utts_sha") == _utts_sha(utts)


def _output_names(outputs: list[Path]) -> list[str]:
    """Every file name the merge writes (the ark beside an scp, the meta file)."""
    names = [META_FILE]
    for p in outputs:
        names.append(p.name)
        if p.suffix == ".scp":
            names.append(p.with_suffix(".ark").name)
    return names


def _utts_sha(utts: list[str]) -> str:
    return hashlib.sha256("\n".join(utts).encode()).hexdigest()


def extract_embeddings(
    exp_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 16,
    chunk_utts: int = 256,
    num_workers: int = 0,
    device: str | torch.device = "auto",
    policy: SegmentPolicy | None = None,
    formats: Sequence[str] = ("npz", "scp"),
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
    threads: int | None = None,
    max_window_seconds: float | None = None,
    backend: str = "auto",
) -> list[Path]:
    """Embed every utterance of ``data_dir`` with the model of ``exp_dir``; write them to ``out_dir``.

    Writes ``out_dir/embeddings.npz`` (ids, embeddings) and ``out_dir/embedding.scp`` + ``.ark``
    (Kaldi), ids in the data dir's (sorted) order, through
    :func:`speakerid.scoring.embeddings.save_embeddings`; returns those paths. Resumable:
    finished chunks of ``chunk_utts`` utterances are kept in ``out_dir/.parts`` until the merge,
    and a rerun skips what is done (all of it when the outputs are complete for this model).
    ``rank``/``world_size`` default to torchrun's; without a process group (explicit ranks)
    only rank 0 merges, and only once every utterance has a part. ``policy`` defaults to the
    experiment's (:meth:`SegmentPolicy.from_config`); ``threads`` to the thread policy.
    """
    from speakerid.data.datadir import read_data_dir
    from speakerid.scoring.embeddings import save_embeddings

    if batch_size < 1 or chunk_utts < 1 or num_workers < 0:
        raise ExtractError(f"batch_size and chunk_utts must be >= 1 and num_workers >= 0, got {batch_size}, {chunk_utts}, {num_workers}")
    out_dir = Path(out_dir)
    outputs = output_paths(out_dir, formats)
    data = read_data_dir(data_dir)
    utts = data.utts
    if not utts:
        raise ExtractError(f"{data_dir}: the data dir has no utterances")
    dev = _resolve_device(device)
    apply_thread_policy(threads, workers=num_workers)
    extractor, cfg = load_experiment(exp_dir, device=dev, backend=backend)
    if policy is None:
        policy = SegmentPolicy.from_config(cfg)
    if max_window_seconds is not None:
        policy = dataclasses.replace(policy, max_window_seconds=float(max_window_seconds))
    key = _run_key(model_fingerprint(extractor), policy, inputs_digest((u, data.wav[u]) for u in utts))
    d = _ranks(rank, world_size)
    try:
        if _already_done(out_dir, key, utts, outputs):
            if d.rank == 0:
                remove_temporaries(out_dir, _output_names(outputs))
                PartStore(out_dir / PARTS_DIR, key).remove()
                logger.info("%s: embeddings of all %d utterances already there for this model; nothing to do", out_dir, len(utts))
            return outputs
        store = PartStore(out_dir / PARTS_DIR, key)
        done = store.read()
        durations = _durations(data)
        order = sorted(utts, key=lambda u: (-durations[u], u))  # longest first: memory trouble shows early
        mine = [u for u in order[d.rank :: d.world_size] if u not in done]
        if done:
            logger.info("%s: resuming, %d of %d utterances already embedded", out_dir, len(done), len(utts))
        _embed_share(extractor, data.wav, mine, store, d.rank, policy, batch_size, chunk_utts, num_workers, progress)
        barrier()
        if d.rank == 0:
            _merge(out_dir, store, utts, outputs, save_embeddings)
        barrier()
    finally:
        if d.info is not None:
            from speakerid.distributed import teardown

            teardown(d.info)
    return outputs


def _embed_share(
    extractor: EmbeddingExtractor,
    wav: dict[str, str],
    utts: list[str],
    store: PartStore,
    rank: int,
    policy: SegmentPolicy,
    batch_size: int,
    chunk_utts: int,
    num_workers: int,
    progress: bool,
) -> None:
    from tqdm import tqdm

    if not utts:
        return
    bar = tqdm(total=len(utts), desc=f"extract[rank {rank}]" if rank else "extract", unit="utt", disable=not progress or None)
    try:
        for chunk in _chunks(utts, wav, extractor.sample_rate, chunk_utts, num_workers):
            ids = [u for u, _ in chunk]
            emb = embed_waves(extractor, [w for _, w in chunk], policy, batch_size)
            store.write(rank, ids, emb.numpy())
            bar.update(len(ids))
    finally:
        bar.close()


def _merge(out_dir: Path, store: PartStore, utts: list[str], outputs: list[Path], save_embeddings) -> None:
    done = store.read()
    missing = [u for u in utts if u not in done]
    if missing:
        raise ExtractError(
            f"{store.dir}: {len(missing)} utterance(s) have no embedding yet (e.g. {missing[:3]}); "
            "run the other ranks, or rerun to resume"
        )
    emb = np.stack([done[u] for u in utts]).astype(np.float32)
    for path in outputs:
        save_embeddings(path, utts, emb)
    write_text_atomic(
        out_dir / META_FILE,
        json.dumps({"key": store.key, "num_utts": len(utts), "utts_sha": _utts_sha(utts), "embed_dim": int(emb.shape[1])}, indent=1),
    )
    # Finished: the parts and any temporaries of earlier, killed merges are no longer needed.
    store.remove()
    remove_temporaries(out_dir, _output_names(outputs))
    logger.info("%s: %d embeddings of dimension %d written", out_dir, len(utts), emb.shape[1])
