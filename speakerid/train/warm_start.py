"""Fine-tuning start (``speakerid train --init EXP``): encoder weights from another experiment,
a check that it is the same model, and a classifier head that starts where the encoder is.

* **Source.** ``EXP`` is an experiment dir (trained here, or imported by ``speakerid import``),
  a packaged model name (``starter``, ...), a ``model.pt`` or a training checkpoint. Weights
  are read with ``torch.load(weights_only=True)`` (:func:`speakerid.experiment.load_encoder_weights`).
* **Same model.** When the source has a config (``config.yaml`` beside ``model.pt``, or the
  ``config`` entry of a checkpoint), the fine-tuning config's ``model`` section must build the
  same network (kwargs compared after filling in the class's defaults) and its front end must
  compute the same features (sample rate, bins, frame geometry, window, wave scale, CMN):
  a model fine-tuned on other features would forget what it was trained on. A mismatch is a
  one-line error naming the source and the first differing key.
* **Head.** Pair losses (Circle pair, contrastive, ...) have no head. A classifier loss (AAM,
  Circle proxy) starts with each class weight at the length-normalised mean embedding of that
  training speaker under the initial encoder (the "weight imprinting" of Qi, Brown & Lowe,
  "Low-Shot Learning with Imprinted Weights", CVPR 2018, Sec. 3.1): the first steps then refine
  a classifier that already agrees with the encoder instead of pulling the encoder towards
  random proxies. Each speed class (``augment.speed.as_new_speaker``) and each sub-center
  starts at its speaker's mean.
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speakerid.checkpoint import CheckpointError, load_checkpoint
from speakerid.experiment import load_encoder_weights
from speakerid.config import ConfigError, FeatureConfig, TrainConfig, config_from_dict, load_config
from speakerid.data.training import TrainError

logger = logging.getLogger(__name__)

# The front-end fields that change the features a model sees (dither is training-only noise;
# trim_silence is an embedding-time policy).
FRONTEND_FIELDS = ("sample_rate", "num_mel_bins", "frame_length_ms", "frame_shift_ms", "cmn", "sliding_cmn_frames",
                   "window_type", "wave_scale", "frontend")
FINETUNE_MAX_LR = 0.01  # above this, a warning: the initial model is likely to be trained away
IMPRINT_UTTS_PER_SPEAKER = 8  # utterances embedded per training speaker for the head's start


def resolve_init_source(source: str | os.PathLike) -> Path:
    """The file or dir ``--init`` names: an existing path, else a packaged model name."""
    path = Path(source)
    if path.exists():
        return path
    from speakerid.experiment import ExperimentError, resolve_model_source

    try:
        return resolve_model_source(source)
    except ExperimentError as e:
        raise TrainError(f"--init: {e}") from None


def init_source_config(path: Path) -> TrainConfig | None:
    """The training config of an init source, or None when it has none (a bare state dict)."""
    candidates = [path / "config.yaml"] if path.is_dir() else [path.parent / "config.yaml", path.parent.parent / "config.yaml"]
    for c in candidates:
        if c.is_file():
            try:
                return load_config(c)
            except ConfigError as e:
                raise TrainError(f"--init: {e}") from None
    if path.is_file():
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as e:
            raise TrainError(f"--init: {e}") from None
        if isinstance(ckpt.get("config"), dict):
            return config_from_dict(TrainConfig, ckpt["config"], str(path))
    return None


def model_signature(name: str, kwargs: dict[str, Any], feat_dim: int) -> dict[str, Any]:
    """The constructor arguments of model ``name`` with its defaults filled in (for comparison)."""
    from speakerid.models import MODELS

    if name not in MODELS:
        return {"name": name, **kwargs}
    bound = inspect.signature(MODELS[name]).bind_partial(**{"feat_dim": feat_dim, **kwargs})
    bound.apply_defaults()
    return {"name": name, **{k: v for k, v in bound.arguments.items() if k not in ("args", "kwargs")}}


def check_same_model(cfg: TrainConfig, init_cfg: TrainConfig, source: Path) -> None:
    """Refuse a fine-tuning config whose model or front end differs from the initial experiment's."""
    for name in FRONTEND_FIELDS:
        a, b = getattr(cfg.features, name), getattr(init_cfg.features, name, getattr(FeatureConfig(), name))
        if a != b:
            raise TrainError(
                f"--init {source}: features.{name} is {a!r} here but {b!r} in the initial experiment; "
                "fine-tuning needs the front end the model was trained with"
            )
    mine = model_signature(cfg.model.name, cfg.model.kwargs, cfg.features.num_mel_bins)
    theirs = model_signature(init_cfg.model.name, init_cfg.model.kwargs, init_cfg.features.num_mel_bins)
    for key in sorted(set(mine) | set(theirs)):
        if mine.get(key) != theirs.get(key):
            raise TrainError(
                f"--init {source}: the config's model differs from the initial experiment's "
                f"(model.{key}: {mine.get(key)!r} here, {theirs.get(key)!r} there); copy its model: section"
            )


