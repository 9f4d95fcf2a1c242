"""``speakerid serve``: the speaker DB as an HTTP service (FastAPI + uvicorn; the ``serve`` extra).

- :mod:`speakerid.serve.keys`: API keys and tenants (``DIR/keys.sqlite``; keys stored as sha256 hashes).
- :mod:`speakerid.serve.store`: one speaker DB per tenant (``DIR/tenants/<tenant-id>.db``) holding the
  :class:`speakerid.enroll.speaker_db.SpeakerDB` tables and the service's profile tables, written in one transaction.
- :mod:`speakerid.serve.worker`: the one embedding thread, with a bounded queue and micro-batching.
- :mod:`speakerid.serve.app`: the FastAPI application (routes, auth, limits, errors, metrics).
- :mod:`speakerid.cli.serve`: the ``serve`` and ``keys`` commands.

Only :mod:`speakerid.serve.keys` and :mod:`speakerid.serve.store` import nothing outside the standard library,
numpy and speakerid; the rest needs ``pip install -e ".[serve]"``.
"""
