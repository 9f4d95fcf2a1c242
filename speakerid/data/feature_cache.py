"""The feature cache of a data dir: raw log-mel fbank of every utterance as Kaldi ark/scp shards.

Stored features are the RAW log-mel fbank: dither 0 and NO CMN. Mean normalisation is cheap
and is applied when the features are read (ChunkDataset / apply_cmn), so the CMN choice
(per utterance, sliding window, per training chunk) can change without recomputing the cache.

Resume rules (:mod:`speakerid.data.jobs`): the shards of one run are named after its key
(the feature settings, the sharding and :func:`~speakerid.data.jobs.inputs_digest` of
``wav.scp``: paths, sizes, mtimes), ``raw_fbank.<key>.<i>.ark/.scp``. A rerun keeps the
finished shards of its key; shards of another key (an older config or other audio) stay
until the new ``feats.scp`` replaces the old one, so a kill midway leaves the old
``feats.scp`` readable. Each writer uses unique temporary names, and pool workers die with
the job (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
from pathlib import Path
from typing import Optional

import torch

from speakerid.config import FeatureConfig
from speakerid.data.jobs import die_with_parent, inputs_digest, unique_temp
from speakerid.features.kaldi import fbank_from_config

logger = logging.getLogger(__name__)

SHARD_PREFIX = "raw_fbank"
SHARD_META = "meta.json"


def _shard_jobs(utts: list[str], num_shards: int) -> list[list[str]]:
    """Contiguous slices of the sorted utterance list (so the merged scp stays sorted)."""
    size = math.ceil(len(utts) / num_shards)
    return [utts[i : i + size] for i in range(0, len(utts), size)]


def shard_paths(out: Path, key: str, index: int) -> tuple[Path, Path]:
    """(ark, scp) of shard ``index`` of the run ``key``."""
    return out / f"{SHARD_PREFIX}.{key}.{index}.ark", out / f"{SHARD_PREFIX}.{key}.{index}.scp"


def _write_shard(job: tuple[int, list[tuple[str, str]], str, dict, str]) -> tuple[int, int]:
    """Worker: features of one shard's utterances into ``<prefix>.<i>.ark/.scp`` (temp names, then renamed).

    The ark is renamed first and the scp last, so an existing scp means a complete shard.
    """
    import kaldiio  # noqa: PLC0415  (worker-side import)

    from speakerid.audio import load_audio, require_min_length  # noqa: PLC0415

    index, items, out_dir, cfg, key = job
    torch.set_num_threads(1)
    out = Path(out_dir)
    ark, scp = shard_paths(out, key, index)
    tmp_ark, tmp_scp = unique_temp(ark), unique_temp(scp)
    try:
        with open(tmp_ark, "wb") as fa, open(tmp_scp, "w", encoding="utf-8") as fs:
            for utt, path in items:
                wave = require_min_length(load_audio(path, cfg["sample_rate"])[0], cfg["sample_rate"], path, cfg["frame_length_ms"])
                feats = fbank_from_config(wave, FeatureConfig(**cfg), cmn=False)
                offset = fa.tell() + len((utt + " ").encode("utf-8"))
                kaldiio.save_ark(fa, {utt: feats.numpy()})
                fs.write(f"{utt} {ark.resolve()}:{offset}\n")
            fa.flush()
            os.fsync(fa.fileno())
            fs.flush()
            os.fsync(fs.fileno())
        os.replace(tmp_ark, ark)
        os.replace(tmp_scp, scp)
    finally:
        tmp_ark.unlink(missing_ok=True)
        tmp_scp.unlink(missing_ok=True)
    return index, len(items)


def compute_features_for_data_dir(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    feature_cfg: Optional[FeatureConfig] = None,
    num_workers: int = 1,
    utts_per_shard: int = 1000,
    progress: bool = True,
) -> Path:
    """Raw log-mel fbank (no CMN, no dither) of every utterance of a data dir, as Kaldi ark/scp.

    Writes ``out_dir/raw_fbank.<i>.ark`` + ``.scp`` shards (default ``out_dir = data_dir/feats``)
    and merges them into ``data_dir/feats.scp`` (atomically, sorted by utterance). Shards are
    contiguous slices of the sorted utterances (at least ``num_workers`` of them, at most
    ``utts_per_shard`` utterances each), each written by one worker job under temporary names
    and renamed when complete: a rerun skips finished shards (resume; see the module doc for
    what changes the run). ``out_dir/meta.json`` records the settings of the current set.
    Returns the path of ``feats.scp``.
    """
    from tqdm import tqdm  # noqa: PLC0415

    from speakerid.data.datadir import read_data_dir  # noqa: PLC0415
    from speakerid.fileio import write_text_atomic  # noqa: PLC0415

    cfg = feature_cfg if feature_cfg is not None else FeatureConfig()
    data = read_data_dir(data_dir)
    utts = data.utts
    if not utts:
        raise ValueError(f"{data.path / 'wav.scp'}: no utterances")
    if num_workers < 1 or utts_per_shard < 1:
        raise ValueError(f"num_workers and utts_per_shard must be >= 1, got {num_workers}, {utts_per_shard}")
    out = Path(out_dir) if out_dir is not None else data.path / "feats"
    out.mkdir(parents=True, exist_ok=True)
    num_shards = max(min(num_workers, len(utts)), math.ceil(len(utts) / utts_per_shard))
    shards = _shard_jobs(utts, num_shards)
    cfg_dict = {k: getattr(cfg, k) for k in ("sample_rate", "num_mel_bins", "frame_length_ms", "frame_shift_ms")}
    digest = inputs_digest((u, data.wav[u]) for u in utts)
    meta = {"features": cfg_dict, "cmn": False, "dither": 0.0, "num_shards": len(shards), "inputs_sha256": digest}
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode("utf-8")).hexdigest()[:12]
    meta["key"] = key

    todo = [
        (i, [(u, data.wav[u]) for u in shard], str(out), cfg_dict, key)
        for i, shard in enumerate(shards)
        if not shard_paths(out, key, i)[1].exists()
    ]
    done_utts = len(utts) - sum(len(job[1]) for job in todo)
    if done_utts:
        logger.info("%s: %d of %d shards already done; resuming", out, len(shards) - len(todo), len(shards))
    with tqdm(total=len(utts), initial=done_utts, unit="utt", desc="fbank", disable=not progress) as bar:
        if num_workers == 1 or len(todo) <= 1:
            for job in todo:
                bar.update(_write_shard(job)[1])
        else:
            # fork where available (as DataLoader workers do; each worker sets 1 intra-op thread
            # first); spawn re-imports __main__, which fails for scripts read from stdin.
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with ctx.Pool(min(num_workers, len(todo)), initializer=die_with_parent) as pool:
                for _, count in pool.imap_unordered(_write_shard, todo):
                    bar.update(count)

    lines: list[str] = []
    for i in range(len(shards)):
        lines.extend(shard_paths(out, key, i)[1].read_text(encoding="utf-8").splitlines())
    feats_scp = data.path / "feats.scp"
    write_text_atomic(feats_scp, "".join(line + "\n" for line in lines))
    write_text_atomic(out / SHARD_META, json.dumps(meta, indent=1) + "\n")
    _remove_other_runs(out, key)
    logger.info("%s: %d utterances, %d shards in %s", feats_scp, len(lines), len(shards), out)
    return feats_scp


def _remove_other_runs(out: Path, key: str) -> None:
    """After ``feats.scp`` points at run ``key``: delete other runs' shards and finished writers' temporaries."""
    for path in out.glob(f"{SHARD_PREFIX}.*"):
        if not path.name.startswith(f"{SHARD_PREFIX}.{key}."):
            logger.info("%s: from an earlier run (other config or audio); removed", path)
            path.unlink(missing_ok=True)
    for tmp in out.glob(f".{SHARD_PREFIX}.*"):
        tmp.unlink(missing_ok=True)
