"""The FastAPI application of ``speakerid serve`` (see README, "The HTTP service").

Every route but ``/health``, ``/ready``, the page ``/`` (and ``/static``), ``/docs`` and
``/openapi.json`` needs ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``
(:mod:`speakerid.serve.keys`). Errors are ``{"error": {"code": ..., "message": ...}}``; an
unexpected one is logged and answered as a JSON 500 without internals. Decisions are
:class:`speakerid.enroll.speaker_db.SpeakerDB`'s (``verify_embedding`` / ``identify_embedding``) on
embeddings from the batched worker (:mod:`speakerid.serve.worker`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from speakerid.serve.audio_in import UploadError, decode
from speakerid.serve.faults import kill_point
from speakerid.serve.keys import KeyStore, Tenant
from speakerid.serve.store import NotEnrolled, ProfileNotFound, TenantStore
from speakerid.serve.worker import EmbedWorker, Overloaded

logger = logging.getLogger("speakerid.serve")
STATIC = Path(__file__).parent / "static"
PUBLIC = ("/health", "/ready", "/docs", "/openapi.json", "/static", "/favicon.ico")
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Settings:
    max_body_bytes: int = 10 * 2**20
    max_audio_seconds: float = 120.0
    min_enroll_speech: float = 6.0  # seconds of speech (after silence trimming) a profile needs
    min_clip_speech: float = 1.0  # seconds of speech one uploaded clip needs
    queue_size: int = 64
    max_batch: int = 16
    max_candidates: int = 1000


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


class BodyTooLarge(Exception):
    pass


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class Metrics:
    """Prometheus text by hand: requests by route/method/status, latency histogram, queue depth."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.hist: dict[str, list] = {}  # route -> [bucket counts..., sum, count]

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        h = self.hist.setdefault(route, [0] * len(BUCKETS) + [0.0, 0])
        for i, b in enumerate(BUCKETS):
            if seconds <= b:
                h[i] += 1
        h[-2] += seconds
        h[-1] += 1

    def render(self, worker: EmbedWorker) -> str:
        out = ["# HELP speakerid_http_requests_total HTTP requests by route, method and status.",
               "# TYPE speakerid_http_requests_total counter"]
        for (route, method, status), n in sorted(self.requests.items()):
            out.append(f'speakerid_http_requests_total{{route="{route}",method="{method}",status="{status}"}} {n}')
        out += ["# HELP speakerid_http_request_duration_seconds Request latency by route.",
                "# TYPE speakerid_http_request_duration_seconds histogram"]
        for route, h in sorted(self.hist.items()):
            for i, b in enumerate(BUCKETS):
                out.append(f'speakerid_http_request_duration_seconds_bucket{{route="{route}",le="{b}"}} {h[i]}')
            out.append(f'speakerid_http_request_duration_seconds_bucket{{route="{route}",le="+Inf"}} {h[-1]}')
            out.append(f'speakerid_http_request_duration_seconds_sum{{route="{route}"}} {h[-2]:.6f}')
            out.append(f'speakerid_http_request_duration_seconds_count{{route="{route}"}} {h[-1]}')
        out += ["# HELP speakerid_embed_queue_depth Embedding jobs waiting for the worker.",
                "# TYPE speakerid_embed_queue_depth gauge", f"speakerid_embed_queue_depth {worker.depth}",
                "# HELP speakerid_embed_batches_total Batches the embedding worker ran.",
                "# TYPE speakerid_embed_batches_total counter", f"speakerid_embed_batches_total {worker.batches}",
                "# HELP speakerid_embed_clips_total Clips the embedding worker embedded.",
                "# TYPE speakerid_embed_clips_total counter", f"speakerid_embed_clips_total {worker.embedded}"]
        return "\n".join(out) + "\n"


class ServeMiddleware:
    """Pure ASGI: body-size limit (Content-Length, then counted bytes) and request metrics."""

    def __init__(self, app, metrics: Metrics, max_body: int) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]
        length = dict(scope.get("headers") or []).get(b"content-length")

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                resp = _error(413, "payload_too_large", f"the request body is larger than {self.max_body} bytes")
                await resp(scope, receive, send_wrapped)
                return
            seen = [0]

            async def receive_counted():
                message = await receive()
                if message["type"] == "http.request":
                    seen[0] += len(message.get("body", b""))
                    if seen[0] > self.max_body:
                        raise BodyTooLarge()
                return message

            await self.app(scope, receive_counted, send_wrapped)
        finally:
            route = scope.get("route")
            self.metrics.observe(getattr(route, "path", "other"), scope.get("method", ""), status[0],
                                 time.perf_counter() - start)


class ProfileCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    display_name: str | None = Field(default=None, max_length=200)


def create_app(root: str | Path, model="campplus", settings: Settings | None = None, **db_options) -> FastAPI:
    """The service over ``root`` (keys.sqlite, tenants/); ``model``: a source or a SpeakerModel."""
    from speakerid.enroll.model import SpeakerModel
    from speakerid.enroll.records import UnknownSpeakerError

    settings = settings or Settings()
    root = Path(root)
    if not isinstance(model, SpeakerModel):
        model = SpeakerModel.from_experiment(model)
    keys = KeyStore(root)
    metrics = Metrics()
    worker = EmbedWorker(model, settings.queue_size, settings.max_batch)
    sample_rate = int(model.extractor.sample_rate)
    app = FastAPI(title="speakerid", version="1", description="Speaker verification service: profiles, enrolment, "
                  "verify and identify. Authenticate with `Authorization: Bearer KEY` or `X-API-Key: KEY`.")
    app.state.worker, app.state.model, app.state.settings, app.state.metrics = worker, model, settings, metrics
    app.add_middleware(ServeMiddleware, metrics=metrics, max_body=settings.max_body_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.router.add_event_handler("shutdown", worker.close)

    # ---- errors
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return _error(e.status, e.code, e.message, e.headers)

    @app.exception_handler(UploadError)
    async def _upload_error(request: Request, e: UploadError):
        return _error(e.status, e.code, str(e))

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, e: BodyTooLarge):
        return _error(413, "payload_too_large", f"the request body is larger than {settings.max_body_bytes} bytes")

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, e: Overloaded):
        return _error(503, "overloaded", str(e), {"Retry-After": "1"})

    @app.exception_handler(ProfileNotFound)
    async def _not_found(request: Request, e: ProfileNotFound):
        return _error(404, "not_found", "no such profile")

    @app.exception_handler(UnknownSpeakerError)
    async def _gone(request: Request, e):
        return _error(404, "not_found", "no such profile")

    @app.exception_handler(NotEnrolled)
    async def _not_enrolled(request: Request, e):
        return _error(409, "profile_not_enrolled", str(e))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        errs = e.errors()
        if any(err.get("type") == "json_invalid" for err in errs):
            return _error(400, "malformed_json", "the request body is not valid JSON")
        first = errs[0] if errs else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, "invalid_request", f"{where or 'request'}: {first.get('msg', 'invalid')}"[:300])

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
        return _error(e.status_code, codes.get(e.status_code, "http_error"), str(e.detail)[:300])

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal", "internal error (logged on the server)")

    # ---- auth
    async def tenant(request: Request) -> Tenant:
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key")
        if not key:
            raise ApiError(401, "unauthorized", "an API key is needed: Authorization: Bearer KEY or X-API-Key: KEY",
                           {"WWW-Authenticate": "Bearer"})
        t = await run_in_threadpool(keys.authenticate, key)
        if t is None:
            raise ApiError(401, "unauthorized", "invalid or revoked API key", {"WWW-Authenticate": "Bearer"})
        return t

    def store(t: Tenant) -> TenantStore:
        return TenantStore(root, t.id, model, settings.min_enroll_speech, **db_options)

    def profile_out(p: dict) -> dict:
        p["seconds_needed"] = round(max(0.0, settings.min_enroll_speech - p["speech_seconds"]), 3)
        return p

    async def audio_clip(request: Request) -> tuple[object, dict]:
        """(clip, form fields) of a raw audio/* body or a multipart 'file' (or 'audio') field."""
        ctype = request.headers.get("content-type", "")
        main = ctype.split(";")[0].strip().lower()
        fields: dict = {}
        if main.startswith("audio/") or main == "application/octet-stream":
            data = b"".join([chunk async for chunk in request.stream()])
            part_type = main
        elif main == "multipart/form-data":
            data = b"".join([chunk async for chunk in request.stream()])
            request._body = data  # form() parses what was read (the size already counted)
            try:
                form = await request.form(max_files=2, max_fields=20)
            except BodyTooLarge:
                raise
            except Exception:  # noqa: BLE001 - python-multipart's parse errors
                raise ApiError(400, "bad_multipart", "malformed multipart/form-data body") from None
            upload = form.get("file") or form.get("audio")
            if upload is None or isinstance(upload, str):
                raise ApiError(400, "bad_multipart", "multipart body without a 'file' field holding the audio")
            data = await upload.read()
            part_type = (upload.content_type or "").lower()
            fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        else:
            raise ApiError(415, "unsupported_media_type", "send the audio as the body with an audio/* content type "
                           "(audio/wav, audio/flac, audio/ogg, audio/mpeg) or as multipart/form-data field 'file'")
        clip = await run_in_threadpool(decode, data, part_type, sample_rate, settings.max_audio_seconds,
                                       settings.min_clip_speech)
        return clip, fields

    async def embed(clip) -> object:
        return (await worker.embed([clip.wave]))[0]

    # ---- public
    @app.get("/health", tags=["service"])
    async def health():
        return {"status": "ok"}

    @app.get("/ready", tags=["service"])
    async def ready():
        if not worker._thread.is_alive():
            return _error(503, "not_ready", "the embedding worker is not running")
        return {"status": "ready", "model": model.source, "fingerprint": model.fingerprint[:12],
                "queue_depth": worker.depth}

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse)
    async def metrics_text(t: Tenant = Depends(tenant)):
        return PlainTextResponse(metrics.render(worker), media_type="text/plain; version=0.0.4")

    # ---- profiles
    @app.post("/v1/profiles", status_code=201, tags=["profiles"])
    async def create_profile(body: ProfileCreate | None = None, t: Tenant = Depends(tenant)):
        name = None if body is None else body.display_name
        if name is not None and any(ord(c) < 32 for c in name):
            raise ApiError(422, "invalid_request", "display_name: control characters are not allowed")
        return profile_out(await run_in_threadpool(store(t).create, name))

    @app.get("/v1/profiles", tags=["profiles"])
    async def list_profiles(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0),
                            t: Tenant = Depends(tenant)):
        items, total = await run_in_threadpool(store(t).list, limit, offset)
        nxt = offset + len(items)
        return {"items": [profile_out(p) for p in items], "total": total, "limit": limit, "offset": offset,
                "next_offset": nxt if nxt < total else None}

    @app.get("/v1/profiles/{profile_id}", tags=["profiles"])
    async def get_profile(profile_id: str, t: Tenant = Depends(tenant)):
        return profile_out(await run_in_threadpool(store(t).get, profile_id))

    @app.delete("/v1/profiles/{profile_id}", status_code=204, tags=["profiles"])
    async def delete_profile(profile_id: str, t: Tenant = Depends(tenant)):
        await run_in_threadpool(store(t).delete, profile_id)
        return Response(status_code=204)

    @app.post("/v1/profiles/{profile_id}/reset", tags=["enrolment"])
    async def reset_profile(profile_id: str, t: Tenant = Depends(tenant)):
        return profile_out(await run_in_threadpool(store(t).reset, profile_id))

    @app.post("/v1/profiles/{profile_id}/enrollments", tags=["enrolment"],
              openapi_extra={"requestBody": {"content": {"audio/*": {"schema": {"type": "string", "format": "binary"}},
                                                         "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}}}}})
    async def enroll(profile_id: str, request: Request, t: Tenant = Depends(tenant)):
        s = store(t)
        await run_in_threadpool(s.get, profile_id)  # 404 before any audio work
        clip, _ = await audio_clip(request)
        emb = await embed(clip)
        kill_point("after_embedding")
        p = await run_in_threadpool(s.add_enrollment, profile_id, emb, clip.speech_seconds)
        kill_point("after_commit")
        out = profile_out(p)
        out["clip_speech_seconds"] = round(clip.speech_seconds, 3)
        return JSONResponse(out, status_code=201)

    def _verify(s: TenantStore, pid: str, emb):
        db = s.speaker_db()
        try:
            return db.verify_embedding(pid, emb, "<upload>")
        finally:
            db.close()

    @app.post("/v1/profiles/{profile_id}/verify", tags=["decisions"],
              openapi_extra={"requestBody": {"content": {"audio/*": {"schema": {"type": "string", "format": "binary"}}}}})
    async def verify(profile_id: str, request: Request, t: Tenant = Depends(tenant)):
        s = store(t)
        p = await run_in_threadpool(s.get, profile_id)
        if p["status"] != "enrolled":
            raise NotEnrolled(f"profile {profile_id} is still enrolling ({p['speech_seconds']:.1f} s of speech of "
                              f"{settings.min_enroll_speech:g} s)")
        clip, _ = await audio_clip(request)
        emb = await embed(clip)
        r = await run_in_threadpool(_verify, s, profile_id, emb)
        return {"profile_id": profile_id, "decision": "accept" if r.accept else "reject", "score": r.score,
                "llr": r.llr, "asnorm": r.asnorm, "backend_score": r.backend_score, "decision_score": r.decision_score,
                "score_kind": r.score_kind,
                "threshold": r.threshold, "threshold_source": r.threshold_source, "rule": r.rule,
                "speech_seconds": round(clip.speech_seconds, 3)}

    def _identify(s: TenantStore, emb, candidates: list[str] | None, top_k: int) -> dict:
        from speakerid.enroll.decision import Match
        from speakerid.enroll.records import SpeakerDBError

        enrolled = s.enrolled_ids(candidates)
        db = s.speaker_db()
        try:
            if not enrolled:
                rule = db.decision()
                return {"decision": "unknown", "candidates": [], "threshold": rule.threshold,
                        "threshold_source": rule.source, "score_kind": rule.kind}
            if candidates is None:
                try:
                    r = db.identify_embedding(emb, top_k, test="<upload>")
                except SpeakerDBError as e:
                    if "no speakers enrolled" not in str(e):
                        raise
                    return _identify(s, emb, [], top_k)
                matches, answer, rule = r.candidates, r.decision, (r.threshold, r.threshold_source, r.score_kind)
            else:  # a subset: the same scores as identify (verify_embedding per candidate), ranked here
                results = []
                for pid in enrolled:
                    try:
                        results.append(db.verify_embedding(pid, emb, "<upload>"))
                    except UnknownSpeakerError:  # deleted meanwhile
                        continue
                results.sort(key=lambda v: -v.decision_score)
                matches = [Match(v.speaker, v.score, v.llr, v.asnorm, v.decision_score, v.accept, v.backend_score)
                           for v in results[:top_k]]
                answer = matches[0].speaker if matches and matches[0].accept else "unknown"
                rule = db.decision()
                rule = (rule.threshold, rule.source, rule.kind)
        finally:
            db.close()
        names = {}
        for m in matches:
            try:
                names[m.speaker] = s.get(m.speaker)["display_name"]
            except ProfileNotFound:
                names[m.speaker] = None
        return {"decision": answer,
                "candidates": [{"profile_id": m.speaker, "display_name": names[m.speaker], "score": m.score,
                                "llr": m.llr, "asnorm": m.asnorm, "backend_score": m.backend_score,
                                "decision_score": m.decision_score,
                                "accept": m.accept} for m in matches],
                "threshold": rule[0], "threshold_source": rule[1], "score_kind": rule[2]}

    @app.post("/v1/identify", tags=["decisions"],
              openapi_extra={"requestBody": {"content": {"audio/*": {"schema": {"type": "string", "format": "binary"}}}}})
    async def identify(request: Request, top_k: int = Query(5, ge=1, le=100),
                       candidates: list[str] | None = Query(None, description="profile ids (repeat or comma-separate); "
                                                            "default: all of the tenant's enrolled profiles"),
                       t: Tenant = Depends(tenant)):
        s = store(t)
        clip, fields = await audio_clip(request)
        if candidates is None and fields.get("candidates"):
            candidates = [fields["candidates"]]
        ids = None
        if candidates is not None:
            ids = sorted({c.strip() for part in candidates for c in part.split(",") if c.strip()})
            if len(ids) > settings.max_candidates:
                raise ApiError(422, "invalid_request", f"at most {settings.max_candidates} candidates")
            for pid in ids:
                await run_in_threadpool(s.get, pid)  # another tenant's or unknown id: 404
        emb = await embed(clip)
        out = await run_in_threadpool(_identify, s, emb, ids, top_k)
        out["speech_seconds"] = round(clip.speech_seconds, 3)
        return out

    return app

