"""Inference backends: what runs the encoder of an :class:`~speakerid.extractor.EmbeddingExtractor`.

``auto`` (the default) runs the encoder in onnxruntime on a CPU and in eager PyTorch otherwise
(another device, a model that is already an ONNX graph, or one whose graph cannot reproduce the
eager model: it then says why, once, and uses torch). ``torch`` runs the eager PyTorch encoder.
``onnxruntime`` runs the same encoder as an ONNX graph in onnxruntime, which fuses the BatchNorm /
activation chains and avoids the per-op overhead of eager mode: with CAM++ on the 2-core build
machine it embeds a 3 s clip 1.7-2.1x (batch 1, one thread) and 2.9-3.4x (batch 1, two threads)
as fast as 3D-Speaker's eager code, and 1.6x as fast as speakerid's eager torch
(``benchmarks/bench_default.py``, ``benchmarks/results_default.txt``); an error, not a fallback, if
it cannot. The front end (Kaldi fbank + CMN) and the segment policy stay in torch, so a file gets
the same segments either way, and the embeddings agree within float rounding (checked at 1e-4
relative when the graph is first used; measured ~1e-6). The extractor therefore keeps the eager
model's fingerprint: a speaker DB enrolled under one backend verifies under the other.

The ONNX graph is exported once per model (TorchScript-based ``torch.onnx.export``, opset 17,
dynamic batch and frame axes) into a cache file named by :func:`graph_key`,
``$SPEAKERID_CACHE/onnx/<key>.onnx`` (default ``~/.cache/speakerid``), written through a
temporary file and a rename under a lock (``<key>.lock``: processes that start together export
it once), and reused afterwards. The key covers what the graph is made of: the
model fingerprint (weights), the source of every module that defines a layer of the encoder, the
opset and the torch version; so an upgrade that changes a model's code exports a new graph
instead of running the old one. Beside the graph, a marker file records the outcome of the check
against the eager model for the installed onnxruntime version: ``<key>.ok-ort<version>`` (later
loads skip the check, ~0.6 s for CAM++) or ``<key>.failed-ort<version>`` holding the reason (``auto``
then goes straight to torch without exporting again).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)
USE_TORCH = "; use --backend torch"  # the hint of an onnxruntime failure

ONNX_OPSET = 17
CHECK_RTOL = 1e-4


class BackendError(ValueError):
    """An inference backend is unknown, not installed, or does not reproduce the eager model.

    ``problem`` is what went wrong; ``hint`` (appended to it in the message) what the user can do
    instead, which ``auto`` leaves out of its warning because it does that itself."""

    def __init__(self, problem: str, hint: str = "") -> None:
        super().__init__(problem + hint)
        self.problem = problem


class GraphCacheError(BackendError):
    """The graph cache folder cannot be written: a fault of the place, not of the model (not recorded)."""


def cache_dir() -> Path:
    """Where exported graphs are kept: ``$SPEAKERID_CACHE`` or ``~/.cache/speakerid``."""
    return Path(os.environ.get("SPEAKERID_CACHE") or Path.home() / ".cache" / "speakerid")


def graph_key(encoder: nn.Module, fingerprint: str) -> str:
    """Name of the exported graph of ``encoder``: a sha256 over ``fingerprint``, the source files
    of the modules that define the encoder's layers, :data:`ONNX_OPSET` and ``torch.__version__``."""
    digest = hashlib.sha256(f"{fingerprint}|opset{ONNX_OPSET}|torch{torch.__version__}".encode())
    for name in sorted({type(m).__module__ for m in encoder.modules()}):
        module = sys.modules.get(name)
        try:
            source = Path(inspect.getsourcefile(module)).read_bytes() if module is not None else b""
        except (TypeError, OSError):  # a built-in or source-less module: its name stands for it
            source = b""
        digest.update(name.encode() + b"\0" + source)
    return f"{fingerprint}-{digest.hexdigest()[:16]}"


def export_encoder_onnx(encoder: nn.Module, feat_dim: int, path: Path) -> Path:
    """Export ``encoder`` (``feats [B, frames, feat_dim] -> [B, D]``) to ``path`` (atomic write)."""
    from speakerid.fileio import atomic_path

    example = torch.randn(1, 300, feat_dim)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
        torch.onnx.export(encoder.eval(), (example,), str(tmp), dynamo=False, input_names=["feats"], output_names=["embs"],
                          dynamic_axes={"feats": {0: "batch", 1: "frames"}, "embs": {0: "batch"}}, opset_version=ONNX_OPSET)
    return path


@torch.no_grad()
def check_same_embeddings(eager: nn.Module, fast: nn.Module, feat_dim: int, source: str) -> float:
    """Max relative difference of the two encoders on random features of two shapes; an error above 1e-4."""
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for batch, frames in ((1, 157), (3, 420)):
        x = torch.randn(batch, frames, feat_dim, generator=g)
        ref, out = eager(x), fast(x)
        worst = max(worst, float((out - ref).abs().max() / ref.abs().max().clamp(min=1e-12)))
    if worst > CHECK_RTOL:
        raise BackendError(f"{source}: the onnxruntime graph differs from the eager model by {worst:.2e} (relative)", USE_TORCH)
    return worst


def _onnxruntime_version() -> str:
    try:
        import onnxruntime
    except ImportError:
        return ""
    return str(onnxruntime.__version__)


def _first_line(exc: BaseException) -> str:
    from speakerid.limits import shorten

    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {shorten(text[0], 200) if text else ''}"


