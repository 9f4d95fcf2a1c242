"""The ``serve`` and ``keys`` commands of ``speakerid`` (argument parsing only)."""

from __future__ import annotations

import argparse

from speakerid.cli.args import add_backend, add_threads, apply_threads, positive_int, subparser


def add_serve(sub: argparse._SubParsersAction) -> None:
    from speakerid.pretrained import DEFAULT_MODEL

    p = subparser(sub, "serve", "Serve profiles, enrolment, verify and identify over HTTP (FastAPI + uvicorn; "
                  "pip install -e '.[serve]'); OpenAPI docs at /docs, a web page at /",
                  "speakerid serve --db srv --host 127.0.0.1 --port 8000   # keys first: speakerid keys create --db srv --tenant acme")
    p.add_argument("--db", required=True, metavar="DIR", help="service dir: keys.sqlite and tenants/<id>.db (created)")
    p.add_argument("--model", "--exp", dest="model", default=DEFAULT_MODEL, metavar="EXP",
                   help=f"model: an experiment dir or a packaged name (default {DEFAULT_MODEL})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port, printed)")
    p.add_argument("--min-enroll-speech", type=float, default=6.0,
                   help="seconds of speech (after silence trimming) a profile needs to be enrolled (default 6)")
    p.add_argument("--min-clip-speech", type=float, default=1.0, help="seconds of speech one clip needs (default 1)")
    p.add_argument("--max-body-bytes", type=positive_int, default=10 * 2**20, help="request body limit (default 10 MiB)")
    p.add_argument("--max-audio-seconds", type=float, default=120.0, help="decoded audio limit per clip (default 120)")
    p.add_argument("--queue-size", type=positive_int, default=64,
                   help="embedding jobs that may wait; more get 503 (default 64)")
    p.add_argument("--max-batch", type=positive_int, default=16,
                   help="clips embedded in one batch (micro-batching; 1: none; default 16)")
    add_threads(p)
    add_backend(p)

    def run(a: argparse.Namespace) -> int:
        import uvicorn

        from speakerid.serve.app import Settings, create_app

        apply_threads(a)
        settings = Settings(max_body_bytes=a.max_body_bytes, max_audio_seconds=a.max_audio_seconds,
                            min_enroll_speech=a.min_enroll_speech, min_clip_speech=a.min_clip_speech,
                            queue_size=a.queue_size, max_batch=a.max_batch)
        from speakerid.enroll.model import SpeakerModel

        app = create_app(a.db, SpeakerModel.from_experiment(a.model, backend=a.backend), settings)
        uvicorn.run(app, host=a.host, port=a.port, log_level="info", access_log=False)
        return 0

    p.set_defaults(func=run)


def add_keys(sub: argparse._SubParsersAction) -> None:
    p = subparser(sub, "keys", "API keys of a speakerid serve dir: create (prints the key once), list, revoke",
                  "speakerid keys create --db srv --tenant acme\n  speakerid keys list --db srv\n"
                  "  speakerid keys revoke --db srv KEY_ID")
    ks = p.add_subparsers(dest="keys_command", metavar="<action>", required=True)
    c = ks.add_parser("create", help="a new key of a tenant (the tenant is created with its first key)")
    c.add_argument("--db", required=True, metavar="DIR")
    c.add_argument("--tenant", required=True)
    c.add_argument("--json", action="store_true")
    ls = ks.add_parser("list", help="keys, their tenants and whether revoked (no secrets)")
    ls.add_argument("--db", required=True, metavar="DIR")
    ls.add_argument("--json", action="store_true")
    r = ks.add_parser("revoke", help="revoke a key by its id")
    r.add_argument("--db", required=True, metavar="DIR")
    r.add_argument("key_id")
    r.add_argument("--json", action="store_true")

    def run(a: argparse.Namespace) -> int:
        import json

        from speakerid.serve.keys import KeyStore

        store = KeyStore(a.db)
        if a.keys_command == "create":
            info, key = store.create(a.tenant)
            if a.json:
                print(json.dumps({**info.to_dict(), "key": key}))
            else:
                print(key)
                print(f"key id {info.key_id}, tenant {info.tenant}: keep the key; it is not shown again", flush=True)
        elif a.keys_command == "list":
            keys = store.list()
            if a.json:
                print(json.dumps([k.to_dict() for k in keys]))
            for k in [] if a.json else keys:
                print(f"{k.key_id}\t{k.tenant}\t{'revoked' if k.revoked else 'active'}")
        else:
            info = store.revoke(a.key_id)
            print(json.dumps(info.to_dict()) if a.json else f"revoked {info.key_id} (tenant {info.tenant})")
        return 0

    p.set_defaults(func=run, catch_all=True)
