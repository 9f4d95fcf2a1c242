"""Speaker embeddings from a trained experiment: one vector per whole utterance.

``load_experiment(exp_dir)`` rebuilds the inference chain of a training run as one
TorchScript-able module, :class:`EmbeddingExtractor`: waveform ``[B, T]`` -> Kaldi fbank
(no dither) -> CMN (per-utterance mean, as configured in ``features``) -> encoder ->
embedding ``[B, D]``. ``extract_embeddings`` runs it over a data dir.

How a whole utterance of any length becomes one embedding (:class:`SegmentPolicy`; the same
rule for ``speakerid extract``, ``enroll``/``verify``/``identify`` and
:func:`embed_waveform`, so a file gets the same vector whichever path it takes):

1. Utterances shorter than ``min_seconds`` (0.5 s) are tiled (repeated) up to it, so that
   every encoder sees enough frames for its convolutions and pooling.
2. Utterances longer than ``max_window_seconds`` (20 s) are cut into ``n = ceil(len / 20 s)``
   equal windows spread evenly over the utterance (the first starts at 0, the last ends at
   the end); the utterance embedding is the MEAN of the window embeddings (raw, before
   length normalisation; the windows are equally long, so equally weighted). 20 s keeps
   the activations of ECAPA c1024 on a GPU bounded while being longer than all but a few
   VoxCeleb1 test utterances, which are therefore embedded whole.
3. Each segment is trimmed to a whole number of ``length_quantum_frames`` (10 frames =
   0.1 s): at most 99 ms of trailing audio is dropped. This is what makes batching exact:
   segments of equal length (sorted by duration, the quantised lengths repeat) are stacked
   into one batch without padding, so a batched embedding equals the one-at-a-time
   embedding. Padding would change them: CMN and the encoders' statistics pooling would
   see the padded frames (the encoders take no lengths).

Large sets: ``extract_embeddings`` sorts utterances by duration, processes them in chunks
of ``chunk_utts`` and saves each finished chunk atomically to ``<out>/.parts/`` (with a
fingerprint of the model and the policy), so a rerun after a crash or Ctrl-C skips the
utterances already done. Under ``torchrun`` every rank takes a strided share of the sorted
list (which balances the work), and rank 0 merges the parts into ``embeddings.npz`` and
``embedding.scp``/``.ark`` after a barrier.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from speakerid.config import TrainConfig, load_config
from speakerid.fileio import atomic_path, write_text_atomic

logger = logging.getLogger(__name__)

PARTS_DIR = ".parts"
META_FILE = "extract_meta.json"
NPZ_NAME = "embeddings.npz"
SCP_NAME = "embedding.scp"


class ExperimentError(ValueError):
    """An experiment dir is incomplete or does not match its config."""


class ExtractError(ValueError):
    """Extraction cannot proceed (bad data dir, incomplete parts, ...)."""


# --------------------------------------------------------------------------- the model chain
class EmbeddingExtractor(nn.Module):
    """``waveform [B, T]`` (float in [-1, 1], at ``sample_rate``) -> ``embedding [B, D]``.

    ``frontend`` is a :class:`speakerid.features.Fbank` in evaluation mode (no dither; CMN as
    the training config says) and ``encoder`` the trained network. Both are TorchScript-able,
    so ``torch.jit.script(extractor)`` works (used by :mod:`speakerid.export`).
    """

    def __init__(self, frontend: nn.Module, encoder: nn.Module, sample_rate: int, embed_dim: int) -> None:
        super().__init__()
        self.frontend = frontend
        self.encoder = encoder
        self.sample_rate = int(sample_rate)
        self.embed_dim = int(embed_dim)

    def forward(self, wave: Tensor) -> Tensor:
        return self.encoder(self.frontend(wave))


def _require_files(exp_dir: Path) -> None:
    if not exp_dir.is_dir():
        raise ExperimentError(f"{exp_dir}: experiment dir not found (run the train stage first)")
    for name in ("config.yaml", "model.pt"):
        if not (exp_dir / name).is_file():
            raise ExperimentError(f"{exp_dir}: no {name} in the experiment dir (run the train stage first)")


def build_extractor(cfg: TrainConfig, state_dict: dict[str, Tensor] | None = None, source: str = "<model>") -> EmbeddingExtractor:
    """The extractor for ``cfg`` (encoder rebuilt as the trainer builds it), with ``state_dict`` loaded."""
    from speakerid.features import Fbank
    from speakerid.models import build_encoder

    encoder = build_encoder(cfg)
    if state_dict is not None:
        try:
            encoder.load_state_dict(state_dict, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            detail = " ".join(line.strip() for line in first[:3])
            raise ExperimentError(f"{source}: weights do not fit model {cfg.model.name!r} of the config ({detail})") from None
    frontend = Fbank.from_config(cfg.features, train=False)
    embed_dim = int(getattr(encoder, "embed_dim", 0)) or _probe_embed_dim(frontend, encoder, cfg.features.sample_rate)
    return EmbeddingExtractor(frontend, encoder, cfg.features.sample_rate, embed_dim).eval()


def _probe_embed_dim(frontend: nn.Module, encoder: nn.Module, sample_rate: int) -> int:
    with torch.no_grad():
        return int(encoder.eval()(frontend(torch.randn(1, sample_rate) * 0.1)).shape[-1])


def load_experiment(exp_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[EmbeddingExtractor, TrainConfig]:
    """Load ``exp_dir/config.yaml`` and ``exp_dir/model.pt`` (weights_only) -> (extractor in eval mode, config)."""
    from speakerid.checkpoint import CheckpointError, load_checkpoint

    exp_dir = Path(exp_dir)
    _require_files(exp_dir)
    cfg = load_config(exp_dir / "config.yaml")
    try:
        state = load_checkpoint(exp_dir / "model.pt")  # torch.load(weights_only=True)
    except CheckpointError as e:
        raise ExperimentError(str(e)) from None
    if "model" in state and isinstance(state["model"], dict):  # a full training checkpoint
        state = state["model"]
    extractor = build_extractor(cfg, state, source=str(exp_dir / "model.pt"))
    return extractor.to(device), cfg


def model_fingerprint(extractor: EmbeddingExtractor) -> str:
    """sha256 over the encoder's state dict (names, dtypes, shapes, bytes) and the front end's settings.

    Two extractors share a fingerprint exactly when they compute the same embeddings, so a
    speaker DB or a set of saved embeddings can refuse a different model.
    """
    h = hashlib.sha256()
    fe = extractor.frontend
    front = {
        k: getattr(fe, k, None)
        for k in ("sample_rate", "num_mel_bins", "window", "shift", "fft_size", "cmn", "sliding_cmn_frames")
    }
    h.update(json.dumps({"frontend": front, "embed_dim": extractor.embed_dim}, sort_keys=True).encode())
    for name, tensor in sorted(extractor.encoder.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# --------------------------------------------------------------------------- segmentation
@dataclass(frozen=True)
class SegmentPolicy:
    """How an utterance of any length is cut into equal-length segments (see the module doc)."""

    max_window_seconds: float = 20.0
    min_seconds: float = 0.5
    length_quantum_frames: int = 10

    def __post_init__(self) -> None:
        if self.max_window_seconds < self.min_seconds or self.min_seconds <= 0:
            raise ValueError(f"bad segment policy: need 0 < min_seconds <= max_window_seconds, got {self}")
        if self.length_quantum_frames < 1:
            raise ValueError(f"bad segment policy: length_quantum_frames must be >= 1, got {self.length_quantum_frames}")


def segment_plan(num_samples: int, window: int, shift: int, sample_rate: int, policy: SegmentPolicy) -> tuple[int, list[int]]:
    """(segment length in samples, start offsets) for an utterance of ``num_samples`` samples.

    When the utterance is shorter than ``min_seconds`` the single "segment" is longer than
    the utterance: the caller tiles the waveform up to it (see :func:`cut_segments`).
    """
    q = policy.length_quantum_frames
    min_frames = max(q, q * math.ceil(policy.min_seconds * sample_rate / shift / q))
    max_frames = max(min_frames, q * int(policy.max_window_seconds * sample_rate / shift / q))
    frames = 0 if num_samples < window else 1 + (num_samples - window) // shift
    if frames < min_frames:
        return window + shift * (min_frames - 1), [0]
    n = math.ceil(frames / max_frames)
    per = max(min_frames, (frames // n) // q * q)
    seg = window + shift * (per - 1)
    if n == 1:
        return seg, [0]
    span = num_samples - seg
    return seg, [round(i * span / (n - 1)) for i in range(n)]


def cut_segments(wave: Tensor, window: int, shift: int, sample_rate: int, policy: SegmentPolicy) -> Tensor:
    """``wave [T]`` -> ``[n, seg]`` equal-length segments per :func:`segment_plan` (short waves tiled)."""
    seg, starts = segment_plan(wave.numel(), window, shift, sample_rate, policy)
    if wave.numel() < seg:
        reps = math.ceil(seg / wave.numel())
        return wave.repeat(reps)[:seg].unsqueeze(0)
    return torch.stack([wave[s : s + seg] for s in starts])


def _frontend_geometry(extractor: EmbeddingExtractor) -> tuple[int, int]:
    return int(extractor.frontend.window), int(extractor.frontend.shift)


@torch.no_grad()
def embed_waves(
    extractor: EmbeddingExtractor,
    waves: Sequence[Tensor],
    policy: SegmentPolicy = SegmentPolicy(),
    batch_size: int = 16,
) -> Tensor:
    """Embeddings ``[N, D]`` (float32, CPU) of N whole waveforms, batched by equal segment length."""
    if not waves:
        return torch.zeros(0, extractor.embed_dim)
    window, shift = _frontend_geometry(extractor)
    device = next(extractor.parameters(), torch.zeros(0)).device
    segments: list[tuple[int, Tensor]] = []  # (utterance index, segment [seg])
    for i, w in enumerate(waves):
        for s in cut_segments(w.reshape(-1), window, shift, extractor.sample_rate, policy):
            segments.append((i, s))
    by_len: dict[int, list[tuple[int, Tensor]]] = {}
    for i, s in segments:
        by_len.setdefault(s.numel(), []).append((i, s))
    sums = torch.zeros(len(waves), extractor.embed_dim, dtype=torch.float64)
    counts = torch.zeros(len(waves), dtype=torch.float64)
    for length in sorted(by_len, reverse=True):
        group = by_len[length]
        for b in range(0, len(group), batch_size):
            items = group[b : b + batch_size]
            x = torch.stack([s for _, s in items]).to(device)
            emb = extractor(x).float().cpu().to(torch.float64)
            idx = torch.tensor([i for i, _ in items])
            sums.index_add_(0, idx, emb)
            counts.index_add_(0, idx, torch.ones(len(items), dtype=torch.float64))
    return (sums / counts.unsqueeze(1)).float()


def embed_waveform(extractor: EmbeddingExtractor, wave: Tensor, policy: SegmentPolicy = SegmentPolicy()) -> Tensor:
    """Embedding ``[D]`` of one whole waveform ``[T]`` (windows averaged when long)."""
    return embed_waves(extractor, [wave], policy)[0]


def embed_files(
    extractor: EmbeddingExtractor,
    paths: Sequence[str | os.PathLike],
    policy: SegmentPolicy = SegmentPolicy(),
    batch_size: int = 16,
) -> Tensor:
    """Embeddings ``[N, D]`` of audio files (read with :func:`speakerid.audio.load_audio`)."""
    from speakerid.audio import load_audio, require_min_length

    waves = [require_min_length(load_audio(p, extractor.sample_rate)[0], extractor.sample_rate, p) for p in paths]
    return embed_waves(extractor, waves, policy, batch_size)


# --------------------------------------------------------------------------- data-dir extraction
@dataclass
class _Dist:
    rank: int
    world_size: int
    owns_group: bool = False


def _setup_dist(rank: int | None, world_size: int | None, device: torch.device) -> _Dist:
    """Explicit rank/world (tests, job arrays) or torchrun's environment (a process group for the barrier)."""
    if rank is not None or world_size is not None:
        world = int(world_size or 1)
        r = int(rank or 0)
        if not 0 <= r < world:
            raise ExtractError(f"rank {r} is outside world size {world}")
        return _Dist(r, world)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(0, 1)
    import torch.distributed as dist

    owns = not dist.is_initialized()
    if owns:
        # Long timeout: the barrier waits for the slowest rank's whole share.
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=12))
    return _Dist(dist.get_rank(), dist.get_world_size(), owns)