def load_init_encoder(encoder: nn.Module, cfg: TrainConfig, source: str | os.PathLike) -> Path:
    """Check the source against ``cfg`` and load its encoder weights into ``encoder``; returns the resolved path."""
    path = resolve_init_source(source)
    init_cfg = init_source_config(path)
    if init_cfg is not None:
        check_same_model(cfg, init_cfg, path)
    try:
        state = load_encoder_weights(path)
    except CheckpointError as e:
        raise TrainError(f"--init: {e}") from None
    try:
        encoder.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise TrainError(f"--init {path}: encoder weights do not fit model {cfg.model.name!r} {cfg.model.kwargs}: {first}") from None
    if cfg.optim.lr > FINETUNE_MAX_LR:
        logger.warning("--init: optim.lr=%g is a from-scratch rate; fine-tuning usually takes 1e-5..1e-3", cfg.optim.lr)
    logger.info("encoder initialised from %s", path)
    return path


@torch.no_grad()
def speaker_means(encoder: nn.Module, cfg: TrainConfig, dataset: Any, per_speaker: int = IMPRINT_UTTS_PER_SPEAKER, batch_size: int = 32) -> torch.Tensor:
    """``[num_speakers, D]``: each training speaker's mean of length-normalised embeddings.

    Embeds up to ``per_speaker`` utterances of each speaker as evaluation chunks of
    ``data.chunk_frames`` (no augmentation, no dither), with the encoder in eval mode.
    """
    import torch.nn.functional as F

    from speakerid.config import AugmentConfig
    from speakerid.data.dataset import ChunkDataset

    plain = ChunkDataset(dataset.data, cfg.features, AugmentConfig(), cfg.data.chunk_frames, cfg.seed,
                         speaker_to_label=dataset.speaker_to_label, use_cached_features=cfg.data.use_cached_features,
                         train=False)
    chosen, seen = [], {}
    for i, label in enumerate(plain.utt_labels):
        if seen.get(label, 0) < per_speaker:
            seen[label] = seen.get(label, 0) + 1
            chosen.append(i)
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    sums: torch.Tensor | None = None
    counts = torch.zeros(plain.num_speakers)
    for b in range(0, len(chosen), batch_size):
        items = [plain[i] for i in chosen[b : b + batch_size]]
        emb = F.normalize(encoder(torch.stack([it["feats"] for it in items]).to(device)).float().cpu(), dim=1)
        labels = torch.tensor([it["label"] for it in items])
        sums = torch.zeros(plain.num_speakers, emb.shape[1]) if sums is None else sums
        sums.index_add_(0, labels, emb)
        counts.index_add_(0, labels, torch.ones(len(items)))
    encoder.train(was_training)
    assert sums is not None
    return F.normalize(sums / counts.clamp(min=1).unsqueeze(1), dim=1)


def imprint_classifier(head: nn.Module, means: torch.Tensor) -> bool:
    """Set a classifier loss's class weights from speaker means; False (no-op) for heads without one.

    Classes beyond the speakers (speed classes: ``label + k * num_speakers``) take their
    speaker's mean; sub-centers (rows ``c * k .. c * k + k - 1``) all start at their class's.
    """
    from speakerid.losses import ClassifierLoss

    if not isinstance(head, ClassifierLoss):
        return False
    n_spk = means.shape[0]
    if head.num_classes % n_spk or head.embed_dim != means.shape[1]:
        raise TrainError(f"cannot imprint a {head.num_classes}-class head of dim {head.embed_dim} from {n_spk} speaker means")
    per_class = means.repeat(head.num_classes // n_spk, 1)
    head.weight.data.copy_(per_class.repeat_interleave(head.sub_centers, dim=0).to(head.weight.dtype))
    return True
