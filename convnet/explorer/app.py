"""The explorer's ASGI app (Starlette): the JSON API over an `Explorer`, and the page with its assets.

    GET  /                                  the page (convnet/explorer/static/index.html)
    GET  /static/{name}                     its script and style sheet (a fixed list, read when the app is made)
    GET  /api/model                         the layer graph: shapes, parameters, multiply-adds, receptive fields
    POST /api/predict                       top-5 classes for an image (multipart field `image`, or `sample`)
    POST /api/featuremaps                   every spatial layer's feature maps for an image
    POST /api/explain                       Grad-CAM, gradient, SmoothGrad or occlusion map for an image
    GET  /api/filters/{layer}               a Conv2D layer's kernels
    GET  /api/receptive-field/{layer}       the input box a unit (?row=&col=) of a layer sees
    GET  /api/run                           training curves, metrics, confusion matrix, most confident mistakes
    GET  /api/samples                       the sample photos and the run's test images, by id
    GET  /api/samples/{id}.png              one of them as a PNG file
    POST /api/playground                    the seed's 7x7 kernel on a sample image (JSON body)

Every answer is JSON; a bad request gets a 4xx status and {"error": "what is wrong"}, an unexpected failure
500 and {"error": ...} (the traceback goes to the server's log, never to the client). The model runs in one
worker thread, never in the event loop; at most `max_pending` requests wait for it (503 beyond). Request
bodies are limited to `max_upload_bytes` (413) while they are read; images are decoded with the explorer's
pixel limit. No request names a file on the server: images are uploaded or named by sample id, the assets are
a fixed list held in memory. CORS is off (no Access-Control headers); with `allowed_hosts`, requests for other
Host names get 400 (a DNS-rebinding page cannot reach a server on 127.0.0.1).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import math
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, MutableMapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from convnet._internal.checks import check_int
from convnet.explorer.session import Explorer, NotFound

__all__ = ["create_app", "DEFAULT_MAX_UPLOAD_BYTES", "DEFAULT_MAX_PENDING", "STATIC_FILES"]

DEFAULT_MAX_UPLOAD_BYTES = 16 * 1024 * 1024  # a request body larger than this is refused while it is read
DEFAULT_MAX_PENDING = 64  # requests queued for the model; more get 503
STATIC_FILES = {"index.html": "text/html; charset=utf-8", "explorer.js": "text/javascript; charset=utf-8",
                "explorer.css": "text/css; charset=utf-8"}  # every asset the page has, with its type
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                                 b"script-src 'self'; connect-src 'self'; object-src 'none'; frame-ancestors 'none'"),
]
_STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
log = logging.getLogger("convnet.explorer")


class ApiError(Exception):
    """A request the API refuses: the status and the message sent as {"error": message}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinity replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


