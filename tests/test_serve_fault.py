"""speakerid serve killed with SIGKILL while 8 clients enrol: every enrolment answered 2xx is
stored, none left unanswered is half-stored, and SQLite's integrity check passes. The kill
points are deterministic: SPEAKERID_SERVE_KILL_AT=STEP:N (speakerid/serve/faults.py) makes the
server kill itself the N-th time an enrolment reaches STEP, at each step of the write."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from tests._serve_helpers import clip, need_serve_deps
from speakerid.serve.launch import free_port, start_server, stop_server

need_serve_deps()
STEPS = ["after_embedding", "before_transaction", "in_transaction", "after_commit"]
CLIENTS = 8


def check_consistent(db: str, pids: list[str]) -> dict[str, int]:
    """Each profile's clips counter matches its stored rows (pending or speaker rows); returns pid -> clips."""
    conn = sqlite3.connect(db)  # a read-write open rolls back a killed writer's hot journal
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        clips = {}
        for pid in pids:
            status, n = conn.execute("SELECT status, clips FROM serve_profiles WHERE id = ?", (pid,)).fetchone()
            pending = conn.execute("SELECT COUNT(*) FROM serve_pending WHERE profile_id = ?", (pid,)).fetchone()[0]
            stored = conn.execute("SELECT COUNT(*) FROM utterances WHERE speaker = ?", (pid,)).fetchone()[0]
            speaker = conn.execute("SELECT num_utts FROM speakers WHERE name = ?", (pid,)).fetchone()
            if status == "enrolled":
                assert pending == 0 and stored == n >= 1 and speaker == (n,), (pid, status, n, pending, stored)
            else:
                assert stored == 0 and speaker is None and pending == n, (pid, status, n, pending, stored)
            clips[pid] = n
        return clips
    finally:
        conn.close()


@pytest.mark.parametrize("step", STEPS)
def test_kill_during_enrolment(tmp_path, step):
    import httpx

    from speakerid.serve.keys import KeyStore

    info, key = KeyStore(tmp_path).create("acme")
    port = free_port()
    # clips: a_1 (5.4 s of speech) enrols at once (the SpeakerDB transaction), b_1 (2.9 s) stays pending
    proc = start_server(tmp_path, port, "--min-enroll-speech", "5", env={"SPEAKERID_SERVE_KILL_AT": f"{step}:3"})
    base = f"http://127.0.0.1:{port}"
    h = {"Authorization": f"Bearer {key}"}
    try:
        pids = [httpx.post(f"{base}/v1/profiles", headers=h, timeout=30).json()["id"] for _ in range(CLIENTS)]
        answered: dict[str, int] = {}

        def client(i: int) -> None:
            name = "speaker_a_1.flac" if i % 2 == 0 else "speaker_b_1.flac"
            try:
                r = httpx.post(f"{base}/v1/profiles/{pids[i]}/enrollments", content=clip(name),
                               headers={**h, "Content-Type": "audio/flac"}, timeout=120)
                answered[pids[i]] = r.status_code
            except httpx.HTTPError:
                pass  # the server died: unanswered

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert proc.wait(timeout=60) == -9  # it killed itself at the step
    finally:
        stop_server(proc)
    assert len(answered) < CLIENTS and all(code == 201 for code in answered.values())
    db = str(tmp_path / "tenants" / f"{info.tenant_id}.db")
    clips = check_consistent(db, pids)
    for pid in answered:
        assert clips[pid] == 1  # answered: stored
    assert all(clips[pid] in (0, 1) for pid in pids)  # unanswered: stored whole or not at all
    if step == "in_transaction":
        # writes are serialised: the first two committed (answered or not), the third died before COMMIT
        assert sum(clips.values()) == 2

    if step == "after_commit":  # restart: the service reads what the killed one left and goes on
        proc = start_server(tmp_path, port)
        try:
            for pid in pids:
                p = httpx.get(f"{base}/v1/profiles/{pid}", headers=h, timeout=30).json()
                assert p["clips"] == clips[pid]
            enrolled = [pid for pid in pids if httpx.get(f"{base}/v1/profiles/{pid}", headers=h).json()["status"] == "enrolled"]
            assert enrolled
            r = httpx.post(f"{base}/v1/identify", content=clip("speaker_a_test.flac"),
                           headers={**h, "Content-Type": "audio/flac"}, timeout=120)
            assert r.status_code == 200 and r.json()["decision"] in enrolled
            r = httpx.post(f"{base}/v1/profiles/{pids[1]}/enrollments", content=clip("speaker_a_2.flac"),
                           headers={**h, "Content-Type": "audio/flac"}, timeout=120)
            assert r.status_code == 201
        finally:
            stop_server(proc)
        check_consistent(db, pids)
