"""The speaker DB's SQLite schema: its tables, version and the triggers that keep the index
token in step (:mod:`speakerid.enroll.store` creates them in a new file)."""

from __future__ import annotations

SCHEMA_VERSION = 1
SPEAKERID_TABLES = {"meta", "speakers", "utterances"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS speakers (
    name TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    embed_dim INTEGER NOT NULL,
    emb_sum BLOB NOT NULL,
    num_utts INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS utterances (
    id INTEGER PRIMARY KEY,
    speaker TEXT NOT NULL REFERENCES speakers(name) ON DELETE CASCADE,
    path TEXT NOT NULL,
    embedding BLOB NOT NULL,
    added REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS utterances_by_speaker ON utterances(speaker);
"""

# Any UPDATE / DELETE of the rows, by speakerid or by another program, gives the DB a new index
# token, so the speaker index beside it (speakerid/enroll/index.py) is seen to be stale; inserts
# are speakerid's own and set the token themselves (one statement per transaction, not per row).
TOKEN_KEY = "index_token"
TRIGGERS = [
    f"CREATE TRIGGER IF NOT EXISTS index_token_{table}_{op} AFTER {op.upper()} ON {table} BEGIN "
    f"UPDATE meta SET value = lower(hex(randomblob(16))) WHERE key = '{TOKEN_KEY}'; END"
    for table in ("speakers", "utterances") for op in ("update", "delete")
]