class ApiResponse(JSONResponse):
    """JSON with NaN and infinities as null, never as the invalid `NaN` token."""

    def render(self, content: Any) -> bytes:
        return json.dumps(_finite(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _error(status: int, message: str) -> ApiResponse:
    return ApiResponse({"error": message}, status_code=status)


class _Guard:
    """ASGI middleware: security headers on every answer, and (with `allowed_hosts`) a JSON 400 for a request
    whose Host header names another server."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str] | None):
        self.app = app
        self.allowed = None if allowed_hosts is None or "*" in allowed_hosts else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.allowed is not None:
            host = Headers(scope=scope).get("host", "").lower()
            name = host.split("]")[0] + "]" if host.startswith("[") else host.split(":")[0]  # "[::1]:8000" -> "[::1]"
            if name not in self.allowed:
                response = _error(400, f"the Host header {host!r} is not one this server answers to; open the URL "
                                       f"`convnet explore` printed")
                await response(scope, receive, send)
                return

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _Worker:
    """One thread that runs every call on the model, in order; at most `max_pending` calls wait."""

    def __init__(self, max_pending: int):
        self.max_pending = max_pending
        self.pending = 0
        self.lock = threading.Lock()
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None

    async def run(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            if self.pending >= self.max_pending:
                raise ApiError(503, f"busy: {self.pending} requests are waiting for the model; try again shortly")
            self.pending += 1
            if self.executor is None:
                self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="convnet-explorer")
            executor = self.executor
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, functools.partial(function, *args,
                                                                                                **kwargs))
        finally:
            with self.lock:
                self.pending -= 1

    def close(self) -> None:
        with self.lock:
            executor, self.executor = self.executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused with 413 as soon as it exceeds `limit` bytes (declared or sent)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request is {int(declared)} bytes, more than this server's limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request is more than this server's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _form(request: Request, limit: int) -> dict[str, Any]:
    """The form fields of a multipart or urlencoded body: str values, and at most one file, as (bytes, name)."""
    body = await _read_body(request, limit)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    parser: MultiPartParser | FormParser
    if kind == "multipart/form-data":
        parser = MultiPartParser(request.headers, stream(), max_files=1, max_fields=16)
    elif kind == "application/x-www-form-urlencoded":
        parser = FormParser(request.headers, stream(), max_fields=16)
    else:
        raise ApiError(415, f"send the image as multipart/form-data (field `image`, a file) or name a sample "
                            f"(field `sample`). Received content type {kind or 'none'!r}")
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise ApiError(400, f"malformed form data: {error.message}") from None
    fields: dict[str, Any] = {}
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                fields[key] = (await value.read(), value.filename or "upload")
            else:
                fields[key] = value
    finally:
        await form.close()
    return fields


def _optional_int(fields: dict[str, Any], name: str) -> int | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.strip().lstrip("-").isdigit():
        raise ApiError(400, f"`{name}` must be an integer. Received: {name}={value!r}")
    return int(value)


def _query_int(request: Request, name: str, default: int | None = None) -> int:
    value = request.query_params.get(name)
    if value is None:
        if default is None:
            raise ApiError(400, f"the query parameter `{name}` (an integer) is required")
        return default
    if not value.strip().lstrip("-").isdigit():
        raise ApiError(400, f"`{name}` must be an integer. Received: {name}={value!r}")
    return int(value)


def _image(explorer: Explorer, fields: dict[str, Any]) -> Any:
    """The request's image: the uploaded file `image`, or the sample named by `sample` (exactly one)."""
    upload, sample = fields.get("image"), fields.get("sample")
    if (upload is None) == (sample is None):
        raise ApiError(400, "send one image: a file in the multipart field `image`, or a sample id in the field "
                            "`sample` (see GET /api/samples)")
    if sample is not None:
        if not isinstance(sample, str):
            raise ApiError(400, "`sample` must be a sample id such as photo-china or test-0, not a file")
        return explorer.sample(sample)
    if not isinstance(upload, tuple):
        raise ApiError(400, "`image` must be a file (multipart/form-data with a filename)")
    data, filename = upload
    return explorer.upload(data, filename)


def _read_static() -> dict[str, bytes]:
    assets = {}
    for name in STATIC_FILES:
        with open(os.path.join(_STATIC, name), "rb") as stream:
            assets[name] = stream.read()
    return assets


def create_app(explorer: Explorer, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_pending: int = DEFAULT_MAX_PENDING, allowed_hosts: Sequence[str] | None = None) -> Starlette:
    """The explorer's ASGI app for `explorer` (see the module docstring for the routes).

    Args:
        explorer: what to show (`convnet.explorer.load_explorer`).
        max_upload_bytes: request bodies above this are refused with 413.
        max_pending: requests that may wait for the model at once; more get 503.
        allowed_hosts: the Host names the app answers to ("127.0.0.1", "localhost"); None or "*" for any.

    Raises:
        TypeError: `explorer` is not an Explorer. ValueError: a limit out of range.
    """
    if not isinstance(explorer, Explorer):
        raise TypeError(f"`explorer` must be a convnet.explorer.Explorer. Received: explorer={type(explorer).__name__}")
    max_upload_bytes = check_int("max_upload_bytes", max_upload_bytes, minimum=1024)
    max_pending = check_int("max_pending", max_pending, minimum=1)
    worker = _Worker(max_pending)
    assets = _read_static()

    def endpoint(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        """`handler`'s dict as JSON; its refusals as {"error"} with their status."""
        @functools.wraps(handler)
        async def wrapped(request: Request) -> Response:
            try:
                answer = await handler(request)
            except ApiError as error:
                return _error(error.status, error.message)
            except NotFound as error:
                return _error(404, str(error.args[0]) if error.args else "not found")
            except (ValueError, TypeError) as error:  # convnet's checks: what is wrong, and what was received
                return _error(400, str(error))
            except Exception:
                log.exception("explorer: %s %s failed", request.method, request.url.path)
                return _error(500, "internal error; the server's log has the details")
            return answer if isinstance(answer, Response) else ApiResponse(answer)
        return wrapped

    async def page(request: Request) -> Response:
        return Response(assets["index.html"], media_type=STATIC_FILES["index.html"],
                        headers={"cache-control": "no-cache"})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in assets:
            raise ApiError(404, f"no such asset: {name!r}")
        return Response(assets[name], media_type=STATIC_FILES[name], headers={"cache-control": "no-cache"})

    async def model(request: Request) -> Any:
        return await worker.run(explorer.model_info)

    async def predict(request: Request) -> Any:
        fields = await _form(request, max_upload_bytes)
        return await worker.run(lambda: explorer.predict(_image(explorer, fields)))

    async def featuremaps(request: Request) -> Any:
        fields = await _form(request, max_upload_bytes)
        layers = [name for name in (fields.get("layers") or "").split(",") if name] or None
        max_maps = _optional_int(fields, "max_maps")
        return await worker.run(lambda: explorer.feature_maps(_image(explorer, fields), layers,
                                                              **({"max_maps": max_maps} if max_maps else {})))

    async def explain(request: Request) -> Any:
        fields = await _form(request, max_upload_bytes)
        options = {key: _optional_int(fields, key) for key in ("class_index", "samples", "patch", "stride")}
        method, layer = fields.get("method") or "grad_cam", fields.get("layer") or None
        return await worker.run(lambda: explorer.explain(_image(explorer, fields), method=method, layer=layer,
                                                         **options))

    async def filters(request: Request) -> Any:
        layer = request.path_params["layer"]
        max_filters = _query_int(request, "max_filters", 64)
        max_channels = _query_int(request, "max_channels", 16)
        return await worker.run(explorer.filters, layer, max_filters, max_channels)

    async def receptive_field(request: Request) -> Any:
        layer = request.path_params["layer"]
        row, col = _query_int(request, "row"), _query_int(request, "col")
        return await worker.run(explorer.receptive_field, layer, row, col)

    async def run(request: Request) -> Any:
        return await worker.run(explorer.run_summary)

    async def samples(request: Request) -> Any:
        offset, limit = _query_int(request, "offset", 0), _query_int(request, "limit", 48)
        return await worker.run(explorer.samples, offset, limit)

    async def sample_png(request: Request) -> Any:
        data = await worker.run(explorer.sample_png, request.path_params["sample_id"])
        return Response(data, media_type="image/png", headers={"cache-control": "max-age=3600"})

    async def playground(request: Request) -> Any:
        body = await _read_body(request, 64 * 1024)
        try:
            options = json.loads(body or b"{}")
        except ValueError:
            raise ApiError(400, "the body must be JSON: {\"sample\", \"kernel\", \"stride\", \"padding\"}") from None
        if not isinstance(options, dict):
            raise ApiError(400, f"the body must be a JSON object. Received: {type(options).__name__}")
        unknown = sorted(set(options) - {"sample", "kernel", "stride", "padding"})
        if unknown:
            raise ApiError(400, f"unknown field {unknown[0]!r}; the fields: sample, kernel, stride, padding")
        return await worker.run(explorer.playground, options.get("sample", "photo-china"), options.get("kernel"),
                                options.get("stride", 1), options.get("padding", "SAME"))

    async def not_found(request: Request, error: Exception) -> Response:
        status = error.status_code if isinstance(error, HTTPException) else 404
        detail = error.detail if isinstance(error, HTTPException) else "not found"
        if status == 404:
            detail = f"no such page or endpoint: {request.url.path}"
        return _error(status, str(detail))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        worker.close()

    routes = [Route("/", page), Route("/static/{name}", endpoint(static)),
              Route("/api/model", endpoint(model)),
              Route("/api/predict", endpoint(predict), methods=["POST"]),
              Route("/api/featuremaps", endpoint(featuremaps), methods=["POST"]),
              Route("/api/explain", endpoint(explain), methods=["POST"]),
              Route("/api/filters/{layer:path}", endpoint(filters)),
              Route("/api/receptive-field/{layer:path}", endpoint(receptive_field)),
              Route("/api/run", endpoint(run)),
              Route("/api/samples", endpoint(samples)),
              Route("/api/samples/{sample_id}.png", endpoint(sample_png)),
              Route("/api/playground", endpoint(playground), methods=["POST"])]
    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found}, lifespan=lifespan)
    app.add_middleware(_Guard, allowed_hosts=allowed_hosts)
    app.state.explorer, app.state.worker = explorer, worker
    return app