def _barrier(d: _Dist) -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    return torch.device("cpu")


def _run_key(fingerprint: str, policy: SegmentPolicy) -> str:
    """What makes two extractions interchangeable: the model and the segmentation policy."""
    return hashlib.sha256(json.dumps([fingerprint, dataclasses.asdict(policy)], sort_keys=True).encode()).hexdigest()[:16]


def _read_parts(parts_dir: Path, key: str) -> dict[str, np.ndarray]:
    """Embeddings of all finished chunks written with ``key`` (others, from another model, are ignored)."""
    done: dict[str, np.ndarray] = {}
    if not parts_dir.is_dir():
        return done
    for p in sorted(parts_dir.glob("*.npz")):
        try:
            with np.load(p, allow_pickle=False) as z:
                if str(z["key"]) != key:
                    logger.warning("%s: from another model or policy; ignored (it will be recomputed)", p)
                    continue
                for utt, e in zip(z["ids"].tolist(), z["embeddings"]):
                    done[str(utt)] = e
        except (OSError, ValueError, KeyError) as e:  # atomic writes make this rare; recompute then
            logger.warning("%s: unreadable part (%s); ignored", p, e)
    return done


def _write_part(parts_dir: Path, rank: int, key: str, ids: list[str], emb: np.ndarray) -> Path:
    parts_dir.mkdir(parents=True, exist_ok=True)
    existing = sorted(parts_dir.glob(f"rank{rank:03d}-*.npz"))
    index = 1 + max((int(p.stem.split("-")[1]) for p in existing), default=-1)
    path = parts_dir / f"rank{rank:03d}-{index:06d}.npz"
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, ids=np.array(ids), embeddings=emb.astype(np.float32), key=np.array(key))
    return path


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
    policy: SegmentPolicy = SegmentPolicy(),
    formats: Sequence[str] = ("npz", "scp"),
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Embed every utterance of ``data_dir`` with the model of ``exp_dir``; write them to ``out_dir``.

    Writes ``out_dir/embeddings.npz`` (ids, embeddings) and ``out_dir/embedding.scp`` + ``.ark``
    (Kaldi), ids in the data dir's (sorted) order, through
    :func:`speakerid.scoring.embeddings.save_embeddings`; returns those paths. Resumable:
    finished chunks of ``chunk_utts`` utterances are kept in ``out_dir/.parts`` until the merge,
    and a rerun skips what is done (all of it when the outputs are complete for this model).
    ``rank``/``world_size`` default to torchrun's; without a process group (explicit ranks)
    only rank 0 merges, and only once every utterance has a part.
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
    extractor, _ = load_experiment(exp_dir, device=dev)
    key = _run_key(model_fingerprint(extractor), policy)
    d = _setup_dist(rank, world_size, dev)
    try:
        if _already_done(out_dir, key, utts, outputs):
            if d.rank == 0:
                logger.info("%s: embeddings of all %d utterances already there for this model; nothing to do", out_dir, len(utts))
            return outputs
        parts_dir = out_dir / PARTS_DIR
        done = _read_parts(parts_dir, key)
        durations = _durations(data)
        order = sorted(utts, key=lambda u: (-durations[u], u))  # longest first: memory trouble shows early
        mine = [u for u in order[d.rank :: d.world_size] if u not in done]
        if done:
            logger.info("%s: resuming, %d of %d utterances already embedded", out_dir, len(done), len(utts))
        _embed_share(extractor, data.wav, mine, parts_dir, d.rank, key, policy, batch_size, chunk_utts, num_workers, progress)
        _barrier(d)
        if d.rank == 0:
            _merge(out_dir, parts_dir, key, utts, outputs, save_embeddings)
        _barrier(d)
    finally:
        if d.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
    return outputs


