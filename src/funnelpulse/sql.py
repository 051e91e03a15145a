"""Read-only SQL over the warehouse: one `SqlSession` per client, used by `funnelpulse sql` and
by the Postgres-wire server.

Every warehouse table is a view at its newest version (re-pinned before each statement that
names it). Safety is not a blocklist of words: the engine itself has file access switched off and
its settings locked before the first statement, so reading or writing files, attaching databases
and installing extensions fail inside the engine; statements other than queries are refused by
their parsed type before they run. Catalog queries that Postgres clients send (`pg_catalog`,
`information_schema`, `SET`, `SHOW`) are answered from a second connection whose tables are empty
copies of the warehouse's, so tools list them as tables with their columns.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from . import queries
from .errors import FunnelPulseError
from .localdb import connect

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_ROWS = 1_000_000
SERVER_VERSION = "15.0"
DATABASE = "funnelpulse"  # the database clients see when they name none (or a name not usable)
_DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# Names the engine keeps for itself: a client asking for one sees DATABASE instead.
_RESERVED_NAMES = {"memory", "system", "temp", "main", "pg_catalog", "information_schema"}
VERSION_TEXT = f"PostgreSQL {SERVER_VERSION} (FunnelPulse, read-only) on x86_64-pc-linux-gnu"


class ReadOnlyError(FunnelPulseError):
    """A statement that would write, attach, install, touch files or change settings."""


class StatementTimeout(FunnelPulseError):
    """A statement ran past the statement timeout and was cancelled."""


class SqlError(FunnelPulseError):
    """The statement itself is wrong (syntax, unknown column)."""


# Session settings Postgres clients set or ask for on connect: accepted, remembered, answered.
SESSION_SETTINGS: dict[str, str] = {
    "application_name": "",
    "client_encoding": "UTF8",
    "server_encoding": "UTF8",
    "datestyle": "ISO, MDY",
    "intervalstyle": "postgres",
    "timezone": "UTC",
    "extra_float_digits": "1",
    "search_path": '"$user", main',  # the warehouse's tables are in schema main
    "standard_conforming_strings": "on",
    "client_min_messages": "notice",
    "statement_timeout": "0",
    "lock_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
    "default_transaction_isolation": "read committed",
    "transaction_isolation": "read committed",
    "default_transaction_read_only": "on",
    "transaction_read_only": "on",
    "bytea_output": "hex",
    "integer_datetimes": "on",
    "is_superuser": "off",
    "server_version": SERVER_VERSION,
    "server_version_num": "150000",
    "max_identifier_length": "63",
    "lc_collate": "C",
    "lc_ctype": "C",
    "lc_messages": "C",
    "lc_monetary": "C",
    "lc_numeric": "C",
    "lc_time": "C",
    "jit": "off",
    "session_authorization": "funnelpulse",
    "geqo": "on",
    "row_security": "on",
}

_ALLOWED_TYPES = {"SELECT", "EXPLAIN"}
_SET = re.compile(
    r"^\s*SET\s+(?:SESSION\s+|LOCAL\s+)?(?:CHARACTERISTICS\s+AS\s+)?([A-Za-z_][\w.]*(?:\s+isolation\s+level|\s+read\s+only|\s+zone)?)\s*(?:=|\bTO\b)?\s*(.*?)\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_SHOW = re.compile(r"^\s*SHOW\s+(.+?)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_TRANSACTION = re.compile(
    r"^\s*(BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|ABORT|DISCARD\s+ALL|RESET\s+ALL|"
    r"DEALLOCATE(?:\s+ALL|\s+\w+)?|CLOSE\s+ALL|UNLISTEN\s+\*)\b[^;]*;?\s*$",
    re.IGNORECASE,
)
_SETTING = re.compile(
    r"(?:\bpg_catalog\.)?\bcurrent_setting\s*\(\s*'([^']+)'\s*(?:,\s*\w+\s*)?\)", re.IGNORECASE
)
_STRING = re.compile(r"'(?:[^']|'')*'")
_OTHER_SESSIONS = re.compile(r"\bpg_(?:terminate|cancel)_backend\s*\(", re.IGNORECASE)
_BACKEND_PID = re.compile(r"(?:\bpg_catalog\.)?\bpg_backend_pid\s*\(\s*\)", re.IGNORECASE)
_CATALOG = re.compile(
    r"\b(pg_catalog|information_schema|pg_[a-z_]+|duckdb_[a-z_]+|current_schema|"
    r"current_database|current_user|session_user|version|has_\w+_privilege)\b",
    re.IGNORECASE,
)
# Catalog relations clients read that DuckDB lacks or lacks columns of: views on the catalog
# connection (named fp_*; the statement's references are rewritten to them).
_NONE = "WHERE false"
_OWN = "'fp\\_%' ESCAPE '\\'"  # these views' own names, kept out of what clients list
_CATALOG_VIEWS: dict[str, str] = {
    "pg_class": "SELECT *, false AS relforcerowsecurity FROM pg_catalog.pg_class "
    f"WHERE relname NOT LIKE {_OWN}",
    "pg_policy": "SELECT NULL::VARCHAR AS polname, NULL::BOOLEAN AS polpermissive, "
    "NULL::BIGINT AS polrelid, NULL::VARCHAR AS polcmd, NULL AS polroles, "
    f"NULL::VARCHAR AS polqual, NULL::VARCHAR AS polwithcheck {_NONE}",
    "pg_statistic_ext": "SELECT NULL::BIGINT AS oid, NULL::BIGINT AS stxrelid, "
    "NULL::VARCHAR AS stxname, NULL::BIGINT AS stxnamespace, NULL::INTEGER[] AS stxkeys, "
    f"NULL::VARCHAR[] AS stxkind, NULL::INTEGER AS stxstattarget {_NONE}",
    "pg_publication": "SELECT NULL::BIGINT AS oid, NULL::VARCHAR AS pubname, "
    f"NULL::BOOLEAN AS puballtables, NULL::BOOLEAN AS pubviaroot {_NONE}",
    "pg_publication_rel": "SELECT NULL::BIGINT AS oid, NULL::BIGINT AS prpubid, "
    f"NULL::BIGINT AS prrelid, NULL::VARCHAR AS prqual, NULL::SMALLINT[] AS prattrs {_NONE}",
    "pg_publication_namespace": "SELECT NULL::BIGINT AS oid, NULL::BIGINT AS pnpubid, "
    f"NULL::BIGINT AS pnnspid {_NONE}",
    "pg_inherits": "SELECT NULL::BIGINT AS inhrelid, NULL::BIGINT AS inhparent, "
    f"NULL::INTEGER AS inhseqno, NULL::BOOLEAN AS inhdetachpending {_NONE}",
    "pg_trigger": "SELECT NULL::BIGINT AS oid, NULL::BIGINT AS tgrelid, NULL::VARCHAR AS tgname, "
    f"NULL::BOOLEAN AS tgisinternal, NULL::VARCHAR AS tgenabled, NULL::BIGINT AS tgparentid {_NONE}",
    "pg_rewrite": "SELECT NULL::BIGINT AS oid, NULL::VARCHAR AS rulename, NULL::BIGINT AS ev_class, "
    f"NULL::VARCHAR AS ev_type, NULL::VARCHAR AS ev_enabled {_NONE}",
    "pg_index": "SELECT NULL::BIGINT AS indexrelid, NULL::BIGINT AS indrelid, "
    "NULL::SMALLINT[] AS indkey, NULL::INTEGER AS indnatts, NULL::INTEGER AS indnkeyatts, "
    "NULL::BOOLEAN AS indisunique, NULL::BOOLEAN AS indisprimary, "
    "NULL::BOOLEAN AS indnullsnotdistinct, NULL::BOOLEAN AS indisclustered, "
    "NULL::BOOLEAN AS indisvalid, NULL::INTEGER[] AS indoption, NULL::VARCHAR AS indexprs, "
    f"NULL::VARCHAR AS indpred, NULL::BIGINT[] AS indclass {_NONE}",
    "pg_database": "SELECT * FROM pg_catalog.pg_database WHERE datname = current_database()",
    "pg_opclass": "SELECT NULL::BIGINT AS oid, NULL::VARCHAR AS opcname, "
    f"NULL::BOOLEAN AS opcdefault {_NONE}",
    "pg_foreign_table": f"SELECT NULL::BIGINT AS ftrelid, NULL::BIGINT AS ftserver {_NONE}",
    "pg_partitioned_table": f"SELECT NULL::BIGINT AS partrelid, NULL::VARCHAR AS partstrat {_NONE}",
    "pg_collation": "SELECT oid, collname, NULL::BIGINT AS collnamespace FROM pg_catalog.pg_collation",
    "pg_sequence": "SELECT NULL::BIGINT AS seqrelid, NULL::BIGINT AS seqtypid, NULL::BIGINT AS "
    "seqstart, NULL::BIGINT AS seqincrement, NULL::BIGINT AS seqmax, NULL::BIGINT AS seqmin, "
    f"NULL::BIGINT AS seqcache, NULL::BOOLEAN AS seqcycle {_NONE}",
    "pg_extension": "SELECT NULL::BIGINT AS oid, NULL::VARCHAR AS extname, "
    f"NULL::VARCHAR AS extversion, NULL::BIGINT AS extnamespace {_NONE}",
    "information_schema_tables": "SELECT * FROM information_schema.tables "
    f"WHERE table_name NOT LIKE {_OWN}",
    # Postgres' short type names (udt_name), which drivers map to their types (Metabase).
    "information_schema_columns": "SELECT * REPLACE ('pg_catalog' AS udt_schema, "
    "CASE data_type WHEN 'BIGINT' THEN 'int8' WHEN 'INTEGER' THEN 'int4' "
    "WHEN 'SMALLINT' THEN 'int2' WHEN 'DOUBLE' THEN 'float8' WHEN 'FLOAT' THEN 'float4' "
    "WHEN 'BOOLEAN' THEN 'bool' WHEN 'TIMESTAMP WITH TIME ZONE' THEN 'timestamptz' "
    "WHEN 'TIMESTAMP' THEN 'timestamp' WHEN 'DATE' THEN 'date' WHEN 'VARCHAR' THEN 'text' "
    "ELSE lower(data_type) END AS udt_name, 'NO' AS is_identity) "
    f"FROM information_schema.columns WHERE table_name NOT LIKE {_OWN}",
    "pg_stat_user_tables": "SELECT NULL::BIGINT AS relid, NULL::VARCHAR AS schemaname, "
    f"NULL::VARCHAR AS relname, NULL::BIGINT AS n_live_tup {_NONE}",
    "information_schema_views": "SELECT * FROM information_schema.views "
    f"WHERE table_name NOT LIKE {_OWN}",
    "pg_roles": "SELECT 10::BIGINT AS oid, 'funnelpulse' AS rolname, false AS rolsuper, "
    "false AS rolcreatedb, false AS rolcreaterole, true AS rolcanlogin",
    "pg_user": "SELECT 10::BIGINT AS usesysid, 'funnelpulse' AS usename, false AS usesuper",
    "pg_views": "SELECT schema_name AS schemaname, view_name AS viewname, "
    "'funnelpulse' AS viewowner, sql AS definition FROM duckdb_views() "
    f"WHERE NOT internal AND view_name NOT LIKE {_OWN}",
    "pg_matviews": "SELECT NULL::VARCHAR AS schemaname, NULL::VARCHAR AS matviewname, "
    f"NULL::VARCHAR AS matviewowner, NULL::VARCHAR AS definition {_NONE}",
}

# Postgres spellings DuckDB does not parse, rewritten to what it does.
# Postgres' fixed oids of its catalog tables, for `'pg_class'::regclass` in catalog joins.
_CATALOG_OIDS = {
    "pg_type": 1247,
    "pg_attribute": 1249,
    "pg_proc": 1255,
    "pg_class": 1259,
    "pg_constraint": 2606,
    "pg_description": 2609,
    "pg_index": 2610,
    "pg_namespace": 2615,
}


def _catalog_oid(match: re.Match[str]) -> str:
    name = match.group(1).lower().removeprefix("pg_catalog.")
    return str(_CATALOG_OIDS[name]) if name in _CATALOG_OIDS else "NULL::BIGINT"


def _printf(match: re.Match[str]) -> str:
    """Postgres' format('%s %I', ...) as printf: %I (a quoted name) printed as it is."""
    return "printf(" + match.group(1).replace("%I", "%s").replace("%L", "%s")


