"""``speakerid serve`` in a child process on a loopback port, for tests, benchmarks and embedding
the service in another program's tooling: start it, wait until ``/ready`` answers, stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, port: int, *extra: str, env: dict | None = None, log: Path | None = None,
                 timeout: float = 120.0) -> subprocess.Popen:
    """``speakerid serve --db root --port port *extra`` in a child process (the package on its
    ``PYTHONPATH``, ``env`` added, output to ``log``, default ``root/server-PORT.log``); returns once
    ``/ready`` answers 200, else raises RuntimeError with the end of the log."""
    import httpx

    repo = Path(__file__).resolve().parents[2]
    full_env = {**os.environ, "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    log = Path(log or (Path(root) / f"server-{port}.log"))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "speakerid", "serve", "--db", str(root), "--port", str(port), *extra],
                                env=full_env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start in {timeout:.0f} s: {log.read_text()[-2000:]}")


def stop_server(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
