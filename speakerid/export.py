"""Export a trained experiment as one deployable model: waveform -> fbank -> CMN -> encoder -> embedding.

The exported graph is :class:`speakerid.extractor.EmbeddingExtractor`: input ``wave`` float32
``[batch, samples]`` in [-1, 1] at the experiment's sample rate (16 kHz), output
``embedding`` ``[batch, embed_dim]`` (not length-normalised; use cosine similarity). Both
axes are dynamic. It embeds what it is given as one segment: the whole-utterance policy of
``speakerid extract`` (20 s windows averaged, short files tiled to 0.5 s, batches of equal
lengths; :mod:`speakerid.inference`) is the caller's job, and it takes no padding mask, so
batch only equal-length waveforms.

Formats:

- TorchScript (``torch.jit.script``; ``.pt``/``.ts``): loads with ``torch.jit.load`` without
  speakerid installed. A JSON with the sample rate, embedding size, model fingerprint and
  config is stored inside as the extra file ``speakerid.json``.
- ONNX (``.onnx``; needs ``pip install onnx onnxscript``, checking needs ``onnxruntime``):
  the ``torch.export``-based exporter (``dynamo=True``; the rfft of the front end becomes an
  ONNX DFT), opset 18, the same JSON in the model's ``metadata_props``.

Every export is checked: the exported model is loaded back and run on two random waveforms
of different lengths and batch sizes; its embeddings must equal the eager model's within
``atol`` (1e-4; relative to the largest entry when that exceeds 1), else
:class:`ExportError` and no file is left behind.
"""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from speakerid.fileio import atomic_path

logger = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx")
ONNX_OPSET = 18
CHECK_ATOL = 1e-4


class ExportError(ValueError):
    """The model cannot be exported, or the exported model does not reproduce the eager one."""


def format_from_path(path: str | os.PathLike) -> str:
    """``onnx`` for ``*.onnx``, else ``torchscript``."""
    return "onnx" if str(path).lower().endswith(".onnx") else "torchscript"


def _metadata(extractor, cfg) -> dict:
    from speakerid.config import config_to_dict
    from speakerid.inference import SegmentPolicy
    from speakerid.extractor import model_fingerprint

    return {
        "format": "speakerid.EmbeddingExtractor",
        "input": "wave float32 [batch, samples] in [-1, 1]",
        "output": "embedding float32 [batch, embed_dim]",
        "sample_rate": int(extractor.sample_rate),
        "embed_dim": int(extractor.embed_dim),
        "fingerprint": model_fingerprint(extractor, SegmentPolicy.from_config(cfg) if cfg is not None else None),
        "config": config_to_dict(cfg) if cfg is not None else None,
    }


def _check_inputs(sample_rate: int) -> list[torch.Tensor]:
    """Two probe batches of different sizes and lengths (dynamic axes must really be dynamic)."""
    g = torch.Generator().manual_seed(0)
    return [
        0.1 * torch.randn(2, int(2.0 * sample_rate) + 123, generator=g),
        0.1 * torch.randn(1, int(3.3 * sample_rate), generator=g),
    ]


def compare_outputs(name: str, run, extractor, atol: float) -> float:
    """Max abs difference exported vs eager, relative to the embeddings' scale when that exceeds 1.

    ``|out - ref| <= atol * max(1, max|ref|)``: absolute for ordinary embeddings (entries of
    order 1-10), relative for models whose raw embeddings are huge (e.g. a barely trained
    one, whose entries reach 1e7 and whose float32 rounding alone exceeds 1e-4); cosine
    scoring only sees the direction. Returns the (scaled) worst difference.
    """
    worst = 0.0
    for x in _check_inputs(extractor.sample_rate):
        with torch.no_grad():
            ref = extractor(x).numpy()
        out = np.asarray(run(x))
        if not (np.isfinite(ref).all() and np.isfinite(out).all()):
            raise ExportError(f"{name}: the {'eager' if not np.isfinite(ref).all() else 'exported'} model gives NaN or "
                              "infinite embeddings; nothing to export")
        if out.shape != ref.shape:
            raise ExportError(f"{name}: exported model gives shape {out.shape}, eager {ref.shape}")
        scale = max(1.0, float(np.abs(ref).max()))
        worst = max(worst, float(np.abs(out - ref).max()) / scale)
    if not worst <= atol:
        raise ExportError(f"{name}: exported model differs from the eager model by {worst:.2e} (> {atol:g})")
    return worst


