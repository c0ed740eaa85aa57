"""The ASGI app, built from the contract's route tables.

Each :class:`Route` becomes a FastAPI endpoint whose signature declares its path parameters and body
model, so validation and ``/openapi.json`` come from the contract itself. The endpoint looks up the
API's router on the running stack and calls the named handler; an async-iterator result is sent as SSE.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib.util
import inspect
import logging
import re
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import pydantic.warnings
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json
from starlette.routing import Match
from starlette.routing import Route as StarletteRoute

import underlay
from underlay.api.errors import InvalidRequestError, UnderlayError
from underlay.api.routes import BinaryContent, Route, WireDialect
from underlay.core.api_plugins import check as check_apis
from underlay.core.api_plugins import discover as discover_apis
from underlay.core.apis import stability_of
from underlay.core.config import RunConfig
from underlay.core.stack import Stack, redact
from underlay.server import access, auth, console, quotas, telemetry
from underlay.server.dialects import DialectMiddleware
from underlay.server.errors import install_error_handlers, validation_message
from underlay.server.middleware import RequestContextMiddleware
from underlay.server.multipart import FORM_OVERHEAD_BYTES, multipart_call
from underlay.server.sse import sse_frames

log = logging.getLogger("underlay.server")

_PATH_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::path)?}")
_RATE_LIMIT_HEADERS = [
    f"x-ratelimit-{part}-{kind}" for part in ("limit", "remaining", "reset") for kind in ("requests", "tokens")
]
_BRACKET_KEY = re.compile(r"^([a-zA-Z_][a-zA-Z0-9_]*)\[([^\]]+)\]$")


class JSONBytesResponse(Response):
    media_type = "application/json"


def encode_result(result: Any, status_code: int = 200, dialect: WireDialect | None = None) -> Response:
    if isinstance(result, Response):
        return result
    if isinstance(result, BinaryContent):
        return binary_response(result)
    if hasattr(result, "__aiter__") and not isinstance(result, BaseModel | dict | list):
        return StreamingResponse(
            sse_frames(result, dialect=dialect),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return JSONBytesResponse(content=to_json(result, by_alias=True), status_code=status_code)


def binary_response(content: BinaryContent) -> StreamingResponse:
    """Raw bytes with their type, size and a download name (RFC 6266, UTF-8 names included)."""
    headers: dict[str, str] = {}
    if content.size is not None:
        headers["content-length"] = str(content.size)
    if content.filename is not None:
        ascii_name = content.filename.encode("ascii", "replace").decode().replace("\\", "_").replace('"', "_")
        ascii_name = "".join(c if 32 <= ord(c) < 127 else "_" for c in ascii_name)
        headers["content-disposition"] = (
            f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(content.filename, safe='')}"
        )
    return StreamingResponse(content.chunks, media_type=content.media_type, headers=headers)


def parse_query(model: type[BaseModel], request: Request) -> BaseModel:
    """Query string → model; ``metadata[key]=value`` pairs become a dict, as OpenAI sends them."""
    data: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        match = _BRACKET_KEY.match(key)
        if key.endswith("[]"):  # include[]=a&include[]=b, as OpenAI's SDK sends lists
            data.setdefault(key[:-2], []).append(value)
        elif match:
            data.setdefault(match.group(1), {})[match.group(2)] = value
        else:
            data[key] = value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message(list(exc.errors()))
        raise InvalidRequestError(message, param=param) from None


_BODY_PARAM = "params"
"""The keyword a route's body model reaches the endpoint by (FastAPI's body parameter)."""

_UNUSED_ALIAS = getattr(pydantic.warnings, "UnsupportedFieldAttributeWarning", None)  # pydantic >= 2.12
if _UNUSED_ALIAS is not None:
    # FastAPI builds a body parameter's validator from ``Annotated[Model, Body(alias="params")]`` and
    # silences pydantic's notice that the alias has no effect there. Contract models defer their build
    # (underlay.api.base), so that validator is built by the route's first request, outside FastAPI's
    # filter: the same harmless notice, silenced here for that parameter alone.
    warnings.filterwarnings(
        "ignore", message=f"The 'alias' attribute with value '{_BODY_PARAM}' ", category=_UNUSED_ALIAS
    )


def make_endpoint(api: str, route: Route) -> Any:
    path_params = _PATH_PARAM.findall(route.path)
    handler_name = route.handler.__name__  # the Protocol method; the running router has the same name
    query_model = route.query

    async def endpoint(request: Request, **kwargs: Any) -> Response:
        router = request.app.state.stack.routers[api]
        if query_model is not None:
            kwargs["query"] = parse_query(query_model, request)
        if route.multipart:
            result = await multipart_call(request, route, getattr(router, handler_name), kwargs)
        else:
            result = await getattr(router, handler_name)(**kwargs)
        return encode_result(result, route.status_code, route.dialect)

    parameters = [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)]
    parameters += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=str) for name in path_params]
    if route.body is not None and not route.multipart:  # multipart bodies are parsed as they stream in
        parameters.append(inspect.Parameter(_BODY_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=route.body))
    endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    endpoint.__name__ = f"{api}_{handler_name}"
    return endpoint


def _all_routes(config: RunConfig, stack: Stack | None = None) -> list[tuple[str, Route]]:
    """Every switched-on API's routes, built-in or from a package (see :mod:`underlay.core.api_plugins`).

    Raises the one-line :class:`ConfigError` for an unknown or broken API and for two claiming one route.
    A started stack has done that discovery and check already: its table is reused rather than the
    installed distributions scanned again (which is most of the cost).
    """
    if stack is not None and stack.started:
        return [(api, route) for api in stack.apis for route in stack.api_table[api].routes]
    catalog = discover_apis(config)
    return [(api, route) for api in check_apis(config, catalog) for route in catalog.apis[api].entry.routes]


def create_app(config: RunConfig, stack: Stack | None = None) -> FastAPI:
    """Build the app; the stack starts in the lifespan (or is given, already started, by a caller)."""
    routes = _all_routes(config, stack)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = stack is None
        running = stack or Stack(config)
        if own:
            await running.start()
        app.state.stack = running
        try:
            yield
        finally:
            try:
                if mcp_server is not None:
                    await mcp_server.aclose()
            finally:
                if own:
                    await running.stop()

    app = FastAPI(
        title="Underlay",
        version=underlay.__version__,
        description="OpenAI-compatible APIs for AI agents over pluggable providers.",
        lifespan=lifespan,
        # Our own spans and metrics (underlay.core.telemetry) cover every route; FastAPI's built-in ones
        # would switch on whenever anything sets a global tracer provider and count every request twice.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    for api, route in routes:
        app.add_api_route(
            route.path,
            make_endpoint(api, route),
            methods=[route.method],
            summary=route.summary or None,
            tags=list(route.tags) or [api],
            response_model=None,
            status_code=route.status_code,
            openapi_extra=_multipart_openapi(route) if route.multipart else None,
        )
    _add_platform_routes(app, routes)
    console.install(app, config)  # after every API route: `/` and `/console/*` never shadow one
    mcp_server = _mount_mcp(app, config)
    # Layers, added innermost first: dialects → request context → CORS → telemetry → auth → route policy →
    # quotas → endpoint. CORS answers preflights before auth; telemetry sees 401s and 429s too.
    quotas.install(app, config)
    access.install(app, config)
    auth.install(app, config)
    telemetry.install(app, config)
    if config.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.server.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            # So a page can read its request id and rate-limit state (quotas.py sets these headers).
            expose_headers=["x-request-id", "retry-after", *_RATE_LIMIT_HEADERS],
        )
    app.add_middleware(
        RequestContextMiddleware,
        max_request_bytes=config.server.max_request_bytes,
        route_limits=_route_body_limits(config, routes),
    )
    dialects = {r.path: r.dialect for _, r in routes if r.dialect is not None}
    if dialects:  # outermost: it reshapes the errors of every layer above on those routes
        app.add_middleware(DialectMiddleware, dialects=dialects)  # type: ignore[arg-type]
    return app


class _LazyMcp:
    """``/mcp``, built on its first request.

    The MCP SDK takes most of a second to import, and most servers never see an MCP client, so
    start-up stays fast and the endpoint (and its session manager) starts when first used.

    Why a task of its own: the session manager's ``run()`` holds an anyio task group, whose cancel
    scope must be left by the task that entered it. Entered from the first MCP request and left from
    the lifespan, it raised on shutdown ("Application shutdown failed") and the stack never stopped.
    So one owner task enters it, parks until ``aclose`` and leaves it itself.
    """

    def __init__(self, app: FastAPI, host: str) -> None:
        self._app = app
        self._host = host
        self._inner: Any = None
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._owner: asyncio.Task[None] | None = None

    async def _build(self) -> Any:
        async with self._lock:
            if self._inner is None:
                from underlay.server.mcp import UnderlayMcpServer

                server = UnderlayMcpServer(lambda: self._app.state.stack, host=self._host)
                started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                # A fresh context: the owner outlives this request, so it must not carry its principal.
                self._owner = asyncio.create_task(
                    self._own(server, started), name="underlay-mcp-sessions", context=contextvars.Context()
                )
                await started  # re-raises when the session manager failed to start
                self._inner = server.routes[0].app
        return self._inner

    async def _own(self, server: Any, started: asyncio.Future[None]) -> None:
        try:
            async with server.lifespan():
                started.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
                return
            raise

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        inner = self._inner or await self._build()
        await inner(scope, receive, send)

    async def aclose(self) -> None:
        """Stop the session manager (ends any MCP request still in flight), from its own task."""
        self._stop.set()
        owner, self._owner = self._owner, None
        if owner is not None:
            try:
                await owner
            except Exception:
                log.exception("/mcp: the session manager failed while stopping")


def _mount_mcp(app: FastAPI, config: RunConfig) -> _LazyMcp | None:
    """Underlay's own MCP server at ``/mcp`` (see :mod:`underlay.server.mcp`); off without the ``mcp`` SDK."""
    if importlib.util.find_spec("mcp") is None:
        log.info("/mcp is off: the mcp package is not installed")
        return None
    lazy = _LazyMcp(app, config.server.host)
    app.router.routes.append(
        _McpRoute("/mcp", endpoint=lazy, methods=["GET", "POST", "DELETE"], include_in_schema=False)
    )
    return lazy