def _graph_markers(graph: Path) -> tuple[Path, Path]:
    """(passed, failed) marker files of ``graph`` for the installed onnxruntime."""
    tag = f"ort{_onnxruntime_version()}"
    return graph.with_suffix(f".ok-{tag}"), graph.with_suffix(f".failed-{tag}")


def _write_marker(path: Path, text: str) -> None:
    from speakerid.fileio import atomic_write

    try:
        with atomic_write(path) as f:
            f.write(text)
    except OSError as e:  # a read-only cache costs a check per load, nothing else
        logger.debug("could not write %s: %s", path, e)


@contextlib.contextmanager
def _export_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` while the graph is exported: processes that load a
    never-exported model at once (``torchrun`` ranks, parallel jobs) export it once, the others wait
    and read it. Where the cache cannot hold a lock file the caller's export reports the folder."""
    try:
        import fcntl
    except ImportError:  # not POSIX: every process exports for itself (the rename keeps the file whole)
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_suffix(".lock"), "a")  # noqa: SIM115 -- held for the block
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _graph_path(extractor: nn.Module) -> Path:
    from speakerid.extractor import model_fingerprint

    return cache_dir() / "onnx" / f"{graph_key(extractor.encoder, model_fingerprint(extractor))}.onnx"


def onnxruntime_extractor(extractor: nn.Module, source: str, path: Path | None = None) -> nn.Module:
    """The extractor with its encoder run by onnxruntime (see the module doc); same fingerprint.
    ``path``: the graph's cache file (default: from :func:`graph_key`).

    Raises :class:`BackendError` when onnxruntime is missing or the graph cannot be exported or does
    not reproduce the eager model (the failure is also recorded beside the graph for ``auto``)."""
    from speakerid.extractor import EmbeddingExtractor
    from speakerid.models.onnx_encoder import OnnxEncoder

    if not _onnxruntime_version():
        raise BackendError(f"{source}: --backend onnxruntime needs onnxruntime (pip install onnxruntime)")
    feat_dim = int(extractor.frontend.num_mel_bins)
    path = path or _graph_path(extractor)
    passed, failed = _graph_markers(path)
    try:
        if path.is_file():
            try:
                encoder = OnnxEncoder(str(path), feat_dim=feat_dim, embed_dim=int(extractor.embed_dim))
            except ValueError as e:  # a cached file damaged by something else: export it again, once
                logger.warning("%s; exporting it again", e)
                path.unlink()
                passed.unlink(missing_ok=True)
        if not path.is_file():
            with _export_lock(path):
                if not path.is_file():  # another process may have exported it while this one waited
                    logger.info("exporting %s to %s for onnxruntime (once per model)", source, path)
                    try:
                        export_encoder_onnx(extractor.encoder, feat_dim, path)
                    except OSError as e:
                        raise GraphCacheError(f"{source}: cannot write the onnxruntime graph into {path.parent} "
                                              f"({_first_line(e)}); set SPEAKERID_CACHE to a writable folder",
                                              " or use --backend torch") from None
            encoder = OnnxEncoder(str(path), feat_dim=feat_dim, embed_dim=int(extractor.embed_dim))
        if not passed.is_file():
            worst = check_same_embeddings(extractor.encoder, encoder, feat_dim, source)
            _write_marker(passed, f"max relative difference to the eager model {worst:.2e}\n")
    except GraphCacheError:
        raise
    except BackendError as e:
        _write_marker(failed, f"{e}\n")
        raise
    except Exception as e:  # noqa: BLE001 -- the exporter and onnxruntime raise many types
        error = BackendError(f"{source}: the encoder does not run in onnxruntime ({_first_line(e)})", USE_TORCH)
        _write_marker(failed, f"{error}\n")
        raise error from None
    fast = EmbeddingExtractor(extractor.frontend, encoder, extractor.sample_rate, extractor.embed_dim).eval()
    object.__setattr__(fast, "reference", extractor)  # model_fingerprint: the eager model's (not a submodule)
    return fast


def auto_extractor(extractor: nn.Module, source: str) -> nn.Module:
    """onnxruntime where it reproduces the eager model, else the eager extractor (see the module doc)."""
    from speakerid.models.onnx_encoder import OnnxEncoder

    if isinstance(extractor.encoder, OnnxEncoder) or not _onnxruntime_version():
        return extractor
    path = _graph_path(extractor)
    failed = _graph_markers(path)[1]
    if failed.is_file():
        logger.info("%s: running the encoder in torch (%s)", source, failed)
        return extractor
    try:
        return onnxruntime_extractor(extractor, source, path)
    except BackendError as e:
        logger.warning("%s; running it in torch", e.problem)
        return extractor


BACKENDS: dict[str, Callable[[nn.Module, str], nn.Module]] = {
    "auto": auto_extractor,
    "torch": lambda extractor, source: extractor,
    "onnxruntime": onnxruntime_extractor,
}
DEFAULT_BACKEND = "auto"


def apply_backend(extractor: nn.Module, backend: str, source: str, device: str | torch.device = "cpu") -> nn.Module:
    """``extractor`` run by ``backend`` (a key of :data:`BACKENDS`); ``auto`` off the CPU is torch."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown inference backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if torch.device(device).type != "cpu":
        if backend == "onnxruntime":
            raise BackendError(f"--backend {backend} runs on the CPU; got device {device}")
        return extractor
    return BACKENDS[backend](extractor, source)
