"""SQL over the Postgres wire protocol with real clients (Debian's psql, psycopg 3, SQLAlchemy)
against a running `funnelpulse sql-server`, and `funnelpulse sql` in the terminal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import sample_copy
from serving import running

from funnelpulse import tables
from funnelpulse.cli import cli
from funnelpulse.localdb import connect

psycopg = pytest.importorskip("psycopg")
sa = pytest.importorskip("sqlalchemy")

PASSWORD = "s3cret-for-tests"
PSQL = shutil.which("psql")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory, _sample_built: Path) -> str:
    p = sample_copy(_sample_built, tmp_path_factory.mktemp("sql"))  # the sample, built
    return p.warehouse


@pytest.fixture(scope="module")
def port(warehouse: str) -> Iterator[int]:
    env = {"FUNNELPULSE_SQL_PASSWORD": PASSWORD}
    with running(warehouse, "sql-server", "--timeout-s", "2", env=env) as p:
        yield p


def dsn(port: int, password: str = PASSWORD) -> str:
    return f"host=127.0.0.1 port={port} user=analyst dbname=funnelpulse password={password}"


def duck(warehouse: str, sql: str) -> list[tuple[Any, ...]]:
    """The same query run in-process by DuckDB on the same tables."""
    con = connect()
    for name in tables.ALL_TABLES:
        path = tables.table_path(warehouse, name)
        if tables.exists(path):
            con.register(name, tables.dataset(path))
    return con.sql(sql).fetchall()


def psql(port: int, *commands: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    assert PSQL, "psql is missing: run `make test-deps` (Debian's postgresql-client)"
    args = [PSQL, "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "analyst", "-d", "funnelpulse"]
    for command in commands:
        args += ["-c", command]
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)


QUERY = """SELECT brand, sum(views) AS views, sum(purchases) AS purchases, round(sum(revenue), 2)
FROM gold_funnel_daily_brand WHERE date BETWEEN DATE '2019-10-01' AND DATE '2019-10-31'
GROUP BY brand ORDER BY views DESC, brand NULLS FIRST LIMIT 20"""


def test_psql_lists_and_describes_tables(port: int) -> None:
    listed = psql(port, r"\dt")
    assert listed.returncode == 0, listed.stderr
    for name in (tables.GOLD_DAILY_BRAND, tables.SILVER, tables.GOLD_SESSION_FUNNEL):
        assert f" {name} " in listed.stdout and "| table |" in listed.stdout
    described = psql(port, rf"\d {tables.GOLD_DAILY_BRAND}")
    assert described.returncode == 0, described.stderr
    assert f'Table "main.{tables.GOLD_DAILY_BRAND}"' in described.stdout
    for column, kind in (
        ("date", "date"),
        ("brand", "character varying"),
        ("views", "bigint"),
        ("revenue", "double precision"),
    ):
        assert any(
            line.split("|")[0].strip() == column and line.split("|")[1].strip() == kind
            for line in described.stdout.splitlines()
            if "|" in line
        ), (column, described.stdout)


def test_psql_select_equals_duckdb(port: int, warehouse: str) -> None:
    done = psql(port, QUERY.replace("\n", " "))
    assert done.returncode == 0, done.stderr
    want = duck(warehouse, QUERY)
    lines = [ln for ln in done.stdout.splitlines()[2:] if "|" in ln]
    got = [tuple(cell.strip() for cell in ln.split("|")) for ln in lines]
    assert len(got) == len(want) == 20
    for g, w in zip(got, want, strict=True):
        assert g == tuple("" if v is None else str(v) for v in w)


def test_psycopg_select_with_parameters_equals_duckdb(port: int, warehouse: str) -> None:
    with psycopg.connect(dsn(port), connect_timeout=10) as con:
        got = con.execute(
            "SELECT brand, views, revenue, date FROM gold_funnel_daily_brand "
            "WHERE brand = %s AND views >= %s ORDER BY date",
            ["runail", 5],
        ).fetchall()
        assert con.execute(QUERY).fetchall() == [
            tuple(float(v) if isinstance(v, float) else v for v in r)
            for r in duck(warehouse, QUERY)
        ]
    want = duck(
        warehouse,
        "SELECT brand, views, revenue, date FROM gold_funnel_daily_brand "
        "WHERE brand = 'runail' AND views >= 5 ORDER BY date",
    )
    assert got == want and len(got) > 1


def test_sqlalchemy_reflects_and_queries(port: int, warehouse: str) -> None:
    engine = sa.create_engine(
        f"postgresql+psycopg://analyst:{PASSWORD}@127.0.0.1:{port}/funnelpulse"
    )
    try:
        with engine.connect() as con:
            inspector = sa.inspect(con)
            names = inspector.get_table_names()
            assert {tables.GOLD_DAILY_BRAND, tables.SILVER, tables.BRONZE} <= set(names)
            reflected = inspector.get_columns(tables.GOLD_DAILY_BRAND)
            columns = [c["name"] for c in reflected]
            kinds = {c["name"]: c["type"] for c in reflected}
            assert isinstance(kinds["views"], sa.BigInteger)  # Postgres type names, understood
            assert isinstance(kinds["brand"], sa.String)
            assert isinstance(kinds["date"], sa.Date)
            schema = tables.dataset(tables.table_path(warehouse, tables.GOLD_DAILY_BRAND)).schema
            assert columns == schema.names
            got = con.execute(
                sa.text("SELECT count(*) FROM silver_events WHERE brand = :b"), {"b": "runail"}
            ).scalar()
    finally:
        engine.dispose()
    assert got == duck(warehouse, "SELECT count(*) FROM silver_events WHERE brand = 'runail'")[0][0]


@pytest.mark.parametrize(
    "statement, words",
    [
        ("INSERT INTO anomalies SELECT * FROM anomalies", "INSERT statements are not allowed"),
        ("DELETE FROM silver_events", "DELETE statements are not allowed"),
        ("CREATE TABLE t AS SELECT 1", "CREATE statements are not allowed"),
        ("COPY gold_funnel_daily_brand TO '/tmp/out.csv'", "COPY statements are not allowed"),
        ("ATTACH '/tmp/other.duckdb' AS other", "ATTACH statements are not allowed"),
        ("INSTALL httpfs", "INSTALL statements are not allowed"),
        ("LOAD httpfs", "LOAD statements are not allowed"),
        ("SET threads = 1", "Changing the setting 'threads' is not allowed"),
        ("SET enable_external_access = true", "is not allowed"),
        ("SELECT * FROM read_csv('/etc/passwd')", "Reading or writing files"),
        ("SELECT * FROM read_text('/etc/hostname')", "Reading or writing files"),
        ("SELECT * FROM glob('/*')", "Reading or writing files"),
    ],
)
def test_writes_files_and_settings_are_refused(port: int, statement: str, words: str) -> None:
    with psycopg.connect(dsn(port), connect_timeout=10) as con:
        with pytest.raises(psycopg.Error) as refused:
            con.execute(statement)
        assert words in str(refused.value)
        con.rollback()
        assert con.execute("SELECT 1").fetchall() == [(1,)]  # the session goes on


def test_client_session_settings_are_answered(port: int) -> None:
    with psycopg.connect(dsn(port), connect_timeout=10, autocommit=True) as con:
        con.execute("SET application_name = 'grafana'")
        con.execute("SET extra_float_digits = 3")
        assert con.execute("SHOW application_name").fetchall() == [("grafana",)]
        assert con.execute("SHOW transaction isolation level").fetchall() == [("read committed",)]
        assert con.execute("SELECT version()").fetchall()[0][0].startswith("PostgreSQL 15")
        assert con.execute("SELECT current_schema()").fetchall() == [("main",)]


def test_a_runaway_statement_is_cancelled_and_the_server_stays_up(port: int) -> None:
    with psycopg.connect(dsn(port), connect_timeout=10) as con:
        with pytest.raises(psycopg.errors.QueryCanceled) as cancelled:
            con.execute("SELECT count(*) FROM range(1000000000000) a, range(10) b")
        assert "statement timeout" in str(cancelled.value)
        con.rollback()
        assert con.execute("SELECT count(*) FROM gold_funnel_daily_brand").fetchall()[0][0] > 0
    with psycopg.connect(dsn(port), connect_timeout=10) as other:  # and new clients still connect
        assert other.execute("SELECT 2").fetchall() == [(2,)]


def test_a_wrong_password_is_refused(port: int) -> None:
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(dsn(port, "not-the-password"), connect_timeout=10)
    assert "password authentication failed" in str(refused.value)
    done = psql(port, "SELECT 1", password="wrong")
    assert done.returncode != 0 and "password authentication failed" in done.stderr


def test_serving_beyond_loopback_needs_a_password(
    warehouse: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FUNNELPULSE_SQL_PASSWORD", raising=False)
    done = CliRunner().invoke(cli, ["--warehouse", warehouse, "sql-server", "--host", "0.0.0.0"])
    assert done.exit_code == 1
    assert "needs FUNNELPULSE_SQL_PASSWORD" in done.output


# --- funnelpulse sql in the terminal ---------------------------------------------------------


def test_sql_command_prints_table_csv_and_json(warehouse: str) -> None:
    runner = CliRunner()
    base = ["--warehouse", warehouse, "sql"]
    want = duck(warehouse, QUERY)
    as_json = runner.invoke(cli, [*base, QUERY, "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.output)
    assert [tuple(r.values()) for r in rows] == [tuple(r) for r in want]
    as_csv = runner.invoke(cli, [*base, QUERY, "--format", "csv"])
    assert as_csv.output.splitlines()[0].startswith("brand,views,purchases")
    assert len(as_csv.output.splitlines()) == len(want) + 1
    as_table = runner.invoke(cli, [*base, "SELECT 1 AS one"])
    assert as_table.output.split() == ["one", "---", "1", "(1", "row)"]


@pytest.mark.parametrize(
    "statement, words",
    [
        ("DROP TABLE silver_events", "DROP statements are not allowed"),
        ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY statements are not allowed"),
        ("SELECT * FROM read_parquet('/tmp/*.parquet')", "Reading or writing files"),
        ("SELECT * FROM no_such_table", "no_such_table"),
    ],
)
def test_sql_command_refuses_with_one_error_line(
    warehouse: str, statement: str, words: str
) -> None:
    done = CliRunner().invoke(cli, ["--warehouse", warehouse, "sql", statement])
    assert done.exit_code == 1
    assert done.output.startswith("Error: ") and words in done.output
    assert "Traceback" not in done.output and "Exception" not in done.output


def test_sql_command_timeout(warehouse: str) -> None:
    done = CliRunner().invoke(
        cli,
        [
            "--warehouse",
            warehouse,
            "sql",
            "SELECT count(*) FROM range(1000000000000)",
            "--timeout-s",
            "0.5",
        ],
    )
    assert done.exit_code == 1 and "statement timeout" in done.output


def test_a_client_cancel_request_stops_its_statement(port: int) -> None:
    import threading

    with psycopg.connect(dsn(port), connect_timeout=10) as con:
        timer = threading.Timer(0.5, con.cancel)
        timer.start()
        with pytest.raises(psycopg.errors.QueryCanceled) as cancelled:
            con.execute("SELECT count(*) FROM range(1000000000000) a, range(10) b")
        assert "user request" in str(cancelled.value)  # the client's cancel, not the timeout
        con.rollback()
        assert con.execute("SELECT 3").fetchall() == [(3,)]


def test_grafanas_catalog_queries_are_answered(port: int, warehouse: str) -> None:
    """The statements Grafana's PostgreSQL data source sends (recorded from its source)."""
    from pathlib import Path

    from funnelpulse.sql import split

    fixture = Path(__file__).parent / "fixtures" / "pg_clients" / "grafana.sql"
    version, timescale, listed, columns = split(fixture.read_text())
    with psycopg.connect(dsn(port), connect_timeout=10, autocommit=True) as con:
        assert con.execute(version).fetchall() == [(1500,)]  # server_version_num 150000 / 100
        assert con.execute(timescale).fetchall() == []
        names = [r[0] for r in con.execute(listed).fetchall()]
        got = con.execute(columns).fetchall()
    assert {tables.GOLD_DAILY_BRAND, tables.SILVER, tables.GOLD_SESSION_FUNNEL} <= set(names)
    assert not [n for n in names if n.startswith("fp_") or "." in n]  # no helper views, no schema
    schema = tables.dataset(tables.table_path(warehouse, tables.GOLD_DAILY_BRAND)).schema
    assert [c for c, _ in got] == schema.names
    assert dict(got)["date"] == "DATE" and dict(got)["views"] == "BIGINT"