class _McpRoute(StarletteRoute):
    """The ``/mcp`` route. It leaves itself in the scope as FastAPI's own routes do, so the telemetry
    layer labels its spans and metrics ``/mcp`` rather than ``<unmatched>``."""

    def matches(self, scope: Any) -> tuple[Match, Any]:
        match, child_scope = super().matches(scope)
        if match != Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def _route_body_limits(config: RunConfig, routes: list[tuple[str, Route]]) -> dict[tuple[str, str], tuple[int, str]]:
    """Per-route body limits that replace ``server.max_request_bytes`` (e.g. uploads), from the config.

    A multipart route's setting bounds the file, so its body may also carry the form around it.
    """
    limits: dict[tuple[str, str], tuple[int, str]] = {}
    for _, route in routes:
        if route.body_limit_setting is None:
            continue
        value: Any = config
        for part in route.body_limit_setting.split("."):
            value = getattr(value, part)
        limit = int(value) + (FORM_OVERHEAD_BYTES if route.multipart else 0)
        limits[(route.method, route.path)] = (limit, route.body_limit_setting)
    return limits


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """Replace ``#/$defs/X`` references by their schema: an inline request body has no ``$defs`` root."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in defs:
            return _inline_refs(defs[ref[8:]], defs)
        return {k: _inline_refs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def _multipart_openapi(route: Route) -> dict[str, Any]:
    """Describe a multipart body in /openapi.json: the form model's fields plus the binary file part."""
    schema: dict[str, Any] = route.body.model_json_schema() if route.body is not None else {"type": "object"}
    schema = _inline_refs(schema, schema.pop("$defs", {}))
    file_part = {"type": "string", "format": "binary"}
    schema = {**schema, "properties": {route.file_field: file_part, **schema.get("properties", {})}}
    schema["required"] = [route.file_field, *schema.get("required", [])]
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


