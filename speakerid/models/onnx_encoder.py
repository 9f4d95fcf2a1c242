"""An encoder backed by an ONNX file and onnxruntime (the ``onnx`` extra).

For imported ONNX speaker models (``speakerid import --from onnx``; WeSpeaker publishes its models
as ONNX with input ``feats [B, T, bins]`` and output ``embs [B, dim]``). It behaves as any
speakerid encoder for inference: ``forward(feats[B, frames, feat_dim]) -> [B, embed_dim]``, so
``extract``, ``enroll``, ``verify`` and ``identify`` use it unchanged. It has no trainable weights;
its state dict holds the file's sha256 (buffer ``onnx_sha256``), so the model fingerprint of an
experiment changes with the ONNX file. It cannot be trained, scripted or re-exported.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["OnnxEncoder"]


class OnnxEncoder(nn.Module):
    """Run ``path`` with onnxruntime (CPU) on fbank features.

    Args:
        path: the .onnx file (absolute, or relative to the working directory).
        feat_dim: number of fbank bins the model expects.
        embed_dim: embedding size (0: read from the model's output shape, else probed).
        input_name / output_name: graph input / output (default: the first of each).
    """

    def __init__(self, path: str, feat_dim: int = 80, embed_dim: int = 0, input_name: str = "", output_name: str = "") -> None:
        super().__init__()
        try:
            import onnxruntime as ort  # noqa: PLC0415
        except ImportError as exc:
            raise ValueError(f"{path}: onnxruntime is needed for an ONNX-backed model (pip install speakerid[onnx])") from exc
        file = Path(path)
        if not file.is_file():
            raise ValueError(f"{file}: ONNX model file not found")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, torch.get_num_threads())
        if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":  # speakerid's thread policy (README: Threads)
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(file), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 -- onnxruntime raises its own types
            raise ValueError(f"{file}: not a loadable ONNX model ({str(exc).splitlines()[0][:160]})") from None
        self._input = input_name or self._session.get_inputs()[0].name
        self._output = output_name or self._session.get_outputs()[0].name
        self.feat_dim = int(feat_dim)
        digest = hashlib.sha256(file.read_bytes()).digest()
        self.register_buffer("onnx_sha256", torch.tensor(list(digest), dtype=torch.uint8))
        if not embed_dim:
            dim = self._session.get_outputs()[0].shape[-1]
            embed_dim = dim if isinstance(dim, int) else int(self(torch.zeros(1, 200, self.feat_dim)).shape[-1])
        self.embed_dim = int(embed_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self._session.run([self._output], {self._input: x})[0]
        out = np.asarray(out, dtype=np.float32)
        return torch.from_numpy(out.reshape(out.shape[0], -1)).to(feats.device)


def onnx_input_bins(path: str | os.PathLike) -> int | None:
    """The static last dimension of the model's first input (the fbank bins), if it has one."""
    import onnx  # noqa: PLC0415

    model = onnx.load(str(path), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return int(dims[-1].dim_value) if dims and dims[-1].dim_value > 0 else None
