"""Test-only kill points of ``speakerid serve`` (also in the README's HTTP service section).

``SPEAKERID_SERVE_KILL_AT=STEP`` (or ``STEP:N``, the N-th time the step is reached, default 1)
makes the server process SIGKILL itself at that step of an enrolment write, so a test can check
that a killed server leaves every answered enrolment stored and no unanswered one half-stored.
Steps, in order: ``after_embedding`` (the embedding is computed), ``before_transaction`` (about
to open the write transaction), ``in_transaction`` (rows written, before COMMIT),
``after_commit`` (committed, before the response is sent). Unset: nothing happens.
"""

from __future__ import annotations

import os
import signal
import threading

STEPS = ("after_embedding", "before_transaction", "in_transaction", "after_commit")
ENV = "SPEAKERID_SERVE_KILL_AT"
_lock = threading.Lock()
_counts: dict[str, int] = {}


def kill_point(step: str) -> None:
    spec = os.environ.get(ENV, "")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != step:
        return
    with _lock:
        _counts[step] = _counts.get(step, 0) + 1
        if _counts[step] >= int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)