_REWRITES: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # Before the catalog names are rewritten: these hold them in strings.
    (re.compile(r"'([\w.]*)'\s*::\s*regclass\b", re.IGNORECASE), _catalog_oid),
    (
        re.compile(r"\bCAST\s*\(\s*'([\w.]*)'(?:\s*::\s*\w+)?\s+AS\s+regclass\s*\)", re.I),
        _catalog_oid,
    ),
    (re.compile(r"\bformat\s*\(\s*('(?:[^']|'')*')", re.IGNORECASE), _printf),
    (re.compile(r"OPERATOR\s*\(\s*pg_catalog\.([~!=<>*+-]+)\s*\)", re.IGNORECASE), r"\1"),
    (re.compile(r"\s+COLLATE\s+pg_catalog\.\"?default\"?", re.IGNORECASE), ""),
    (re.compile(r"\bpg_catalog\.(version)\s*\(\s*\)", re.IGNORECASE), "'" + VERSION_TEXT + "'"),
    (re.compile(r"(?<![\w.])version\s*\(\s*\)", re.IGNORECASE), "'" + VERSION_TEXT + "'"),
    # Quoted schema names (SQL builders quote every identifier: "pg_catalog"."pg_class").
    (re.compile(r'"pg_catalog"\s*\.\s*', re.IGNORECASE), ""),
    (
        re.compile(r'"information_schema"\s*\.\s*"?(tables|columns|views)"?(?![\w"])', re.I),
        r"information_schema_\1",
    ),
    (re.compile(r'"information_schema"\s*\.\s*', re.IGNORECASE), "information_schema."),
    (re.compile(r"\bpg_catalog\.(\w+)\s*\(", re.IGNORECASE), r"\1("),
    (re.compile(r"\bpg_catalog\s*\.\s*", re.IGNORECASE), ""),
    (re.compile(r"\binformation_schema\s*\.\s*(tables|columns|views)\b", re.IGNORECASE), r"information_schema_\1"),
    (re.compile(r"(?<![\w.])(" + "|".join(_CATALOG_VIEWS) + r")\b", re.IGNORECASE), r"fp_\1"),
    (re.compile(r"::\s*(regclass|regtype|regproc|regnamespace|oid)\b", re.IGNORECASE), "::BIGINT"),
    (re.compile(r"::\s*(name|\"char\")", re.IGNORECASE), "::VARCHAR"),
    (re.compile(r"\bjson_build_object\s*\(", re.IGNORECASE), "json_object("),
    # An array function used as a relation (`FROM ..., string_to_array('a,b', ',') s`).
    (
        re.compile(
            r"\bstring_to_array\s*\(('(?:[^']|'')*'\s*,\s*'(?:[^']|'')*')\)\s+"
            r"(?!(?:AS|FROM|WHERE|AND|OR|THEN|ELSE|END|IS|IN|ORDER|GROUP)\b)([A-Za-z_]\w*)\b",
            re.IGNORECASE,
        ),
        r"(SELECT string_to_array(\1) AS \2) AS _\2(\2)",
    ),
    (
        re.compile(r"\bAS\s+(regclass|regtype|regproc|regnamespace|oid)\s*\)", re.IGNORECASE),
        "AS BIGINT)",
    ),
)
# Functions clients call that DuckDB lacks, as macros on the catalog connection.
_MACROS = (
    "CREATE MACRO pg_get_userbyid(id) AS 'funnelpulse'",
    "CREATE MACRO pg_encoding_to_char(id) AS 'UTF8'",
    "CREATE MACRO pg_relation_size(id) AS 0",
    "CREATE MACRO pg_total_relation_size(id) AS 0",
    "CREATE MACRO pg_get_partkeydef(id) AS NULL",
    "CREATE MACRO pg_get_function_identity_arguments(id) AS ''",
    "CREATE MACRO pg_get_expr(node, relation) AS NULL, (node, relation, pretty) AS NULL",
    "CREATE MACRO pg_get_constraintdef(id, pretty) AS NULL",
    "CREATE MACRO pg_get_indexdef(id, col, pretty) AS NULL",
    "CREATE MACRO pg_get_statisticsobjdef_columns(id) AS NULL",
    "CREATE MACRO obj_description(id, catalog) AS NULL",
    "CREATE MACRO col_description(id, col) AS NULL",
    "CREATE MACRO shobj_description(id, catalog) AS NULL",
    "CREATE MACRO pg_get_triggerdef(id, pretty) AS NULL",
    "CREATE MACRO pg_get_ruledef(id, pretty) AS NULL",
    "CREATE MACRO pg_partition_tree(id) AS NULL",
    "CREATE MACRO pg_relation_is_publishable(id) AS false",
    "CREATE MACRO array_upper(a, dimension) AS len(a)",
    "CREATE MACRO to_regtype(name) AS NULL::BIGINT",
    "CREATE MACRO quote_ident(name) AS CASE WHEN regexp_full_match(name, '[a-z_][a-z0-9_$]*') "
    "THEN name ELSE '\"' || replace(name, '\"', '\"\"') || '\"' END",
    "CREATE MACRO parse_ident(name) AS string_split(name, '.')",
    # Postgres' own type names, which drivers map to their types (SQLAlchemy, JDBC).
    "CREATE MACRO format_type(id, typmod) AS CASE pg_catalog.format_type(id, typmod) "
    "WHEN 'int8' THEN 'bigint' WHEN 'int4' THEN 'integer' WHEN 'int2' THEN 'smallint' "
    "WHEN 'float8' THEN 'double precision' WHEN 'float4' THEN 'real' "
    "WHEN 'varchar' THEN 'character varying' WHEN 'bool' THEN 'boolean' "
    "WHEN 'timestamptz' THEN 'timestamp with time zone' "
    "WHEN 'timestamp' THEN 'timestamp without time zone' "
    "ELSE pg_catalog.format_type(id, typmod) END",
    "CREATE MACRO array_lower(a, dimension) AS 1",
    "CREATE MACRO pg_get_serial_sequence(tbl, col) AS NULL::VARCHAR",
    "CREATE MACRO pg_collation_is_visible(id) AS true",
    "CREATE MACRO pg_type_is_visible(id) AS true",
    "CREATE MACRO pg_function_is_visible(id) AS true",
    "CREATE MACRO to_regclass(name) AS NULL::BIGINT",
    # Read-only: every table may be read (SELECT) and none written, whoever asks.
    "CREATE MACRO has_table_privilege(who, tbl, privilege) AS "
    "lower(trim(privilege)) IN ('select', 'select with grant option'), "
    "(tbl, privilege) AS lower(trim(privilege)) IN ('select', 'select with grant option')",
    "CREATE MACRO has_any_column_privilege(who, tbl, privilege) AS "
    "lower(trim(privilege)) IN ('select', 'select with grant option'), "
    "(tbl, privilege) AS lower(trim(privilege)) IN ('select', 'select with grant option')",
    "CREATE MACRO has_column_privilege(who, tbl, col, privilege) AS "
    "lower(trim(privilege)) IN ('select', 'select with grant option'), "
    "(tbl, col, privilege) AS lower(trim(privilege)) IN ('select', 'select with grant option')",
    "CREATE MACRO has_schema_privilege(who, schema, privilege) AS "
    "lower(trim(privilege)) = 'usage', (schema, privilege) AS lower(trim(privilege)) = 'usage'",
)


