"""API keys and tenants of ``speakerid serve``, in ``DIR/keys.sqlite``.

A key is ``sid_<key id>_<secret>``: the key id (12 hex characters) finds the row, the secret
(32 random bytes, hex) is stored only as its sha256 and compared in constant time
(:func:`hmac.compare_digest`). A plain hash is enough because the secret is high-entropy (no
dictionary to try). A key belongs to one tenant (created with its first key, by name); a tenant
has an id (uuid hex) that names its speaker DB file, so no name given by a user reaches the
file system. Revoked keys stay listed, marked with the time they were revoked.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from speakerid.transactions import execute_script, transaction

KEYS_FILE = "keys.sqlite"
_KEY_RE = re.compile(r"^sid_([0-9a-f]{12})_([0-9a-f]{64})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id), secret_sha256 TEXT NOT NULL,
    created REAL NOT NULL, revoked REAL)
"""


class KeyError_(ValueError):
    """A keys command failed (unknown key id, bad tenant name); the message says why."""


@dataclass
class KeyInfo:
    key_id: str
    tenant: str
    tenant_id: str
    created: float
    revoked: float | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


class KeyStore:
    """The keys file of a service dir; each call opens its own connection (thread-safe)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.path = self.root / KEYS_FILE

    @contextlib.contextmanager
    def _conn(self, write: bool) -> Iterator[sqlite3.Connection]:
        if write:
            self.root.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            yield None
            return
        conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            if write:
                conn.execute("PRAGMA synchronous = FULL")
                with transaction(conn, "IMMEDIATE"):
                    execute_script(conn, _SCHEMA)
                    yield conn
            else:
                yield conn
        finally:
            conn.close()

    def create(self, tenant: str) -> tuple[KeyInfo, str]:
        """A new key of ``tenant`` (created when new): (its info, the key itself, shown once)."""
        if not _NAME_RE.match(tenant or ""):
            raise KeyError_(f"invalid tenant name {tenant[:80]!r}: 1-100 characters of letters, digits, _ . @ -, "
                            "starting with a letter or digit")
        key_id, secret = secrets.token_hex(6), secrets.token_hex(32)
        now = time.time()
        with self._conn(write=True) as conn:
            row = conn.execute("SELECT id FROM tenants WHERE name = ?", (tenant,)).fetchone()
            tenant_id = row[0] if row else uuid.uuid4().hex
            if row is None:
                conn.execute("INSERT INTO tenants(id, name, created) VALUES (?, ?, ?)", (tenant_id, tenant, now))
            conn.execute("INSERT INTO api_keys(id, tenant_id, secret_sha256, created) VALUES (?, ?, ?, ?)",
                         (key_id, tenant_id, _hash(secret), now))
        return KeyInfo(key_id, tenant, tenant_id, now, None), f"sid_{key_id}_{secret}"

    def list(self) -> list[KeyInfo]:
        with self._conn(write=False) as conn:
            if conn is None:
                return []
            rows = conn.execute("SELECT k.id, t.name, t.id, k.created, k.revoked FROM api_keys k JOIN tenants t "
                                "ON k.tenant_id = t.id ORDER BY k.created").fetchall()
        return [KeyInfo(*r) for r in rows]

    def revoke(self, key_id: str) -> KeyInfo:
        with self._conn(write=True) as conn:
            row = conn.execute("SELECT k.id, t.name, t.id, k.created, k.revoked FROM api_keys k JOIN tenants t "
                               "ON k.tenant_id = t.id WHERE k.id = ?", (key_id,)).fetchone()
            if row is None:
                raise KeyError_(f"{self.path}: no key with id {key_id[:80]!r} (see speakerid keys list)")
            info = KeyInfo(*row)
            if info.revoked is None:
                info.revoked = time.time()
                conn.execute("UPDATE api_keys SET revoked = ? WHERE id = ?", (info.revoked, key_id))
        return info

    def authenticate(self, key: str | None) -> Tenant | None:
        """The tenant of a valid, unrevoked key, else None."""
        m = _KEY_RE.match(key or "")
        if m is None:
            return None
        with self._conn(write=False) as conn:
            if conn is None:
                return None
            row = conn.execute("SELECT k.secret_sha256, k.revoked, t.id, t.name FROM api_keys k JOIN tenants t "
                               "ON k.tenant_id = t.id WHERE k.id = ?", (m.group(1),)).fetchone()
        if row is None:
            hmac.compare_digest(_hash(m.group(2)), "0" * 64)  # the same work for an unknown key id
            return None
        if not hmac.compare_digest(_hash(m.group(2)), row[0]) or row[1] is not None:
            return None
        return Tenant(row[2], row[3])