PROVIDER_HEALTH_SECONDS = 3.0
"""How long ``GET /v1/providers`` waits for one provider's own health check (they run concurrently)."""
PROVIDER_HEALTH_REUSE_SECONDS = 5.0
"""How long a health answer is reused: a client polling the listing must not turn each call into a
round of upstream health requests (the console's providers page and scripts poll it)."""


async def _provider_health(stack: Stack, api: str, provider_id: str) -> dict[str, Any] | None:
    """What the provider's ``health()`` says now, or why it could not say; ``None`` when it has none.

    An upstream that hangs or fails must not fail the listing: its entry says so in one line instead.
    What a provider reports is redacted like its config (a URL's password, a key in a message).
    """
    provider = stack.providers.get(api, {}).get(provider_id)
    check = getattr(provider, "health", None) if provider is not None else None
    if check is None:
        return None
    try:
        async with asyncio.timeout(PROVIDER_HEALTH_SECONDS):
            answer = await check()
        report = dict(answer) if isinstance(answer, dict) else {"status": str(answer)}
    except TimeoutError:
        report = {"status": "error", "message": f"no health answer within {PROVIDER_HEALTH_SECONDS:g}s"}
    except UnderlayError as exc:
        report = {"status": "error", "message": exc.message}
    except Exception as exc:  # a provider's own bug: named, never a traceback
        log.warning("health check of provider %s failed: %s", provider_id, exc)
        report = {"status": "error", "message": f"health check failed ({type(exc).__name__})"}
    spec = stack.provider_specs.get(provider_id)
    secret_words = spec.secret_fields if spec else ("api_key", "password", "token", "secret")
    return dict(redact(report, secret_words))


