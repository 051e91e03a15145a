"""The read-only HTTP API (FastAPI on uvicorn): the report, the funnel, every served table, the
anomalies, incidents and live buckets, as JSON or CSV. Every read goes through `queries`, so the
numbers equal the CLI's; every response names the table versions it read in the
`FunnelPulse-Table-Versions` header (and, for table pages, in the body)."""

from __future__ import annotations

import hmac
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import date
from typing import Any

from . import queries, tables
from .config import check_bind
from .errors import ConfigError, FunnelPulseError, MissingDependencyError, WarehouseError
from .localdb import Interrupter, interruptible
from .report import csv_text

try:
    import anyio
    import anyio.to_thread
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
except ImportError as exc:  # the `api` extra is not installed
    raise MissingDependencyError("fastapi", "api") from exc

TOKEN_ENV = "FUNNELPULSE_API_TOKEN"
VERSIONS_HEADER = "FunnelPulse-Table-Versions"
OPEN_PATHS = ("/healthz", "/readyz")
KEEP_ALIVE_S = 75


def _versions_header(versions: dict[str, int | None]) -> str:
    return ", ".join(f"{k}={'' if v is None else v}" for k, v in sorted(versions.items()))


class _Bearer:
    """Every request but /healthz and /readyz needs `Authorization: Bearer <token>`."""

    def __init__(self, app: Any, expected: bytes) -> None:
        self.app = app
        self.expected = expected

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                refused = JSONResponse(
                    {
                        "error": "Missing or wrong token. Send the header "
                        "`Authorization: Bearer <FUNNELPULSE_API_TOKEN>`"
                    },
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(warehouse: str, token: str | None = None, timeout_s: float = 30.0) -> Any:
    """The ASGI app over `warehouse`; with `token`, every path but /healthz needs
    `Authorization: Bearer <token>`."""
    app = FastAPI(
        title="FunnelPulse API",
        version="1",
        description="Read-only access to the FunnelPulse warehouse: report, funnel, tables, "
        "anomalies, incidents and live buckets. JSON by default; CSV with `Accept: text/csv` "
        "or `format=csv`. The `FunnelPulse-Table-Versions` header names the versions read.",
    )
    if token:
        # Plain ASGI, not an HTTP middleware: that would wrap every response body in a stream.
        app.add_middleware(_Bearer, expected=f"Bearer {token}".encode())

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> Any:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "request"
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse({"error": "Bad parameter. " + "; ".join(problems)}, status_code=400)

    @app.exception_handler(FunnelPulseError)
    async def user_error(request: Request, exc: FunnelPulseError) -> Any:
        from .sql import StatementTimeout

        status = 400
        if isinstance(exc, StatementTimeout):
            status = 504
        elif isinstance(exc, WarehouseError):
            status = 404
        return JSONResponse({"error": str(exc)}, status_code=status)

    app.state.reads_running = 0
    running_guard = threading.Lock()

    async def read(call: Callable[[], queries.Read]) -> queries.Read:
        """Run a read off the event loop, within the statement timeout: past it the client gets
        its 504 at once and the read's queries are interrupted, so its worker thread is free."""
        from .sql import StatementTimeout

        interrupter = Interrupter()

        def work() -> queries.Read:
            with running_guard:
                app.state.reads_running += 1
            try:
                with interruptible(interrupter):
                    return call()
            finally:
                with running_guard:
                    app.state.reads_running -= 1

        try:
            with anyio.fail_after(timeout_s):
                return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
        except TimeoutError as exc:
            interrupter.interrupt()
            raise StatementTimeout(
                f"The request ran longer than the {timeout_s:g} s timeout. Narrow it (a date "
                "range, a segment) and ask again"
            ) from exc

    def wants_csv(request: Request, fmt: str | None) -> bool:
        if fmt is not None:
            return fmt == "csv"
        accept = request.headers.get("accept", "")
        return "text/csv" in accept and "application/json" not in accept

    def _reply(
        request: Request,
        fmt: str | None,
        body: Any,
        versions: dict[str, Any],
        csv: Callable[[], str] | None = None,
    ) -> Any:
        headers = {VERSIONS_HEADER: _versions_header(versions)}
        if wants_csv(request, fmt):
            if csv is None:
                raise ConfigError("This resource has no CSV form: ask for JSON (format=json)")
            return Response(csv(), media_type="text/csv; charset=utf-8", headers=headers)
        return Response(
            json.dumps(body, default=str), media_type="application/json", headers=headers
        )

    def only(request: Request, allowed: set[str]) -> None:
        unknown = sorted(set(request.query_params) - allowed)
        if unknown:
            raise ConfigError(
                f"Unknown parameter {', '.join(unknown)}. Parameters here: "
                f"{', '.join(sorted(allowed))}"
            )

    Fmt = Query(None, pattern="^(json|csv)$", description="json (default) or csv")

    def json_page_bytes(page: queries.JsonPage, versions: dict[str, Any]) -> bytes:
        """The same body as `page_body`, with the rows spliced in as the database encoded them."""
        head = json.dumps(
            {"table": page.table, "version": versions.get(page.table), "columns": page.columns}
        )
        tail = json.dumps(
            {"offset": page.offset, "truncated": page.truncated, "next_offset": page.next_offset}
        )
        key = b', "rows": ' if page.shape == "rows" else b', "data": '
        return b"".join((head[:-1].encode(), key, page.rows_json, b", ", tail[1:].encode()))

    def page_body(page: queries.Page, versions: dict[str, Any]) -> dict[str, Any]:
        return {
            "table": page.table,
            "version": versions.get(page.table),
            "columns": page.columns,
            "rows": page.rows,
            "offset": page.offset,
            "truncated": page.truncated,
            "next_offset": page.next_offset,
        }

    # Encoded pages by (request, table version): a table's version never changes its rows, so a
    # page asked again (a dashboard polling) is sent as encoded the first time, and a new commit
    # (a new version) is a new key. Bounded by entries and bytes, least recently used out first.
    pages: OrderedDict[tuple[Any, ...], tuple[bytes, str, dict[str, str]]] = OrderedDict()
    pages_guard = threading.Lock()
    max_entries, max_bytes = 64, 128 * 1024 * 1024

    def page_key(request: Request, fmt: str | None, name: str, version: int | None) -> Any:
        if version is None:
            return None
        query = tuple(sorted(request.query_params.multi_items()))
        return (request.url.path, query, wants_csv(request, fmt), name, version)

    def cached(request: Request, fmt: str | None, name: str) -> Any:
        if name not in queries.SERVED_TABLES:
            return None
        latest = tables.latest_version(tables.table_path(warehouse, name))
        key = page_key(request, fmt, name, latest)
        with pages_guard:
            hit = pages.get(key) if key is not None else None
            if hit is not None:
                pages.move_to_end(key)
        if hit is None:
            return None
        body, media_type, headers = hit
        return Response(body, media_type=media_type, headers=headers)

    def _page_reply(request: Request, fmt: str | None, result: queries.Read) -> Any:
        page: queries.Page | queries.JsonPage = result.data
        if isinstance(page, queries.JsonPage):
            response = Response(
                json_page_bytes(page, result.versions),
                media_type="application/json",
                headers={VERSIONS_HEADER: _versions_header(result.versions)},
            )
        else:
            rows = page.rows
            response = _reply(
                request,
                fmt,
                page_body(page, result.versions),
                result.versions,
                lambda: csv_text(page.columns, rows),
            )
        response.headers["FunnelPulse-Truncated"] = "true" if page.truncated else "false"
        key = page_key(request, fmt, page.table, result.versions.get(page.table))
        if key is not None and len(response.body) <= max_bytes // 4:
            headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
            with pages_guard:
                pages[key] = (bytes(response.body), response.media_type or "", headers)
                while (
                    len(pages) > max_entries
                    or sum(len(b) for b, _, _ in pages.values()) > max_bytes
                ):
                    pages.popitem(last=False)
        return response

    async def reply(*args: Any, **kwargs: Any) -> Any:
        """Encode off the event loop: a large page must not hold up other requests."""
        return await run_in_threadpool(_reply, *args, **kwargs)

    async def page_reply(*args: Any) -> Any:
        return await run_in_threadpool(_page_reply, *args)

    async def read_page(
        request: Request, fmt: str | None, name: str, shape: str = "rows", **kwargs: Any
    ) -> Any:
        """A page of `name`: JSON straight from the database's own encoder (one thread hop, no
        Python object per value), CSV through Python rows."""
        if wants_csv(request, fmt):
            result = await read(lambda: queries.rows(warehouse, name, **kwargs))
            return await page_reply(request, fmt, result)

        def encoded() -> queries.Read:
            return queries.Read(
                _page_reply(
                    request, fmt, queries.rows_json(warehouse, name, shape=shape, **kwargs)
                )
            )

        return (await read(encoded)).data

    @app.get("/healthz", summary="Liveness (never needs the token)")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/report", summary="The report (`funnelpulse report --format json`)")
    async def report(
        request: Request,
        since: date | None = None,
        until: date | None = None,
        top: int = Query(5, ge=1),
        format: str | None = Fmt,
    ) -> Any:
        only(request, {"since", "until", "top", "format"})
        result = await read(lambda: queries.report(warehouse, top, since, until))
        return await reply(request, format, result.data, result.versions)

    @app.get("/api/v1/funnel", summary="The ordered funnel (`funnelpulse funnel --format json`)")
    async def funnel(
        request: Request,
        by: str | None = Query(None, pattern="^(brand|category|price_band)$"),
        since: date | None = None,
        until: date | None = None,
        window: str = "24h",
        same_product: bool = False,
        by_user: bool = False,
        format: str | None = Fmt,
    ) -> Any:
        from . import funnel as fn

        only(request, {"by", "since", "until", "window", "same_product", "by_user", "format"})
        spec = fn.FunnelSpec(fn.parse_window(window), by, same_product, by_user)
        result = await read(lambda: queries.funnel(warehouse, spec, since, until))
        data: fn.FunnelResult = result.data
        return await reply(
            request, format, data.as_dict(), result.versions, lambda: fn.format_csv(data)
        )

    @app.get("/api/v1/tables", summary="The served tables: version, rows, columns")
    async def table_list(request: Request, format: str | None = Fmt) -> Any:
        only(request, {"format"})
        result = await read(lambda: queries.catalog(warehouse))
        names = ["name", "version", "rows", "date_column"]
        return await reply(
            request,
            format,
            {"tables": result.data},
            result.versions,
            lambda: csv_text(names, [{k: t[k] for k in names} for t in result.data]),
        )

    paging = {"since", "until", "segment", "limit", "offset", "format", "shape"}
    Shape = Query(
        "rows",
        pattern="^(rows|columns)$",
        description="JSON shape: rows (a list of row objects, default) or columns (`data`: "
        "column name to its list of values, the fastest to decode)",
    )

    @app.get("/api/v1/tables/{name}", summary="A page of one table's rows")
    async def table_rows(
        request: Request,
        name: str,
        since: date | None = None,
        until: date | None = None,
        segment: list[str] = Query([], description="dimension:value, e.g. brand:acme (repeat)"),
        limit: int = Query(1_000, ge=1, le=queries.MAX_ROWS),
        offset: int = Query(0, ge=0),
        format: str | None = Fmt,
        shape: str = Shape,
    ) -> Any:
        only(request, paging)
        hit = cached(request, format, name)
        if hit is not None:
            return hit
        return await read_page(
            request,
            format,
            name,
            since=since,
            until=until,
            segments=segment,
            limit=limit,
            offset=offset,
            shape=shape,
        )

    @app.get("/api/v1/anomalies", summary="Batch anomalies")
    async def anomalies(
        request: Request,
        since: date | None = None,
        until: date | None = None,
        segment: list[str] = Query([]),
        severity: str | None = None,
        limit: int = Query(1_000, ge=1, le=queries.MAX_ROWS),
        offset: int = Query(0, ge=0),
        format: str | None = Fmt,
        shape: str = Shape,
    ) -> Any:
        only(request, paging | {"severity"})
        hit = cached(request, format, tables.ANOMALIES)
        if hit is not None:
            return hit
        equals = {"severity": severity} if severity else {}
        return await read_page(
            request,
            format,
            tables.ANOMALIES,
            since=since,
            until=until,
            segments=segment,
            equals=equals,
            limit=limit,
            offset=offset,
            shape=shape,
        )

    @app.get("/api/v1/incidents", summary="Incidents: lasting (batch and live), live, alerts")
    async def incidents(
        request: Request,
        since: date | None = None,
        until: date | None = None,
        segment: list[str] = Query([]),
        limit: int = Query(1_000, ge=1, le=queries.MAX_ROWS),
        format: str | None = Fmt,
    ) -> Any:
        only(request, {"since", "until", "segment", "limit", "format"})
        result = await read(
            lambda: queries.incidents(
                warehouse, since=since, until=until, segments=segment, limit=limit
            )
        )
        return await reply(request, format, result.data, result.versions)

    @app.get("/api/v1/live/buckets", summary="The stream's live buckets")
    async def live_buckets(
        request: Request,
        since: date | None = None,
        until: date | None = None,
        segment: list[str] = Query([]),
        limit: int = Query(1_000, ge=1, le=queries.MAX_ROWS),
        offset: int = Query(0, ge=0),
        format: str | None = Fmt,
        shape: str = Shape,
    ) -> Any:
        only(request, paging)
        hit = cached(request, format, tables.GOLD_STREAM_BUCKETS)
        if hit is not None:
            return hit
        return await read_page(
            request,
            format,
            tables.GOLD_STREAM_BUCKETS,
            since=since,
            until=until,
            segments=segment,
            limit=limit,
            offset=offset,
            shape=shape,
        )

    @app.get("/api/v1/rollup", summary="The funnel of a date range, total and per segment")
    async def rollup(
        request: Request,
        since: date | None = None,
        until: date | None = None,
        dimension: str = Query("brand", pattern="^(brand|category_root|price_band)$"),
        segment: list[str] = Query([], description="dimension:value of `dimension` (repeat)"),
        top: int | None = Query(None, ge=1),
        format: str | None = Fmt,
    ) -> Any:
        only(request, {"since", "until", "dimension", "segment", "top", "format"})

        def work() -> queries.Read:
            snap = queries.Snapshot(warehouse)
            start, end = queries.whole_range(warehouse, since, until, snap)
            kept, values = queries.kept_segments(segment)
            if kept is not None and kept != dimension:
                raise ConfigError(
                    f"segment {segment[0]!r} is not of dimension {dimension}: give "
                    f"dimension={kept}, or segments of {dimension}"
                )
            total = queries.rollup(warehouse, start, end, dimension, values, snap).data
            board = queries.leaderboard(warehouse, dimension, start, end, values, top, snap).data
            body = {
                "since": start.isoformat(),
                "until": end.isoformat(),
                "dimension": dimension,
                "total": total,
                "segments": board.to_pylist(),
            }
            return queries.Read(body, snap.versions)

        result = await read(work)
        rows = result.data["segments"]
        names = list(rows[0]) if rows else []
        return await reply(
            request, format, result.data, result.versions, lambda: csv_text(names, rows)
        )

    @app.get("/api/v1/series", summary="The funnel per day or hour of a date range")
    async def series(
        request: Request,
        since: date | None = None,
        until: date | None = None,
        grain: str = Query("day", pattern="^(day|hour)$"),
        by: str | None = Query(None, pattern="^(brand|category_root|price_band)$"),
        segment: list[str] = Query([], description="dimension:value (repeat)"),
        format: str | None = Fmt,
    ) -> Any:
        only(request, {"since", "until", "grain", "by", "segment", "format"})

        def work() -> queries.Read:
            snap = queries.Snapshot(warehouse)
            start, end = queries.whole_range(warehouse, since, until, snap)
            kept, values = queries.kept_segments(segment)
            found = queries.series(warehouse, start, end, grain, by, kept, values, snap).data
            body = {
                "since": start.isoformat(),
                "until": end.isoformat(),
                "grain": grain,
                "by": by,
                "columns": found.column_names,
                "rows": found.to_pylist(),
            }
            return queries.Read(body, snap.versions)

        result = await read(work)
        return await reply(
            request,
            format,
            result.data,
            result.versions,
            lambda: csv_text(result.data["columns"], result.data["rows"]),
        )

    return app


def serve(
    warehouse: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    timeout_s: float = 30.0,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve the API until interrupted."""
    token = os.environ.get(TOKEN_ENV) or None
    check_bind(host, token, TOKEN_ENV, "the API")
    try:
        import uvicorn
    except ImportError as exc:
        raise MissingDependencyError("uvicorn", "api") from exc
    app = create_app(warehouse, token, timeout_s)
    # An idle connection is kept 75 s, not uvicorn's 5 s: a busy client that sends its next
    # request just as the server closes the connection gets "disconnected without a response".
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    server = uvicorn.Server(config)
    if ready is not None:
        ready()
    server.run()