FIXTURES = Path(__file__).parent / "fixtures" / "pg_clients"
JAVA = shutil.which("java")
JDBC_JAR = Path("/usr/share/java/postgresql.jar")  # Debian's libpostgresql-jdbc-java


def replay(port: int, name: str) -> list[Any]:
    """Each statement of a recorded client fixture through psycopg: its rows, its status, or
    the error it got."""
    from funnelpulse.sql import split

    out: list[Any] = []
    with psycopg.connect(dsn(port), connect_timeout=10, autocommit=True) as con:
        for statement in split((FIXTURES / name).read_text()):
            try:
                cur = con.execute(statement)
            except psycopg.Error as exc:
                out.append(exc)
                continue
            out.append(cur.fetchall() if cur.description else cur.statusmessage)
        out.append(con.info.backend_pid)
    return out


def served(warehouse: str) -> tuple[list[str], list[str]]:
    from funnelpulse import queries

    schema = tables.dataset(tables.table_path(warehouse, tables.GOLD_DAILY_BRAND)).schema
    return queries.Snapshot(warehouse).names(), schema.names


def test_metabases_catalog_queries_are_answered(port: int, warehouse: str) -> None:
    """The statements Metabase's PostgreSQL driver sends on connect and sync (recorded from its
    source): time zone, enum types, tables, columns with Postgres' type names, foreign keys."""
    timezone, enums, listed, fields, fks, privileges, _ = replay(port, "metabase.sql")
    names, columns = served(warehouse)
    assert timezone == [("UTC",)]
    assert enums == [] and fks == []
    assert sorted(r[1] for r in listed) == sorted(names)
    assert {(r[0], r[2]) for r in listed} == {("main", "TABLE")}
    assert [r[0] for r in fields] == columns
    assert [r[2] for r in fields] == list(range(len(columns)))
    types = {r[0]: r[1] for r in fields}
    assert (types["date"], types["brand"], types["views"], types["revenue"]) == (
        "date",
        "text",
        "int8",
        "float8",
    )
    # Its table-privilege check: every table readable (select), none writable.
    assert not [r for r in privileges if isinstance(r, Exception)]
    assert sorted(r[2] for r in privileges) == sorted(names)
    assert {(r[0], r[1], r[3], r[4], r[5], r[6]) for r in privileges} == {
        (None, "main", False, True, False, False)
    }


