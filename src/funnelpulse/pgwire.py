"""SQL over the Postgres wire protocol (version 3), read-only, for psql, drivers and BI tools.

The smallest layer that is correct for what those clients do: the startup handshake (TLS
declined, SCRAM-SHA-256 password when one is set), the simple query protocol, the extended one
(Parse, Bind, Describe, Execute, Close, Sync, Flush; text results, and binary for the plain
types drivers ask binary for), cancel requests, and errors with their SQLSTATE. Each connection
gets its own `sql.SqlSession`, so a slow or failing statement never stops the others.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import logging
import math
import os
import re
import secrets
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .config import check_bind
from .errors import FunnelPulseError
from .scram import Scram
from .sql import SERVER_VERSION, ReadOnlyError, Result, SqlSession, StatementTimeout, split

log = logging.getLogger(__name__)

PASSWORD_ENV = "FUNNELPULSE_SQL_PASSWORD"
_SSL_REQUEST, _GSS_REQUEST, _CANCEL_REQUEST, _PROTOCOL_3 = 80877103, 80877104, 80877102, 196608
_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_EPOCH_DATE = dt.date(2000, 1, 1)

# DuckDB type (prefix) -> Postgres type oid.
_OIDS = (
    ("BOOLEAN", 16),
    ("TINYINT", 21),
    ("SMALLINT", 21),
    ("UTINYINT", 21),
    ("INTEGER", 23),
    ("USMALLINT", 23),
    ("BIGINT", 20),
    ("UINTEGER", 20),
    ("HUGEINT", 1700),
    ("UBIGINT", 1700),
    ("UHUGEINT", 1700),
    ("FLOAT", 700),
    ("DOUBLE", 701),
    ("DECIMAL", 1700),
    ("DATE", 1082),
    ("TIMESTAMP WITH TIME ZONE", 1184),
    ("TIMESTAMP", 1114),
    ("TIME", 1083),
    ("INTERVAL", 1186),
    ("BLOB", 17),
    ("UUID", 2950),
    ("JSON", 114),
)
_NUMERIC_OIDS = {20, 21, 23, 26, 700, 701, 1700}
_BINARY_PACK = {16: "?", 21: ">h", 23: ">i", 20: ">q", 700: ">f", 701: ">d"}


def type_oid(duck_type: str) -> int:
    name = duck_type.upper()
    if name.endswith("]") or name.startswith(("STRUCT", "MAP", "UNION")):
        return 25
    for prefix, oid in _OIDS:
        if name == prefix or name.startswith(prefix + "(") or name.startswith(prefix + " "):
            return oid
    return 25


def text_value(value: Any) -> str:
    """A value as Postgres writes it in text format."""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time | Decimal):
        return str(value) if not isinstance(value, dt.date) else value.isoformat()
    if isinstance(value, dt.timedelta):
        seconds = value.seconds + value.microseconds / 1e6
        hours, rest = divmod(seconds, 3600)
        minutes, secs = divmod(rest, 60)
        return f"{value.days} days {int(hours):02d}:{int(minutes):02d}:{secs:09.6f}"
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, list | tuple):
        return "{" + ",".join(_array_item(v) for v in value) + "}"
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


def _array_item(value: Any) -> str:
    if value is None:
        return "NULL"
    text = text_value(value)
    if isinstance(value, str) or re.search(r'[{},"\\\s]', text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def binary_value(value: Any, oid: int) -> bytes:
    """A value in Postgres' binary format, for the types drivers ask binary for."""
    if oid in _BINARY_PACK:
        return struct.pack(_BINARY_PACK[oid], value)
    if oid == 1082:
        return struct.pack(">i", (value - _EPOCH_DATE).days)
    if oid in (1114, 1184):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        delta = moment - _EPOCH
        return struct.pack(
            ">q", (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        )
    if oid == 17:
        return bytes(value)
    return text_value(value).encode()


def literal(value: str | None, oid: int) -> str:
    """A bound parameter as an SQL literal (text format)."""
    if value is None:
        return "NULL"
    if oid in _NUMERIC_OIDS and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", value):
        return value
    if oid == 16:
        return "TRUE" if value.lower() in ("t", "true", "1", "on", "yes") else "FALSE"
    if oid in (0, 1082):  # JDBC sends a date with its zone ("2019-10-01 +00"): a date is zoneless
        dated = re.fullmatch(r"(\d{4}-\d{2}-\d{2}) [+-]\d{2}(?::?\d{2})?", value)
        if dated:
            value = dated.group(1)
    return "'" + value.replace("'", "''") + "'"


def bind(sql: str, values: list[str | None], oids: list[int]) -> str:
    """The statement with $1, $2, ... replaced by literals (never inside strings or names)."""
    if not values:
        return sql
    out, i, quote = [], 0, ""
    while i < len(sql):
        ch = sql[i]
        if quote:
            out.append(ch)
            if ch == quote:
                quote = ""
            i += 1
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "$":
            match = re.match(r"\$(\d+)", sql[i:])
            if match:
                n = int(match.group(1))
                if not 1 <= n <= len(values):
                    raise FunnelPulseError(f"There is no parameter ${n}: {len(values)} were bound")
                out.append(literal(values[n - 1], oids[n - 1] if n - 1 < len(oids) else 0))
                i += len(match.group(0))
                continue
        out.append(ch)
        i += 1
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# One connection


class _Closed(Exception):
    """The client went away."""


@dataclass
class _Prepared:
    sql: str
    oids: list[int]


@dataclass
class _Portal:
    sql: str
    formats: list[int]
    result: Result | None = None
    sent: int = 0


def _sqlstate(exc: Exception) -> str:
    if isinstance(exc, StatementTimeout):
        return "57014"  # query_canceled
    if isinstance(exc, ReadOnlyError):
        return "25006"  # read_only_sql_transaction
    return "42000"


class _Connection:
    def __init__(self, sock: socket.socket, server: PgServer) -> None:
        self.sock = sock
        self.server = server
        self.reader = sock.makefile("rb")
        self.out = bytearray()
        self.session: SqlSession | None = None
        self.statements: dict[str, _Prepared] = {}
        self.portals: dict[str, _Portal] = {}
        self.key = (0, 0)

    # -- bytes ---------------------------------------------------------------------------
    def read(self, n: int) -> bytes:
        data = self.reader.read(n)
        if data is None or len(data) < n:
            raise _Closed
        return data

    def send(self, kind: bytes, body: bytes = b"") -> None:
        self.out += kind + struct.pack(">i", len(body) + 4) + body

    def flush(self) -> None:
        if self.out:
            self.sock.sendall(bytes(self.out))
            self.out.clear()

    def error(self, message: str, code: str = "42000", severity: str = "ERROR") -> None:
        body = b"".join(
            tag + value.encode() + b"\0"
            for tag, value in ((b"S", severity), (b"V", severity), (b"C", code), (b"M", message))
        )
        self.send(b"E", body + b"\0")

    def ready(self) -> None:
        self.send(b"Z", b"I")
        self.flush()

    # -- start-up ------------------------------------------------------------------------
    def startup(self) -> bool:
        while True:
            length = struct.unpack(">i", self.read(4))[0]
            if not 8 <= length <= 10_000:
                return False
            body = self.read(length - 4)
            code = struct.unpack(">i", body[:4])[0]
            if code in (_SSL_REQUEST, _GSS_REQUEST):
                self.sock.sendall(b"N")  # no TLS here: put a TLS proxy in front for that
                continue
            if code == _CANCEL_REQUEST:
                pid, secret = struct.unpack(">ii", body[4:12])
                self.server.cancel(pid, secret)
                return False
            if code != _PROTOCOL_3:
                self.error("Only protocol 3.0 is supported", "08P01", "FATAL")
                self.flush()
                return False
            items = body[4:].split(b"\0")
            params = {
                items[i].decode(): items[i + 1].decode()
                for i in range(0, len(items) - 1, 2)
                if items[i]
            }
            break
        user = params.get("user", "")
        if self.server.password and not self.authenticate(user):
            self.error(f'password authentication failed for user "{user}"', "28P01", "FATAL")
            self.flush()
            return False
        self.send(b"R", struct.pack(">i", 0))
        try:
            self.session = SqlSession(
                self.server.warehouse,
                self.server.timeout_s,
                self.server.max_rows,
                database=params.get("database") or user,  # Postgres' default: the user's name
            )
        except FunnelPulseError as exc:
            self.error(str(exc), "58000", "FATAL")
            self.flush()
            return False
        if "application_name" in params:
            self.session.settings["application_name"] = params["application_name"]
        for name, value in (
            ("server_version", SERVER_VERSION),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("IntervalStyle", "postgres"),
            ("TimeZone", "UTC"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("is_superuser", "off"),
            ("session_authorization", user),
            ("default_transaction_read_only", "on"),
            ("application_name", params.get("application_name", "")),
        ):
            self.send(b"S", name.encode() + b"\0" + value.encode() + b"\0")
        self.key = self.server.register(self.session)
        self.session.backend_pid = self.key[0]  # what pg_backend_pid() answers
        self.send(b"K", struct.pack(">ii", *self.key))
        self.ready()
        return True

    def authenticate(self, user: str) -> bool:
        scram = Scram(self.server.password or "")
        self.send(b"R", struct.pack(">i", 10) + b"SCRAM-SHA-256\0\0")
        self.flush()
        kind, body = self.message()
        if kind != b"p":
            return False
        mechanism, _, rest = body.partition(b"\0")
        if mechanism != b"SCRAM-SHA-256" or len(rest) < 4:
            return False
        try:
            server_first = scram.start(rest[4:].decode())
        except (FunnelPulseError, KeyError, UnicodeDecodeError):
            return False
        self.send(b"R", struct.pack(">i", 11) + server_first.encode())
        self.flush()
        kind, body = self.message()
        if kind != b"p":
            return False
        final = scram.finish(body.decode(errors="replace"))
        if final is None:
            return False
        self.send(b"R", struct.pack(">i", 12) + final.encode())
        return True

    def message(self) -> tuple[bytes, bytes]:
        kind = self.read(1)
        length = struct.unpack(">i", self.read(4))[0]
        if length < 4 or length > 64 * 1024 * 1024:
            raise _Closed
        return kind, self.read(length - 4)

    # -- the loop ------------------------------------------------------------------------
    def serve(self) -> None:
        if not self.startup():
            return
        failed = False  # an error in the extended protocol skips to the next Sync
        while True:
            kind, body = self.message()
            if kind == b"X":
                return
            if kind == b"S":
                failed = False
                self.ready()
                continue
            if kind == b"H":
                self.flush()
                continue
            if kind == b"Q":
                self.simple(body[:-1].decode())
                continue
            if failed:
                continue
            try:
                self.extended(kind, body)
            except (FunnelPulseError, ValueError, UnicodeDecodeError) as exc:
                self.error(str(exc), _sqlstate(exc))
                failed = True

    def simple(self, text: str) -> None:
        statements = split(text)
        if not statements:
            self.send(b"I")
        for statement in statements:
            try:
                result = self.run(statement)
            except FunnelPulseError as exc:
                self.error(str(exc), _sqlstate(exc))
                break
            if result.columns:
                self.describe(result, [0])
                self.rows(result, [0], 0, len(result.rows))
            self.complete(result, len(result.rows))
        self.ready()

    def run(self, statement: str) -> Result:
        assert self.session is not None
        result = self.session.run(statement)
        if result.truncated:
            self.notice(
                f"Only the first {len(result.rows):,} rows are returned (the server's row cap)"
            )
        return result

    def notice(self, message: str) -> None:
        body = b"".join(
            tag + value.encode() + b"\0"
            for tag, value in (
                (b"S", "WARNING"),
                (b"V", "WARNING"),
                (b"C", "01000"),
                (b"M", message),
            )
        )
        self.send(b"N", body + b"\0")

    def extended(self, kind: bytes, body: bytes) -> None:
        if kind == b"P":
            name, rest = _cstring(body)
            query, rest = _cstring(rest)
            count = struct.unpack(">h", rest[:2])[0]
            oids = list(struct.unpack(f">{count}i", rest[2 : 2 + 4 * count]))
            self.statements[name] = _Prepared(query, oids)
            self.send(b"1")
        elif kind == b"B":
            self.bind(body)
            self.send(b"2")
        elif kind == b"D":
            target, name = body[:1], _cstring(body[1:])[0]
            if target == b"S":
                prepared = self.statements.get(name)
                if prepared is None:
                    raise FunnelPulseError(f'prepared statement "{name}" does not exist')
                count = _param_count(prepared.sql, prepared.oids)
                oids = [
                    prepared.oids[i] if i < len(prepared.oids) and prepared.oids[i] else 25
                    for i in range(count)
                ]
                self.send(b"t", struct.pack(f">h{count}i", count, *oids))
                result = (
                    self.run(bind(prepared.sql, [None] * count, oids))
                    if prepared.sql.strip()
                    else Result()
                )
                if result.columns:
                    self.describe(result, [0])
                else:
                    self.send(b"n")
            else:
                portal = self.portal(name)
                if portal.result is not None and portal.result.columns:
                    self.describe(portal.result, portal.formats)
                else:
                    self.send(b"n")
        elif kind == b"E":
            name, rest = _cstring(body)
            limit = struct.unpack(">i", rest[:4])[0]
            portal = self.portal(name)
            done = portal.result
            if done is None or not done.tag:
                self.send(b"I")
                return
            end = len(done.rows) if limit <= 0 else min(len(done.rows), portal.sent + limit)
            self.rows(done, portal.formats, portal.sent, end)
            portal.sent = end
            if end < len(done.rows):
                self.send(b"s")
            else:
                self.complete(done, len(done.rows))
        elif kind == b"C":
            target, name = body[:1], _cstring(body[1:])[0]
            (self.statements if target == b"S" else self.portals).pop(name, None)
            self.send(b"3")
        else:
            raise FunnelPulseError(f"Unsupported message {kind!r}")

    def bind(self, body: bytes) -> None:
        portal, rest = _cstring(body)
        name, rest = _cstring(rest)
        prepared = self.statements.get(name)
        if prepared is None:
            raise FunnelPulseError(f'prepared statement "{name}" does not exist')
        (count,) = struct.unpack(">h", rest[:2])
        formats = list(struct.unpack(f">{count}h", rest[2 : 2 + 2 * count]))
        rest = rest[2 + 2 * count :]
        (count,) = struct.unpack(">h", rest[:2])
        rest = rest[2:]
        values: list[str | None] = []
        for i in range(count):
            (size,) = struct.unpack(">i", rest[:4])
            raw, rest = (None, rest[4:]) if size < 0 else (rest[4 : 4 + size], rest[4 + size :])
            fmt = formats[0] if len(formats) == 1 else (formats[i] if formats else 0)
            oid = prepared.oids[i] if i < len(prepared.oids) else 0
            values.append(None if raw is None else _param_text(raw, fmt, oid))
        (count,) = struct.unpack(">h", rest[:2])
        result_formats = list(struct.unpack(f">{count}h", rest[2 : 2 + 2 * count]))
        sql = bind(prepared.sql, values, prepared.oids)
        result = self.run(sql) if sql.strip() else Result(tag="")
        self.portals[portal] = _Portal(sql, result_formats or [0], result)

    def portal(self, name: str) -> _Portal:
        portal = self.portals.get(name)
        if portal is None:
            raise FunnelPulseError(f'portal "{name}" does not exist')
        return portal

    # -- results -------------------------------------------------------------------------
    def describe(self, result: Result | None, formats: list[int]) -> None:
        assert result is not None
        fields = []
        for i, (name, kind) in enumerate(result.columns):
            oid = type_oid(kind)
            fmt = _format(formats, i)
            if fmt == 1 and oid not in (*_BINARY_PACK, 1082, 1114, 1184, 17):
                fmt = 0
            fields.append(name.encode() + b"\0" + struct.pack(">ihihih", 0, 0, oid, -1, -1, fmt))
        self.send(b"T", struct.pack(">h", len(fields)) + b"".join(fields))

    def rows(self, result: Result, formats: list[int], start: int, end: int) -> None:
        oids = [type_oid(kind) for _, kind in result.columns]
        for row in itertools.islice(result.rows, start, end):
            parts = [struct.pack(">h", len(row))]
            for i, value in enumerate(row):
                if value is None:
                    parts.append(struct.pack(">i", -1))
                    continue
                binary = _format(formats, i) == 1 and oids[i] in (
                    *_BINARY_PACK,
                    1082,
                    1114,
                    1184,
                    17,
                )
                data = binary_value(value, oids[i]) if binary else text_value(value).encode()
                parts.append(struct.pack(">i", len(data)) + data)
            self.send(b"D", b"".join(parts))
            if len(self.out) > 1 << 20:
                self.flush()

    def complete(self, result: Result, count: int) -> None:
        tag = result.tag
        if tag.startswith("SELECT") or tag == "SHOW":
            tag = f"SELECT {count}" if tag.startswith("SELECT") else "SHOW"
        self.send(b"C", tag.encode() + b"\0")


def _format(formats: list[int], i: int) -> int:
    if not formats:
        return 0
    return formats[0] if len(formats) == 1 else (formats[i] if i < len(formats) else 0)


def _cstring(data: bytes) -> tuple[str, bytes]:
    end = data.index(b"\0")
    return data[:end].decode(), data[end + 1 :]


def _param_count(sql: str, oids: list[int]) -> int:
    found = [int(n) for n in re.findall(r"\$(\d+)", re.sub(r"'(?:[^']|'')*'", "''", sql))]
    return max([len(oids), *found]) if found or oids else 0


def _param_text(raw: bytes, fmt: int, oid: int) -> str:
    """A bound parameter as text, whether the client sent it as text or binary."""
    if fmt == 0:
        return raw.decode()
    if oid in _BINARY_PACK and len(raw) == struct.calcsize(_BINARY_PACK[oid]):
        value = struct.unpack(_BINARY_PACK[oid], raw)[0]
        return ("true" if value else "false") if oid == 16 else str(value)
    if oid in (0, 25, 1043, 19, 114):
        return raw.decode()
    raise FunnelPulseError(f"Binary parameters of type {oid} are not supported: send them as text")


# ---------------------------------------------------------------------------------------------
# The server


class _Handler(socketserver.BaseRequestHandler):
    server: PgServer

    def handle(self) -> None:
        connection = _Connection(self.request, self.server)
        try:
            connection.serve()
        except (_Closed, ConnectionError, OSError):
            pass
        except Exception:  # a bug must never take the server down: log it, drop the client
            log.exception("SQL connection failed")
            with contextlib.suppress(OSError):
                connection.error("Internal error; the server logged it", "XX000")
                connection.flush()
        finally:
            with contextlib.suppress(OSError):
                connection.flush()
            if connection.session is not None:
                self.server.unregister(connection.key)
                connection.session.close()


class PgServer(socketserver.ThreadingTCPServer):
    """The Postgres-wire server: one thread and one read-only session per connection."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        warehouse: str,
        address: tuple[str, int],
        *,
        password: str | None = None,
        timeout_s: float = 30.0,
        max_rows: int = 1_000_000,
    ) -> None:
        self.warehouse = warehouse
        self.password = password
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self._sessions: dict[tuple[int, int], SqlSession] = {}
        self._guard = threading.Lock()
        super().__init__(address, _Handler)

    def register(self, session: SqlSession) -> tuple[int, int]:
        key = (secrets.randbits(31), secrets.randbits(31))
        with self._guard:
            self._sessions[key] = session
        return key

    def unregister(self, key: tuple[int, int]) -> None:
        with self._guard:
            self._sessions.pop(key, None)

    def cancel(self, pid: int, secret: int) -> None:
        with self._guard:
            session = self._sessions.get((pid, secret))
        if session is not None:
            session.interrupt()


def serve(
    warehouse: str,
    host: str = "127.0.0.1",
    port: int = 5433,
    *,
    timeout_s: float = 30.0,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve SQL until interrupted."""
    password = os.environ.get(PASSWORD_ENV) or None
    check_bind(host, password, PASSWORD_ENV, "SQL")
    try:
        server = PgServer(warehouse, (host, port), password=password, timeout_s=timeout_s)
    except OSError as exc:
        raise FunnelPulseError(
            f"Cannot serve on {host}:{port}: {exc.strerror or exc}. Choose another --port"
        ) from exc
    with server:
        if ready is not None:
            ready()
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever(poll_interval=0.5)
