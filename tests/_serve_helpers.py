"""Helpers of the speakerid serve tests: one packaged model per pytest process, an app over a
temp dir with keys, and a server subprocess on a free loopback port."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "speakerid" / "pretrained" / "examples"


def need_serve_deps() -> None:
    for mod in ("fastapi", "uvicorn", "multipart", "httpx"):
        pytest.importorskip(mod, reason=f"{mod} missing: pip install -e '.[serve,test]'")


@functools.lru_cache(maxsize=None)
def packaged_model():
    from speakerid.enroll.model import SpeakerModel

    return SpeakerModel.from_experiment("campplus")


def clip(name: str) -> bytes:
    return (EXAMPLES / name).read_bytes()