@dataclass
class Result:
    """What one statement returned: column names and engine types, rows, and Postgres' tag."""

    columns: list[tuple[str, str]] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    tag: str = "SELECT 0"
    truncated: bool = False
    versions: dict[str, int | None] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]]:
        names = [c[0] for c in self.columns]
        return [dict(zip(names, r, strict=True)) for r in self.rows]


def database_name(asked: str | None) -> str:
    """The database a client sees (current_database(), pg_database, catalog columns): the name
    it connected with when that is a plain name, else `funnelpulse`."""
    if asked and _DATABASE_NAME.fullmatch(asked) and asked.lower() not in _RESERVED_NAMES:
        return asked
    return DATABASE


def _named(con: Any, database: str) -> Any:
    """`con` working in an empty in-memory database called `database` (the engine's own default
    name, `memory`, is what tools would otherwise show as the database)."""
    con.execute(f'ATTACH \':memory:\' AS "{database}"')
    con.execute(f'USE "{database}"')
    con.execute("DETACH memory")
    return con


def _locked_connection(database: str = DATABASE) -> Any:
    con = _named(connect(), database)
    con.execute("SET enable_external_access=false")
    con.execute("SET autoinstall_known_extensions=false")
    con.execute("SET autoload_known_extensions=false")
    con.execute("SET lock_configuration=true")
    return con


