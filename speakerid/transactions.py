"""SQLite transactions of the toolkit's databases (the speaker DB, the service's keys and
profiles): one place for BEGIN ... COMMIT / ROLLBACK and for running a schema inside one."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Iterator


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, mode: str = "EXCLUSIVE") -> Iterator[sqlite3.Connection]:
    """``BEGIN <mode>`` ... ``COMMIT``, or ``ROLLBACK`` on any exception (also KeyboardInterrupt),
    on a connection opened with ``isolation_level=None``. A SIGKILL inside leaves SQLite's journal,
    which the next connection rolls back: all or nothing either way."""
    if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
        raise ValueError(f"unknown transaction mode {mode!r}")
    conn.execute(f"BEGIN {mode}")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def execute_script(conn: sqlite3.Connection, script: str) -> None:
    """The ``;``-separated statements of ``script`` one by one (``executescript`` would COMMIT an
    open transaction first)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)