def _embed_share(
    extractor: EmbeddingExtractor,
    wav: dict[str, str],
    utts: list[str],
    parts_dir: Path,
    rank: int,
    key: str,
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
            _write_part(parts_dir, rank, key, ids, emb.numpy())
            bar.update(len(ids))
    finally:
        bar.close()


def _merge(out_dir: Path, parts_dir: Path, key: str, utts: list[str], outputs: list[Path], save_embeddings) -> None:
    done = _read_parts(parts_dir, key)
    missing = [u for u in utts if u not in done]
    if missing:
        raise ExtractError(
            f"{parts_dir}: {len(missing)} utterance(s) have no embedding yet (e.g. {missing[:3]}); "
            "run the other ranks, or rerun to resume"
        )
    emb = np.stack([done[u] for u in utts]).astype(np.float32)
    for path in outputs:
        save_embeddings(path, utts, emb)
    write_text_atomic(
        out_dir / META_FILE,
        json.dumps({"key": key, "num_utts": len(utts), "utts_sha": _utts_sha(utts), "embed_dim": int(emb.shape[1])}, indent=1),
    )
    shutil.rmtree(parts_dir, ignore_errors=True)
    logger.info("%s: %d embeddings of dimension %d written", out_dir, len(utts), emb.shape[1])