def _pieces(sql: str) -> Iterator[tuple[str, int, int]]:
    """`sql` cut into consecutive (kind, start, end) pieces: "comment" (a `--` line comment up to
    its newline), ";" (a semicolon) and "text" (the rest). Quoted text and quoted names are text,
    so a `--` or `;` inside them is neither."""
    i, start, quote = 0, 0, ""
    while i < len(sql):
        ch = sql[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == ";" or sql.startswith("--", i):
            if start < i:
                yield "text", start, i
            if ch == ";":
                kind, end = ";", i + 1
            else:
                kind, end = "comment", sql.find("\n", i)
                end = len(sql) if end < 0 else end
            yield kind, i, end
            i = start = end
            continue
        i += 1
    if start < len(sql):
        yield "text", start, len(sql)


def uncommented(sql: str) -> str:
    """`sql` without its `--` line comments (quoted text kept): a comment naming a table or
    holding a quote (Metabase heads each query with one) must not steer how it is run."""
    return "".join(sql[a:b] for kind, a, b in _pieces(sql) if kind != "comment")


def split(sql: str) -> list[str]:
    """The statements of a script (semicolons inside strings, quoted names and comments kept)."""
    out, start = [], 0
    for kind, a, b in _pieces(sql):
        if kind == ";":
            out.append(sql[start:a])
            start = b
    out.append(sql[start:])
    return [s.strip() for s in out if s.strip()]


class SqlSession:
    """One client's read-only SQL over a warehouse (not thread-safe: one per connection)."""

    def __init__(
        self,
        warehouse: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_rows: int = DEFAULT_MAX_ROWS,
        database: str | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.database = database_name(database)
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self.settings = dict(SESSION_SETTINGS)
        self.backend_pid = 0  # the id a Postgres-wire client was given for cancel requests
        self._data = _locked_connection(self.database)
        self._catalog = _named(connect(), self.database)
        self._pinned: dict[str, int | None] = {}
        self._cancelled = False
        self._described: dict[str, pa.Schema] = {}
        for macro in _MACROS:
            self._catalog.execute(macro)
        for name, body in _CATALOG_VIEWS.items():
            self._catalog.execute(f"CREATE VIEW fp_{name} AS {body}")
        self._catalog.execute("SET integer_division=true")  # Postgres' 7/2 = 3 in catalog SQL
        self._catalog.execute("SET enable_external_access=false")
        self._catalog.execute("SET lock_configuration=true")
        self._refresh_catalog()

    def close(self) -> None:
        self._data.close()
        self._catalog.close()

    def interrupt(self) -> None:
        """Cancel the statement running now (a client's cancel request)."""
        self._cancelled = True
        self._data.interrupt()
        self._catalog.interrupt()

    # -- tables ----------------------------------------------------------------------------
    def table_names(self) -> list[str]:
        return queries.Snapshot(self.warehouse).names()

    def _refresh_catalog(self) -> None:
        """Empty copies of the warehouse's tables, so catalog queries list them with columns."""
        snap = queries.Snapshot(self.warehouse)
        for name in snap.names():
            schema = snap.dataset(name).schema
            if self._described.get(name) == schema:
                continue
            self._catalog.register("_empty", schema.empty_table())
            self._catalog.execute(f'DROP TABLE IF EXISTS "{name}"')
            self._catalog.execute(f'CREATE TABLE "{name}" AS SELECT * FROM _empty')
            self._catalog.unregister("_empty")
            self._described[name] = schema

    def _pin(self, names: Iterable[str]) -> dict[str, int | None]:
        snap = queries.Snapshot(self.warehouse)
        for name in names:
            data = snap.dataset(name)
            if name not in self._pinned or self._pinned[name] != snap.versions[name]:
                self._data.register(name, data)
                self._pinned[name] = snap.versions[name]
        return dict(snap.versions)

    def _damaged(self) -> str | None:
        """A statement failed: if a table's data file is lost or corrupted, say which and what
        to run (the reader's own message is about file formats, not about the warehouse)."""
        from . import tables

        try:
            error = tables.broken_files_error(self.warehouse)
        except Exception:  # the check is a courtesy: the engine's message still stands
            return None
        return None if error is None else str(error)

    # -- statements ------------------------------------------------------------------------
    def run(self, statement: str) -> Result:
        """Run one statement, read-only, within the statement timeout."""
        text = uncommented(statement).strip().rstrip(";").strip()
        if not text:
            return Result(tag="EMPTY")
        answered = self._session_statement(text)
        if answered is not None:
            return answered
        text = _SETTING.sub(lambda m: self._setting_literal(m.group(1)), text)
        bare = _STRING.sub("''", text)
        if _OTHER_SESSIONS.search(bare):
            raise ReadOnlyError(
                "Ending or cancelling other sessions' statements is not allowed here. Cancel "
                "your own statement with your client's cancel request"
            )
        text = _BACKEND_PID.sub(str(self.backend_pid), text)
        mentioned = [
            n for n in queries.TABLE_NAMES if re.search(rf"\b{re.escape(n)}\b", bare, re.I)
        ]
        existing = set(self.table_names())
        use_catalog = not (set(mentioned) & existing) and bool(_CATALOG.search(bare))
        if use_catalog:
            self._refresh_catalog()
            for pattern, replacement in _REWRITES:
                text = pattern.sub(replacement, text)
            con, versions = self._catalog, {}
        else:
            con, versions = self._data, self._pin(n for n in mentioned if n in existing)
        self._check_type(con, text)
        result = self._execute(con, text)
        result.versions = versions
        return result

    def _setting_literal(self, name: str) -> str:
        """current_setting('name') as the literal Postgres would return."""
        value = self.settings.get(name.lower())
        if value is None:
            raise SqlError(f'unrecognized configuration parameter "{name}"')
        return "'" + value.replace("'", "''") + "'"

    def _session_statement(self, text: str) -> Result | None:
        if _TRANSACTION.match(text):
            word = text.split()[0].upper()
            tags = {"START": "START TRANSACTION", "END": "COMMIT", "ABORT": "ROLLBACK"}
            tag = tags.get(word, word)
            if word in ("DISCARD", "RESET", "DEALLOCATE", "CLOSE", "UNLISTEN"):
                tag = " ".join(text.split()[:2]).upper() if word == "DISCARD" else word
            return Result(tag=tag)
        show = _SHOW.match(text)
        if show:
            name = " ".join(show.group(1).lower().split())
            if name == "transaction isolation level":
                name = "transaction_isolation"
            if name == "all":
                rows = [(k, v, "") for k, v in sorted(self.settings.items())]
                return Result(
                    [("name", "VARCHAR"), ("setting", "VARCHAR"), ("description", "VARCHAR")],
                    rows,
                    "SHOW",
                )
            if name not in self.settings:
                raise SqlError(f'unrecognized configuration parameter "{name}"')
            return Result([(name, "VARCHAR")], [(self.settings[name],)], "SHOW")
        if re.match(r"^\s*SET\b", text, re.I):
            match = _SET.match(text)
            name = " ".join(match.group(1).lower().split()) if match else ""
            if name in ("transaction isolation level", "session characteristics"):
                return Result(tag="SET")
            if name == "time zone":
                name = "timezone"
            if name == "names":
                name = "client_encoding"
            if match is None or name not in self.settings or name.startswith("server_"):
                raise ReadOnlyError(
                    f"Changing the setting {name or text!r} is not allowed: this server is "
                    "read-only. Only session settings Postgres clients send on connect "
                    "(application_name, DateStyle, extra_float_digits, search_path, ...) are "
                    "accepted"
                )
            value = match.group(2).strip().strip("'\"")
            if name == "timezone" and value.upper() not in (
                "UTC",
                "GMT",
                "ETC/UTC",
                "0",
                "DEFAULT",
            ):
                raise ReadOnlyError(
                    f"Time zone {value!r} is not available: every time here is UTC. Leave "
                    "TimeZone at UTC and convert in the client"
                )
            self.settings[name] = value if value.upper() != "DEFAULT" else SESSION_SETTINGS[name]
            return Result(tag="SET")
        return None

    def _check_type(self, con: Any, text: str) -> None:
        import duckdb

        try:
            statements = con.extract_statements(text)
        except duckdb.Error as exc:
            raise SqlError(_engine_message(exc)) from exc
        if len(statements) != 1:
            raise SqlError("Send one statement at a time")
        kind = statements[0].type.name
        if kind not in _ALLOWED_TYPES:
            word = text.split()[0].upper()
            raise ReadOnlyError(
                f"{word} statements are not allowed: this server is read-only (queries only). "
                "Use SELECT, or change the data with `funnelpulse build`"
            )

    def _execute(self, con: Any, text: str) -> Result:
        import duckdb

        self._cancelled = False
        timer = threading.Timer(self.timeout_s, con.interrupt)
        timer.daemon = True
        timer.start()
        try:
            cursor = con.execute(text)
            names = [(d[0], str(d[1])) for d in cursor.description or []]
            rows = cursor.fetchmany(self.max_rows + 1)
        except duckdb.InterruptException as exc:
            if self._cancelled:
                raise StatementTimeout("canceling statement due to user request") from exc
            raise StatementTimeout(
                f"The statement ran longer than the {self.timeout_s:g} s statement timeout and "
                "was cancelled. Narrow it (a date range, fewer columns) and run it again"
            ) from exc
        except duckdb.PermissionException as exc:
            raise ReadOnlyError(
                "Reading or writing files, attaching databases and installing extensions are "
                "not allowed: this server reads the warehouse's tables only. Query them by name"
            ) from exc
        except duckdb.Error as exc:
            typo = (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException)
            damaged = None if isinstance(exc, typo) else self._damaged()
            raise SqlError(damaged or _engine_message(exc)) from exc
        finally:
            timer.cancel()
        truncated = len(rows) > self.max_rows
        rows = rows[: self.max_rows]
        return Result(names, rows, f"SELECT {len(rows)}", truncated)


def _engine_message(exc: Exception) -> str:
    """The engine's error without its class prefix ("Binder Error: ..."): what is wrong."""
    text = str(exc).strip()
    text = re.sub(r"^[A-Za-z ]*Error:\s*", "", text)
    return text.split("\n\n")[0] or "The statement failed"