def test_supersets_catalog_queries_are_answered_and_its_cancel_refused(
    port: int, warehouse: str
) -> None:
    """Superset's own statements (recorded from its source) and the SQLAlchemy reflection
    queries its inspector makes: each answered, except ending another session, refused."""
    answers = replay(port, "superset.sql")
    catalogs, search_path, plan, pid, terminate, *reflection, backend_pid = answers
    names, columns = served(warehouse)
    assert catalogs == [("funnelpulse",)]  # the database it connected to, not the engine's name
    assert search_path == "SET"
    assert plan and "gold_funnel_daily_brand" not in str(plan[0][0]).split("\n")[0]  # a plan
    assert pid == [(backend_pid,)]  # the id the client was given for cancel requests
    assert isinstance(terminate, psycopg.errors.ReadOnlySqlTransaction)
    assert "not allowed" in str(terminate) and "cancel request" in str(terminate)
    errors = [a for a in reflection if isinstance(a, Exception)]
    assert errors == []
    schemas, listed, foreign, views, fields, *_ = reflection
    assert schemas == [("main",)]
    assert sorted(r[0] for r in listed) == sorted(names)
    assert foreign == [] and views == []
    assert [r[0] for r in fields] == columns
    assert dict((r[0], r[1]) for r in fields)["views"] == "bigint"


