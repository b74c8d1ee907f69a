"""The HTTP API and the explorer page: `create_app(translator, settings)`.

    POST /translate   {"text": ...} or {"texts": [...]}, optional beam, n_best, attention
                      -> {"results": [one mt.serve.results object per text], "beam", "n_best", "ms"}
    GET  /health      model loaded, version, languages, checkpoint, limits, queue and batching figures
    GET  /            the attention explorer (mt/serve/static: no build step, nothing from a CDN)

Every error is JSON {"error": "..."}: 4xx for the client's mistakes (mt.serve.schema), 503 when
the queue is full, and a bare 500 for anything unexpected (logged with its traceback, never sent).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mt import __version__
from mt.align.extract import model_dims
from mt.config import ServeConfig, validate
from mt.serve.batcher import Batcher, Unavailable
from mt.serve.decoder import Answer, translate_requests
from mt.serve.schema import REQUEST_SCHEMA, RequestError, TranslateRequest, parse_translate_request
from mt.translate import Translator

log = logging.getLogger("mt.serve")
STATIC = Path(__file__).parent / "static"
# The page loads only its own files: no inline script, no third-party origin.
PAGE_POLICY = "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"


def create_app(translator: Translator, settings: ServeConfig, checkpoint: Path | str | None = None) -> FastAPI:
    """The app for one loaded model. Its batcher runs while the app's lifespan does (uvicorn, or
    `with TestClient(app)`)."""
    validate(settings)
    batcher: Batcher[TranslateRequest, Answer] = Batcher(partial(translate_requests, translator), settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN; /openapi.json stays.
    app = FastAPI(title="mt", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher
    add_error_handlers(app)
    app.add_middleware(UnexpectedErrors)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    about = model_info(translator, checkpoint)

    body_schema = {"required": True, "content": {"application/json": {"schema": REQUEST_SCHEMA}}}

    @app.post("/translate", openapi_extra={"requestBody": body_schema})
    async def translate(request: Request) -> JSONResponse:
        started = time.perf_counter()
        body = await read_body(request, settings.max_body_bytes)
        parsed = parse_translate_request(body, settings, translator.cfg)
        results = await batcher.submit(parsed)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        return JSONResponse({"results": results, "beam": parsed.beam, "n_best": parsed.n_best, "ms": elapsed_ms})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            **about,
            "defaults": {"beam": translator.cfg.beam_size, "n_best": 1},
            "limits": {
                "max_chars": settings.max_chars,
                "max_texts": settings.max_texts,
                "max_beam": settings.max_beam,
                "max_body_bytes": settings.max_body_bytes,
            },
            "queue": {"waiting": batcher.waiting, "capacity": settings.queue_size, "decoding": batcher.busy},
            "batching": {"enabled": settings.batching, "window_ms": settings.batch_window_ms, **asdict(batcher.stats)},
        }

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})

    return app


def model_info(translator: Translator, checkpoint: Path | str | None) -> dict[str, Any]:
    loaded = translator.loaded
    layers, heads = model_dims(loaded)
    return {
        "status": "ok",
        "model_loaded": True,
        "version": __version__,
        "src_lang": loaded.src_lang,
        "tgt_lang": loaded.tgt_lang,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "model": {"decoder_layers": layers, "heads": heads, "alignment": translator.align.describe()},
    }


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to be larger than `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the request body has {declared} bytes; at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the request body has more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    async def request_error(_: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, RequestError)
        return error(err.status, err.message)

    async def unavailable(_: Request, err: Exception) -> JSONResponse:
        return error(503, str(err), {"Retry-After": "1"})

    async def http_error(_: Request, err: Exception) -> JSONResponse:  # 404, 405 from the router
        assert isinstance(err, HTTPException)
        return error(err.status_code, str(err.detail), err.headers)

    async def validation_error(_: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, RequestValidationError)
        first = err.errors()[0] if err.errors() else {}
        return error(422, f"{'.'.join(map(str, first.get('loc', ())))}: {first.get('msg', 'invalid request')}")

    app.add_exception_handler(RequestError, request_error)
    app.add_exception_handler(Unavailable, unavailable)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


class UnexpectedErrors:
    """Anything no handler expects becomes a JSON 500 without details; the traceback goes to the
    log once. (Starlette's own catch-all re-raises after answering, so the server would log it again.)"""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception:
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if started:  # too late for another answer: drop the connection
                raise
            await error(500, "internal server error (logged on the server)")(scope, receive, send)
