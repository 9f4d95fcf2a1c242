"""Helpers of the speakerid serve tests: one packaged model per pytest process, an app over a
temp dir with keys, and a server subprocess on a free loopback port."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import time
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, port: int, *extra: str, env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    """``speakerid serve`` in a subprocess; returns once /health answers (or fails with its log)."""
    import httpx

    full_env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    out = open(log or (root / f"server-{port}.log"), "ab")
    proc = subprocess.Popen([sys.executable, "-m", "speakerid", "serve", "--db", str(root), "--port", str(port),
                             "--threads", "1", *extra], env=full_env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {Path(out.name).read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start in 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