@pytest.mark.parametrize("dbname", ["funnelpulse", "analytics"])
def test_clients_see_the_database_they_connected_to(port: int, dbname: str) -> None:
    """current_database(), pg_database and every catalog column name the database the client
    connected to (what Superset lists as its catalog), never the engine's own `memory`."""
    dsn_named = dsn(port).replace("dbname=funnelpulse", f"dbname={dbname}")
    with psycopg.connect(dsn_named, connect_timeout=10, autocommit=True) as con:
        current = con.execute("SELECT current_database(), current_catalog").fetchall()
        databases = con.execute("SELECT datname FROM pg_catalog.pg_database").fetchall()
        catalogs = con.execute(
            "SELECT DISTINCT table_catalog FROM information_schema.tables "
            "UNION SELECT DISTINCT table_catalog FROM information_schema.columns "
            "UNION SELECT DISTINCT catalog_name FROM information_schema.schemata"
        ).fetchall()
        listed = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = %s",
            (dbname,),
        ).fetchall()
        beside = con.execute(
            f"SELECT current_database(), count(*) FROM {tables.GOLD_DAILY_BRAND}"
        ).fetchall()
    assert current == [(dbname, dbname)]
    assert databases == [(dbname,)]
    assert {c for (c,) in catalogs} <= {dbname, "system", "temp"}
    assert dbname in {c for (c,) in catalogs}
    assert tables.GOLD_DAILY_BRAND in {n for (n,) in listed}
    assert beside[0][0] == dbname and beside[0][1] > 0