def export_torchscript(extractor, path: str | os.PathLike, cfg=None, atol: float = CHECK_ATOL) -> Path:
    """``torch.jit.script`` the extractor, save it atomically, reload it and check it (max abs diff <= atol)."""
    path = Path(path)
    extractor = extractor.eval().cpu()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch>=2.9 marks TorchScript deprecated; it still works
        try:
            scripted = torch.jit.script(extractor)
        except Exception as e:  # noqa: BLE001 -- TorchScript raises many types; report one line
            raise ExportError(f"TorchScript cannot compile the model: {str(e).strip().splitlines()[0]}") from None
        extra = {"speakerid.json": json.dumps(_metadata(extractor, cfg))}
        buf = io.BytesIO()  # serialised in memory: a full disk is then a Python OSError naming --out, not a C++ abort
        torch.jit.save(scripted, buf, _extra_files=extra)
        with atomic_path(path, suffix=".pt") as tmp:
            tmp.write_bytes(buf.getbuffer())
            loaded = torch.jit.load(str(tmp), map_location="cpu")
            diff = compare_outputs(str(path), lambda x: loaded(x).detach().numpy(), extractor, atol)
    logger.info("%s: TorchScript model written (max abs diff to eager %.1e)", path, diff)
    return path


def export_onnx(extractor, path: str | os.PathLike, cfg=None, atol: float = CHECK_ATOL, check: bool = True) -> Path:
    """Export with ``torch.onnx.export(dynamo=True)``; check with onnxruntime when installed (``check``)."""
    try:
        import onnx
        import onnxscript  # noqa: F401 -- the dynamo exporter needs it
    except ImportError as e:
        raise ExportError(f"ONNX export needs the onnx extra: pip install onnx onnxscript ({e})") from None
    path = Path(path)
    extractor = extractor.eval().cpu()
    wave = _check_inputs(extractor.sample_rate)[0]
    batch = torch.export.Dim("batch", min=1, max=4096)
    # At least a second of audio (the encoders' convolutions need frames); at most an hour.
    samples = torch.export.Dim("samples", min=extractor.sample_rate, max=3600 * extractor.sample_rate)
    for name in ("onnx_ir", "onnxscript"):  # their INFO logs list every rewrite: hundreds of lines
        logging.getLogger(name).setLevel(logging.WARNING)
    with atomic_path(path, suffix=".onnx") as tmp:
        try:
            program = torch.onnx.export(
                extractor,
                (wave,),
                None,
                input_names=["wave"],
                output_names=["embedding"],
                opset_version=ONNX_OPSET,
                dynamo=True,
                dynamic_shapes={"wave": {0: batch, 1: samples}},
                verbose=False,
            )
            program.save(str(tmp), external_data=False)
        except (ExportError, OSError):
            raise
        except Exception as e:  # noqa: BLE001 -- the exporter raises many types; report one line
            raise ExportError(f"ONNX export failed: {type(e).__name__}: {str(e).strip().splitlines()[0]}") from None
        model = onnx.load(str(tmp))
        for key, value in {"speakerid": json.dumps(_metadata(extractor, cfg))}.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(tmp))
        if check:
            try:
                import onnxruntime as ort
            except ImportError:
                logger.warning("%s: onnxruntime not installed; the ONNX model was not checked against the eager one", path)
            else:
                session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
                diff = compare_outputs(str(path), lambda x: session.run(None, {"wave": x.numpy()})[0], extractor, atol)
                logger.info("%s: ONNX model checked with onnxruntime (max abs diff to eager %.1e)", path, diff)
    return path


def export_model(exp_dir: str | os.PathLike, out: str | os.PathLike, fmt: str | None = None, atol: float = CHECK_ATOL) -> Path:
    """Export the experiment ``exp_dir`` to ``out`` (format from ``fmt`` or the extension); returns ``out``."""
    from speakerid.inference import load_experiment

    fmt = fmt or format_from_path(out)
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    extractor, cfg = load_experiment(exp_dir, device="cpu", backend="torch")  # the eager modules are what is exported
    if fmt == "onnx":
        return export_onnx(extractor, out, cfg, atol)
    return export_torchscript(extractor, out, cfg, atol)


def load_exported_metadata(path: str | os.PathLike) -> dict:
    """The ``speakerid.json`` stored in an exported TorchScript or ONNX model."""
    path = Path(path)
    if format_from_path(path) == "onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
        if "speakerid" not in props:
            raise ExportError(f"{path}: no speakerid metadata in this ONNX model")
        return json.loads(props["speakerid"])
    extra = {"speakerid.json": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError) as e:
        raise ExportError(f"{path}: not a TorchScript model ({str(e).strip().splitlines()[0]})") from None
    if not extra["speakerid.json"]:
        raise ExportError(f"{path}: no speakerid metadata in this TorchScript model")
    return json.loads(extra["speakerid.json"])