def _add_platform_routes(app: FastAPI, routes: list[tuple[str, Route]]) -> None:
    table = [
        {
            "method": r.method,
            "path": r.path,
            "api": api,
            "version": r.path.split("/")[1],  # every route is served under its API's version
            "stability": stability_of(r.path.split("/")[1]),
            "streaming": r.streaming,
            "summary": r.summary,
        }
        for api, r in routes
    ]
    table += [
        {
            "method": "GET",
            "path": p,
            "api": "platform",
            "version": "v1",
            "stability": "stable",
            "streaming": False,
            "summary": s,
        }
        for p, s in (
            ("/v1/health", "Liveness and readiness"),
            ("/v1/version", "Server version"),
            ("/v1/providers", "Configured providers (secrets redacted)"),
            ("/v1/inspect/routes", "Every route this server answers"),
        )
    ]

    @app.get("/v1/health", tags=["platform"])
    async def health() -> dict[str, str]:
        return {"status": "OK"}

    @app.get("/v1/version", tags=["platform"])
    async def version() -> dict[str, str]:
        return {"version": underlay.__version__}

    recent: dict[tuple[str, str], tuple[float, dict[str, Any] | None]] = {}

    async def health_of(stack: Stack, api: str, provider_id: str) -> dict[str, Any] | None:
        now = time.monotonic()
        seen = recent.get((api, provider_id))
        if seen is not None and now - seen[0] < PROVIDER_HEALTH_REUSE_SECONDS:
            return seen[1]
        report = await _provider_health(stack, api, provider_id)
        recent[(api, provider_id)] = (time.monotonic(), report)
        return report

    @app.get("/v1/providers", tags=["platform"])
    async def providers(request: Request) -> dict[str, Any]:
        stack = request.app.state.stack
        infos = stack.provider_infos()
        checks = await asyncio.gather(*(health_of(stack, info["api"], info["provider_id"]) for info in infos))
        data = [{**info, "health": health} for info, health in zip(infos, checks, strict=True)]
        return {"object": "list", "data": data}

    @app.get("/v1/inspect/routes", tags=["platform"])
    async def inspect_routes() -> dict[str, Any]:
        return {"object": "list", "data": table}
