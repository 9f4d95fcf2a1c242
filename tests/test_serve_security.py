"""speakerid serve under hostile or broken requests: keys (none, wrong, revoked), tenants kept
apart (another tenant's id is a 404 like an unknown one), body and decoded-duration limits,
malformed multipart and JSON, path-like names, non-audio, silence, too little speech, a full
queue, and deletes racing verifies: every status and error code asserted, never a 500."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from tests._serve_helpers import clip, need_serve_deps, packaged_model

need_serve_deps()
FLAC = {"Content-Type": "audio/flac"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from fastapi.testclient import TestClient

    from speakerid.serve.app import Settings, create_app
    from speakerid.serve.keys import KeyStore

    root = tmp_path_factory.mktemp("serve_sec")
    keys = KeyStore(root)
    a_info, a_key = keys.create("tenant-a")
    _, b_key = keys.create("tenant-b")
    revoked_info, revoked_key = keys.create("tenant-a")
    keys.revoke(revoked_info.key_id)
    app = create_app(root, packaged_model(), Settings(max_body_bytes=2 * 2**20, max_audio_seconds=60,
                                                      min_enroll_speech=3.0))
    with TestClient(app, raise_server_exceptions=False) as c:
        a = c.post("/v1/profiles", json={"display_name": "a"}, headers={"X-API-Key": a_key}).json()["id"]
        r = c.post(f"/v1/profiles/{a}/enrollments", content=clip("speaker_a_1.flac"), headers={**FLAC, "X-API-Key": a_key})
        assert r.json()["status"] == "enrolled"
        yield {"c": c, "root": root, "a_key": a_key, "b_key": b_key, "revoked": revoked_key, "a": a,
               "tenant_a": a_info.tenant_id}


def err(r, status, code):
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.json()
    assert set(r.json()["error"]) == {"code", "message"}


def A(e, **h):
    return {"Authorization": f"Bearer {e['a_key']}", **h}


def test_keys_no_wrong_revoked(env):
    c = env["c"]
    err(c.get("/v1/profiles"), 401, "unauthorized")
    assert c.get("/v1/profiles").headers["www-authenticate"] == "Bearer"
    wrong = env["a_key"][:-4] + ("0000" if not env["a_key"].endswith("0000") else "1111")
    for h in ({"Authorization": f"Bearer {wrong}"}, {"X-API-Key": "nonsense"}, {"Authorization": "Basic abc"},
              {"Authorization": f"Bearer {env['revoked']}"}, {"X-API-Key": env["revoked"]}):
        err(c.get("/v1/profiles", headers=h), 401, "unauthorized")
    err(c.get("/metrics"), 401, "unauthorized")
    assert c.get("/v1/profiles", headers={"X-API-Key": env["a_key"]}).status_code == 200
    from speakerid.serve.keys import KeyStore

    listed = KeyStore(env["root"]).list()
    assert len(listed) == 3 and sum(k.revoked is not None for k in listed) == 1
    text = (env["root"] / "keys.sqlite").read_bytes()
    assert env["a_key"].encode() not in text and env["a_key"].split("_")[2].encode() not in text


def test_tenants_apart(env):
    c, a = env["c"], env["a"]
    b = {"Authorization": f"Bearer {env['b_key']}"}
    assert c.get("/v1/profiles", headers=b).json()["total"] == 0
    for r in (c.get(f"/v1/profiles/{a}", headers=b), c.delete(f"/v1/profiles/{a}", headers=b),
              c.post(f"/v1/profiles/{a}/reset", headers=b),
              c.post(f"/v1/profiles/{a}/verify", content=clip("speaker_a_test.flac"), headers={**b, **FLAC}),
              c.post(f"/v1/profiles/{a}/enrollments", content=clip("speaker_a_test.flac"), headers={**b, **FLAC}),
              c.post("/v1/identify", params={"candidates": a}, content=clip("speaker_a_test.flac"), headers={**b, **FLAC})):
        err(r, 404, "not_found")
    r = c.post("/v1/identify", content=clip("speaker_a_test.flac"), headers={**b, **FLAC})
    assert r.status_code == 200 and r.json()["decision"] == "unknown" and r.json()["candidates"] == []
    assert c.get(f"/v1/profiles/{a}", headers=A(env)).json()["status"] == "enrolled"  # untouched


def test_body_limit(env):
    c = env["c"]
    big = b"\0" * (2 * 2**20 + 1)
    err(c.post(f"/v1/profiles/{env['a']}/verify", content=big, headers=A(env, **FLAC)), 413, "payload_too_large")

    def chunks():  # no Content-Length: the counted bytes trip the limit
        for _ in range(5):
            yield b"\0" * 2**19

    err(c.post(f"/v1/profiles/{env['a']}/verify", content=chunks(), headers=A(env, **FLAC)), 413, "payload_too_large")
    err(c.post("/v1/profiles", content=b"x" * (3 * 2**20), headers=A(env, **{"Content-Type": "application/json"})),
        413, "payload_too_large")


def test_decoded_duration_bomb(env):
    # a second of low noise, then an hour of silence at 8 kHz: a ~100 kB FLAC that would decode to 115 MB of floats
    n = 8000 * 3600
    quiet = np.zeros(n, np.int16)
    quiet[:8000] = np.random.default_rng(0).integers(-50, 50, 8000)
    buf = io.BytesIO()
    sf.write(buf, quiet, 8000, format="FLAC", subtype="PCM_16")
    data = buf.getvalue()
    assert len(data) < 2**20
    t = time.perf_counter()
    err(env["c"].post(f"/v1/profiles/{env['a']}/verify", content=data, headers=A(env, **FLAC)), 413, "audio_too_long")
    assert time.perf_counter() - t < 2.0  # refused from the header, not decoded


def test_bad_requests(env):
    c, a = env["c"], env["a"]
    url = f"/v1/profiles/{a}/verify"
    err(c.post(url, content=b"this is not audio at all" * 10, headers=A(env, **{"Content-Type": "audio/wav"})),
        422, "unreadable_audio")
    err(c.post(url, content=b"", headers=A(env, **{"Content-Type": "audio/wav"})), 422, "empty_audio")
    err(c.post(url, content=clip("speaker_a_test.flac"), headers=A(env, **{"Content-Type": "text/plain"})),
        415, "unsupported_media_type")
    err(c.post(url, content=b"--xx\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc",
               headers=A(env, **{"Content-Type": "multipart/form-data; boundary=xx"})), 400, "bad_multipart")
    err(c.post(url, data={"other": "1"}, files={"nofile": ("x", b"abc")}, headers=A(env)), 400, "bad_multipart")
    silence, tone = io.BytesIO(), io.BytesIO()
    sf.write(silence, np.zeros(16000 * 3, np.float32), 16000, format="WAV")
    err(c.post(url, content=silence.getvalue(), headers=A(env, **{"Content-Type": "audio/wav"})), 422, "silent_audio")
    t = np.arange(int(16000 * 0.4)) / 16000  # 0.4 s of tone: below the per-clip speech minimum
    sf.write(tone, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000, format="WAV")
    err(c.post(url, content=tone.getvalue(), headers=A(env, **{"Content-Type": "audio/wav"})), 422, "too_little_speech")
    err(c.post("/v1/profiles", content=b"{not json", headers=A(env, **{"Content-Type": "application/json"})),
        400, "malformed_json")
    err(c.post("/v1/profiles", json={"display_name": "x", "admin": True}, headers=A(env)), 422, "invalid_request")
    err(c.post("/v1/profiles", json={"display_name": 5}, headers=A(env)), 422, "invalid_request")
    err(c.post("/v1/profiles", json={"display_name": "a\x00b"}, headers=A(env)), 422, "invalid_request")
    err(c.put("/v1/profiles", headers=A(env)), 405, "method_not_allowed")
    err(c.get("/v1/nothing-here", headers=A(env)), 404, "not_found")


def test_path_like_names(env):
    c, root = env["c"], env["root"]
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    r = c.post("/v1/profiles", json={"display_name": "../../etc/passwd"}, headers=A(env))
    assert r.status_code == 201 and r.json()["display_name"] == "../../etc/passwd"
    pid = r.json()["id"]
    assert len(pid) == 32 and "/" not in pid
    for bad in ("..%2F..%2Fetc%2Fpasswd", "../../etc/passwd", "%2e%2e", "A" * 32, "x" * 2000):
        resp = c.get(f"/v1/profiles/{bad}", headers=A(env))
        assert resp.status_code == 404, bad
    err(c.post("/v1/profiles/..%2F..%2Fetc%2Fpasswd/verify", content=clip("speaker_a_test.flac"), headers=A(env, **FLAC)),
        404, "not_found")
    after = sorted(p.relative_to(root) for p in root.rglob("*"))
    assert after == before  # no new file: names and ids never reach the file system
    assert c.delete(f"/v1/profiles/{pid}", headers=A(env)).status_code == 204


def test_concurrent_deletes_during_verify(env):
    c = env["c"]
    pid = c.post("/v1/profiles", headers=A(env)).json()["id"]
    r = c.post(f"/v1/profiles/{pid}/enrollments", content=clip("speaker_a_1.flac"), headers=A(env, **FLAC))
    assert r.json()["status"] == "enrolled"
    results = []

    def verify():
        results.append(c.post(f"/v1/profiles/{pid}/verify", content=clip("speaker_a_test.flac"), headers=A(env, **FLAC)))

    threads = [threading.Thread(target=verify) for _ in range(6)]
    for t in threads[:3]:
        t.start()
    time.sleep(0.3)
    deleted = c.delete(f"/v1/profiles/{pid}", headers=A(env))
    for t in threads[3:]:
        t.start()
    for t in threads:
        t.join()
    assert deleted.status_code == 204
    assert {r.status_code for r in results} <= {200, 404}
    for r in results:
        if r.status_code == 404:
            err(r, 404, "not_found")
        else:
            assert r.json()["decision"] == "accept"
    assert results[-1].status_code == 404 or any(r.status_code == 404 for r in results)
    err(c.get(f"/v1/profiles/{pid}", headers=A(env)), 404, "not_found")


def test_full_queue_is_503():
    import asyncio

    from speakerid.serve.worker import EmbedWorker, Overloaded

    gate = threading.Event()

    class Slow(EmbedWorker):
        def _embed(self, waves):
            gate.wait(10)
            return np.ones((len(waves), 4), np.float32)

    w = Slow(model=None, queue_size=1, max_batch=1)

    async def run():
        first = asyncio.ensure_future(w.embed([0]))
        await asyncio.sleep(0.2)  # the worker holds the first job
        second = asyncio.ensure_future(w.embed([0]))  # waits in the queue (size 1)
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded):
            await w.embed([0])
        gate.set()
        return await first, await second

    a, b = asyncio.run(run())
    assert a.shape == b.shape == (1, 4)
    w.close()


def test_unexpected_error_is_a_json_500_without_internals(env, monkeypatch):
    from speakerid.serve import store

    def boom(self, limit, offset):
        raise RuntimeError("secret internal detail /etc/shadow")

    monkeypatch.setattr(store.TenantStore, "list", boom)
    r = env["c"].get("/v1/profiles", headers=A(env))
    err(r, 500, "internal")
    assert "secret" not in r.text and "Traceback" not in r.text


def test_keys_cli(tmp_path, capsys):
    from speakerid.cli.main import main

    assert main(["keys", "create", "--db", str(tmp_path), "--tenant", "acme"]) == 0
    key = capsys.readouterr().out.splitlines()[0]
    assert key.startswith("sid_")
    key_id = key.split("_")[1]
    assert main(["keys", "list", "--db", str(tmp_path), "--json"]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and key.split("_")[2] not in listed and '"revoked": null' in listed
    assert main(["keys", "revoke", "--db", str(tmp_path), key_id]) == 0
    assert f"revoked {key_id}" in capsys.readouterr().out
    from speakerid.serve.keys import KeyStore

    assert KeyStore(tmp_path).authenticate(key) is None
    assert main(["keys", "revoke", "--db", str(tmp_path), "000000000000"]) == 2  # unknown id: one-line error
    assert "no key with id" in capsys.readouterr().err
    assert main(["keys", "create", "--db", str(tmp_path), "--tenant", "../x"]) == 2