@pytest.mark.parametrize(
    ("asked", "shown"),
    [
        ("Sales_2019", "Sales_2019"),
        ("memory", "funnelpulse"),  # the engine's own name: never shown
        ("system", "funnelpulse"),
        ('my"db; DROP', "funnelpulse"),
        ("", "funnelpulse"),
    ],
)
def test_an_unusable_database_name_is_shown_as_funnelpulse(
    warehouse: str, asked: str, shown: str
) -> None:
    from funnelpulse.sql import SqlSession

    session = SqlSession(warehouse, database=asked)
    try:
        assert session.run("SELECT current_database()").rows == [(shown,)]
        listed = session.run("SELECT DISTINCT table_catalog FROM information_schema.tables")
        assert listed.rows == [(shown,)]
        got = session.run(f"SELECT count(*) FROM {tables.GOLD_DAILY_BRAND}").rows
        assert got == duck(warehouse, f"SELECT count(*) FROM {tables.GOLD_DAILY_BRAND}")
    finally:
        session.close()


def test_jdbc_connects_lists_and_queries_like_metabase(port: int, warehouse: str) -> None:
    """Debian's PostgreSQL JDBC driver (what Metabase connects with): its metadata calls list
    the schema, tables and columns, Metabase's statements run, a gold query with a bound date
    equals the same query in DuckDB."""
    assert JAVA and JDBC_JAR.exists(), (
        "Java or the JDBC driver is missing: run `make test-deps` (libpostgresql-jdbc-java)"
    )
    done = subprocess.run(
        [
            JAVA,
            "-cp",
            str(JDBC_JAR),
            str(FIXTURES / "JdbcCheck.java"),
            str(port),
            PASSWORD,
            str(FIXTURES / "metabase.sql"),
            "2019-10-01",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    facts: dict[str, list[list[str]]] = {}
    for line in done.stdout.splitlines():
        kind, *rest = line.split("\t")
        facts.setdefault(kind, []).append(rest)
    names, columns = served(warehouse)
    assert facts["PRODUCT"] == [["PostgreSQL", "15.0"]]
    assert ["main"] in facts["SCHEMA"]
    assert sorted(t[0] for t in facts["TABLE"]) == sorted(names)
    assert [c[0] for c in facts["COLUMN"]] == columns
    assert dict(facts["COLUMN"])["views"] == "int8" and dict(facts["COLUMN"])["date"] == "date"
    assert facts["STATEMENT"] == [
        ["0", "1"],
        ["1", "0"],
        ["2", str(len(names))],
        ["3", str(len(columns))],
        ["4", "0"],
        ["5", str(len(names))],  # its table privileges: one row per table
    ]
    want = duck(
        warehouse,
        """SELECT brand, sum(views) AS views, sum(purchases) AS purchases
        FROM gold_funnel_daily_brand WHERE date >= DATE '2019-10-01' GROUP BY brand
        ORDER BY views DESC, brand LIMIT 5""",
    )
    assert facts["ROW"] == [["null" if b is None else b, str(v), str(p)] for b, v, p in want]
    assert len(want) == 5
