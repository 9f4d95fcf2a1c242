"""Import an ONNX speaker model (``speakerid import --from onnx --checkpoint model.onnx``).

WeSpeaker publishes ONNX exports of its models (input ``feats [B, T, 80]``: CMN'd Kaldi fbank;
output ``embs``). The ONNX file is copied into the experiment dir as ``encoder.onnx`` and the
config names :class:`speakerid.models.onnx_encoder.OnnxEncoder` with its absolute path, so
``extract`` / ``enroll`` / ``verify`` / ``identify`` run it through onnxruntime behind speakerid's
own front end. The front end is WeSpeaker's (hamming window, int16-scaled wave, CMN) unless
``--window-type`` / ``--wave-scale`` say otherwise (CAM++ exports: povey / float, as its CLI).
A ``--config`` (WeSpeaker's config.yaml) is optional and only supplies the fbank settings.
"""

from __future__ import annotations

import os
from pathlib import Path

from speakerid.config import FeatureConfig, ModelConfig, TrainConfig
from speakerid.limits import shorten

from .experiment import ModelImportError, file_sha256, write_experiment

__all__ = ["import_onnx"]

ONNX_NAME = "encoder.onnx"


def import_onnx(
    checkpoint: str | os.PathLike, out: str | os.PathLike, config: str | os.PathLike | None = None, force: bool = False,
    window_type: str | None = None, wave_scale: str | None = None, norm_stats: str | os.PathLike | None = None,
) -> Path:
    """``model.onnx`` -> experiment dir ``out`` backed by onnxruntime (see the module doc)."""
    from speakerid.models.onnx_encoder import onnx_input_bins  # noqa: PLC0415

    if norm_stats is not None:
        raise ModelImportError("--norm-stats applies to --from speechbrain only")
    src = Path(checkpoint)
    if not src.is_file():
        raise ModelImportError(f"{src}: ONNX model file not found")
    try:
        bins = onnx_input_bins(src)
    except ImportError as exc:
        raise ModelImportError(f"{src}: importing an ONNX model needs the onnx extra: pip install onnx onnxruntime "
                               f"({shorten(exc)})") from None
    except Exception as exc:  # noqa: BLE001 -- onnx raises DecodeError and others
        raise ModelImportError(f"{src}: not an ONNX model ({str(exc).splitlines()[0][:120]})") from None
    fb: dict = {}
    if config is not None:
        from .wespeaker import wespeaker_config  # noqa: PLC0415

        fb = (wespeaker_config(config).get("dataset_args") or {}).get("fbank_args") or {}
    num_bins = int(fb.get("num_mel_bins", bins or 80))
    if bins is not None and bins != num_bins:
        raise ModelImportError(f"{src}: input has {bins} bins, {config} says num_mel_bins {num_bins}")
    final = Path(out).resolve() / ONNX_NAME
    cfg = TrainConfig(
        features=FeatureConfig(num_mel_bins=num_bins, frame_length_ms=float(fb.get("frame_length", 25)),
                               frame_shift_ms=float(fb.get("frame_shift", 10)), cmn=True,
                               window_type=window_type or "hamming", wave_scale=wave_scale or "int16"),
        model=ModelConfig(name="onnx_encoder", kwargs={"path": str(final)}),
    )
    provenance = {"toolkit": "onnx", "checkpoint": str(src.resolve()), "checkpoint_sha256": file_sha256(src),
                  "config": str(Path(config).resolve()) if config is not None else None}
    from speakerid.models.onnx_encoder import OnnxEncoder  # noqa: PLC0415

    try:
        encoder = OnnxEncoder(str(src), feat_dim=num_bins)  # loads and runs it once: a bad file fails here
    except ValueError as exc:
        raise ModelImportError(str(exc)) from None
    cfg.model.kwargs["embed_dim"] = encoder.embed_dim
    return write_experiment(out, cfg, encoder.state_dict(), provenance, force=force, source=str(src),
                            files={ONNX_NAME: src}, check=False)
