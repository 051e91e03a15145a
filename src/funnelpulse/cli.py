"""The `funnelpulse` command: parse flags, call the library, print. Nothing else lives here."""

from __future__ import annotations

import gc
import json
import sys
from contextlib import AbstractContextManager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .cli_incidents import digest, incidents
from .cli_options import (
    ANNOTATION_SEGMENT,
    CONF_OPTION,
    DATE,
    ENGINE_OPTION,
    KAFKA_URL,
    MASTER_OPTION,
    NON_NEGATIVE,
    PORT,
    POSITIVE,
    SINK_OPTION,
    SOURCE_URL,
    TIME,
    WINDOW,
    check_range,
    event_file,
    usage_error,
)
from .config import ENGINES as ENGINE_NAMES
from .config import OFFSET_RESETS
from .errors import FunnelPulseError

if TYPE_CHECKING:
    from .console import Progress
    from .pipeline import Pipeline


class _Context:
    """The group's flags, handed to every command."""

    def __init__(self, warehouse: str | None, config: str | None, quiet: bool) -> None:
        self.warehouse = warehouse
        self.config = config
        self.quiet = quiet

    def progress(self) -> AbstractContextManager[Progress]:
        """A spinner per step on stderr, or nothing with --quiet."""
        from .console import progress

        return progress(self.quiet)

    def pipeline(self, progress: Progress | None, **overrides: Any) -> Pipeline:
        """The library, with the settings file, --warehouse and this command's flags applied."""
        from .config import load_settings
        from .pipeline import Pipeline

        settings = load_settings(self.config, warehouse=self.warehouse, **overrides)
        return Pipeline(settings, progress=progress)


def _say(text: str) -> None:
    """Echo a command's output (nothing at all when it has no lines)."""
    if text:
        click.echo(text)


class _Cli(click.Group):
    """The command group whose every error ends as one `Error:` line and an exit code, the same
    in process (click's CliRunner) as from the installed script."""

    def main(self, args: Any = None, prog_name: Any = None, **extra: Any) -> int:  # type: ignore[override]
        from .console import exit_code

        argv = sys.argv[1:] if args is None else list(args)
        standalone = extra.pop("standalone_mode", True)
        parse_and_run = super().main  # click's, which leaves the errors to exit_code
        code = exit_code(
            lambda: parse_and_run(argv, prog_name or "funnelpulse", standalone_mode=False, **extra),
            debug="--debug" in argv,
            diagnose=_diagnose,
        )
        if standalone:
            sys.exit(code)
        return code


_current: list[_Context] = []  # the running command's context, for _diagnose


def _diagnose(exc: BaseException) -> Exception | None:
    """Explain a failure the warehouse's state caused: a full or read-only disk, a data file
    lost or broken (which table, what to run). None: a real bug, shown as unexpected."""
    import errno

    import duckdb
    import pyarrow as pa

    from . import tables
    from .errors import WarehouseError

    if not _current:
        return None
    warehouse = _current[-1].pipeline(None).warehouse
    if tables.no_space(exc):
        return tables.storage_error(warehouse, exc)
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return WarehouseError(
                f"Cannot write {seen.filename or warehouse}: {seen.strerror}. This command "
                f"writes to the warehouse: make {warehouse} writable, or give a writable "
                "--warehouse"
            )
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, OSError | pa.ArrowException | duckdb.Error):
        return tables.broken_files_error(warehouse)
    return None


@click.group("funnelpulse", cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--warehouse",
    envvar="FUNNELPULSE_WAREHOUSE",
    default=None,
    help="Warehouse folder (local path or gs://). Default ./warehouse.",
)
@click.option(
    "--config", "config", default=None, help="Settings file (default ./funnelpulse.toml)."
)
@click.option("--quiet", "-q", is_flag=True, help="Print only results and errors.")
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
@click.option(
    "--log-level",
    envvar="FUNNELPULSE_LOG_LEVEL",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default=None,
    help="Operators' log lines on stderr (one per step with counts and seconds at INFO).",
)
@click.version_option(package_name="funnelpulse")
@click.pass_context
def cli(
    ctx: click.Context,
    warehouse: str | None,
    config: str | None,
    quiet: bool,
    debug: bool,
    log_level: str | None,
) -> None:
    """FunnelPulse: monitor the view -> cart -> purchase funnel on a Delta Lake warehouse."""
    if log_level:
        from .redact import scrubbed_logging

        scrubbed_logging(log_level.upper(), "%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = _Context(warehouse, config, quiet)
    _current[:] = [ctx.obj]


@cli.command()
@click.argument("files", nargs=-1)
@ENGINE_OPTION
@MASTER_OPTION
@CONF_OPTION
@click.pass_obj
def ingest(
    ctx: _Context,
    files: tuple[str, ...],
    engine: str | None,
    master: str | None,
    spark_conf: Any,
) -> None:
    """Load raw REES46 files (CSV, CSV.gz, Parquet) into bronze_events; bad rows go to quarantine.

    FILES may be local paths or URIs (gs://bucket/raw/, s3://..., file://...); a URI ending in /
    means every file in that folder. With --engine spark, Spark's executors read the files
    (URIs directly, e.g. gs:// on Dataproc).
    """
    from .pipeline import IngestIncomplete
    from .report import format_ingest

    if not files:
        raise usage_error("Give one or more CSV, CSV.gz or Parquet files (paths or gs://... URIs)")
    try:
        with ctx.progress() as progress:
            result = ctx.pipeline(
                progress, engine=engine, spark_master=master, spark_conf=spark_conf
            ).ingest(files)
    except IngestIncomplete as exc:  # say what is already in: re-running only the rest is enough
        _say(format_ingest(exc.committed))
        click.echo(
            f"{len(exc.committed.files)} file(s) committed before the error (listed above).",
            err=True,
        )
        raise exc.error from None
    _say(format_ingest(result))


@cli.command()
@ENGINE_OPTION
@MASTER_OPTION
@CONF_OPTION
@click.option("--since", type=DATE, default=None, help="First UTC date to rebuild.")
@click.option("--until", type=DATE, default=None, help="Last UTC date to rebuild.")
@click.option(
    "--full", is_flag=True, help="Rebuild every date, not only those whose bronze rows changed."
)
@click.option(
    "--allow-shrink",
    is_flag=True,
    help="Build even though bronze_events lost rows since the last build (gone on purpose).",
)
@click.pass_obj
def build(
    ctx: _Context,
    engine: str | None,
    master: str | None,
    spark_conf: Any,
    since: date | None,
    until: date | None,
    full: bool,
    allow_shrink: bool,
) -> None:
    """Build silver_events and the gold tables from bronze_events.

    With no dates, only the dates whose bronze rows changed since the last build are rebuilt (new
    files, replaced files, late events of any date); --since/--until rebuild a range, --full all."""
    from .report import format_build

    check_range(since, until)
    if full and (since or until):
        raise usage_error("--full rebuilds every date: leave out --since and --until")
    with ctx.progress() as progress:
        pipeline = ctx.pipeline(progress, engine=engine, spark_master=master, spark_conf=spark_conf)
        result = pipeline.build(since, until, full=full, allow_shrink=allow_shrink)
    _say(format_build(result))


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option(
    "--top", type=click.IntRange(min=1), default=5, show_default=True, help="Rows per segment list."
)
@click.option("--since", type=DATE, default=None, help="First UTC date counted.")
@click.option("--until", type=DATE, default=None, help="Last UTC date counted.")
@click.pass_obj
def report(ctx: _Context, fmt: str, top: int, since: date | None, until: date | None) -> None:
    """Print the summary: table sizes, date range, funnel, top brands, categories, price bands."""
    from .report import format_text

    check_range(since, until)
    data = ctx.pipeline(None).report(top, since, until)
    click.echo(json.dumps(data, indent=2, default=str) if fmt == "json" else format_text(data))


@cli.command()
@click.option(
    "--by",
    type=click.Choice(["brand", "category", "price_band"]),
    default=None,
    help="One row per value, held constant through the funnel.",
)
@click.option("--since", type=DATE, default=None, help="First UTC entry date (YYYY-MM-DD).")
@click.option("--until", type=DATE, default=None, help="Last UTC entry date (YYYY-MM-DD).")
@click.option(
    "--window",
    default="24h",
    show_default=True,
    callback=WINDOW,
    help="Conversion window: 30m, 2h, 7d.",
)
@click.option(
    "--same-product", is_flag=True, help="Cart and purchase must be of the viewed product."
)
@click.option("--by-user", is_flag=True, help="Count users (user_id) instead of sessions.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text")
@click.pass_obj
def funnel(
    ctx: _Context,
    by: str | None,
    since: date | None,
    until: date | None,
    window: int,
    same_product: bool,
    by_user: bool,
    fmt: str,
) -> None:
    """Ordered funnel per session: viewed, then carted, then purchased within the window."""
    from . import funnel as fn
    from . import queries

    check_range(since, until)
    spec = fn.FunnelSpec(window, by, same_product, by_user)
    pipeline = ctx.pipeline(None)
    memory = pipeline.settings.funnel_memory_mb or None
    result = queries.funnel(pipeline.warehouse, spec, since, until, memory_mb=memory).data
    if fmt == "json":
        click.echo(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        click.echo(
            fn.format_csv(result) if fmt == "csv" else fn.format_text(result), nl=fmt != "csv"
        )


@cli.command()
@click.option(
    "--method",
    type=click.Choice(["seasonal", "reference"]),
    default=None,
    help="seasonal (default): trailing same-hour baselines; reference: the original z-score.",
)
@click.option("--since", type=DATE, default=None, help="Only score hours from this UTC date on.")
@click.option(
    "--full",
    is_flag=True,
    help="Score every hour again (default: only the hours whose data changed since the last detect).",
)
@click.option("--alert", is_flag=True, help="Send one alert per incident to the configured sinks.")
@SINK_OPTION
@ENGINE_OPTION
@MASTER_OPTION
@CONF_OPTION
@click.pass_obj
def detect(
    ctx: _Context,
    method: str | None,
    since: date | None,
    full: bool,
    alert: bool,
    sinks: tuple[str, ...],
    engine: str | None,
    master: str | None,
    spark_conf: Any,
) -> None:
    """Find conversion drops/spikes and traffic changes per hour and segment; write `anomalies`.

    Only the hours whose data changed since the last detect are scored again (the table is the
    same as scoring everything); --full scores every hour. With --engine spark, the hourly
    segment aggregation over silver_events runs on Spark.
    """
    with ctx.progress() as progress:
        pipeline = ctx.pipeline(progress, engine=engine, spark_master=master, spark_conf=spark_conf)
        if alert:  # a sink that cannot deliver is refused before anomalies are rewritten
            pipeline.settings.check_sinks(sinks)
        result = pipeline.detect(method, since, full=full)
    from .report import format_detect

    click.echo(
        format_detect(result.anomalies.to_pylist(), result.method, result.segments, result.hours)
    )
    if alert:
        with ctx.progress() as progress:
            sent = pipeline.alert(result, list(sinks) or None, progress=progress)
        click.echo(sent.summary())
        if not sent.ok:
            raise FunnelPulseError(sent.problem())


@cli.command()
@click.argument("anomaly_id")
@click.pass_obj
def explain(ctx: _Context, anomaly_id: str) -> None:
    """Show one anomaly (an id from `detect`, or an incident's id: its strongest anomaly) and
    the segments that drove it (rate change vs mix change)."""
    from .report import format_explain

    click.echo(format_explain(ctx.pipeline(None).anomaly(anomaly_id)))


@cli.command()
@click.argument("text", required=False)
@click.option("--start", type=TIME, default=None, help="First moment (UTC), e.g. 2019-10-10T08:00.")
@click.option("--end", type=TIME, default=None, help="End (UTC, excluded).")
@click.option(
    "--segment",
    default=None,
    callback=ANNOTATION_SEGMENT,
    help="dimension:value (brand:acme, price_band:<10); default the shop.",
)
@click.option("--list", "show", is_flag=True, help="List the annotations.")
@click.option("--delete", "delete_id", default=None, help="Delete the annotation with this id.")
@click.pass_obj
def annotate(
    ctx: _Context,
    text: str | None,
    start: Any,
    end: Any,
    segment: str | None,
    show: bool,
    delete_id: str | None,
) -> None:
    """Mark a known event (promotion, planned outage): detection raises no incident inside it
    and leaves its hours out of later baselines; dashboard charts show it."""
    from .anomaly import annotations
    from .report import format_annotations

    warehouse = ctx.pipeline(None).warehouse
    if show:
        click.echo(format_annotations(annotations.read(warehouse)))
        return
    if delete_id:
        gone = annotations.delete(warehouse, delete_id)
        click.echo(f"Deleted annotation {gone['annotation_id']}: {gone['text']}")
        return
    if start is None or end is None or not text:
        raise usage_error(
            "Give --start, --end and a text, e.g. funnelpulse annotate --start 2019-10-10T08:00 "
            '--end 2019-10-10T12:00 "planned outage"; or use --list / --delete ID'
        )
    if end <= start:
        raise usage_error(f"--end {end:%Y-%m-%d %H:%M} is not after --start. Swap them")
    row = annotations.add(warehouse, start, end, text, segment)
    click.echo(
        f"Annotation {row['annotation_id']}: {format_annotations([row]).splitlines()[-1].strip()}. "
        "Run `funnelpulse detect` again to leave it out"
    )


@cli.command()
@click.option(
    "--labels",
    required=True,
    type=click.Path(path_type=Path),
    help="Labels from generate --inject.",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.pass_obj
def evaluate(ctx: _Context, labels: Path, fmt: str) -> None:
    """Recall (all and detectable labels), precision, F1, delays and false incidents per week of each method."""
    from dataclasses import asdict

    from .report import format_evaluate

    with ctx.progress() as progress:
        scores = ctx.pipeline(progress).evaluate(labels)
    if fmt == "json":
        click.echo(json.dumps([asdict(s) for s in scores], indent=2, default=str))
    else:
        click.echo(format_evaluate(scores))


@cli.command()
@click.option(
    "--retain-hours",
    type=click.IntRange(min=0),
    default=168,
    show_default=True,
    help="Keep the files table versions of the last N hours need (time travel, running readers).",
)
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.pass_obj
def vacuum(ctx: _Context, retain_hours: int, dry_run: bool) -> None:
    """Free disk space: delete files of old table versions and files left by failed writes."""
    from .report import format_vacuum

    with ctx.progress() as progress:
        found = ctx.pipeline(progress).vacuum(retain_hours, dry_run)
    click.echo(format_vacuum(found, retain_hours, dry_run))


@cli.command()
@click.option(
    "--live",
    is_flag=True,
    help="The live path instead: broker, stream with alerts and a replayed day whose checkout "
    "breaks at 12:00 UTC (in ./live-demo, or --warehouse).",
)
@click.option(
    "--seconds",
    type=click.FloatRange(10, 3600),
    default=120,
    show_default=True,
    help="With --live: how long the replayed day takes.",
)
@click.option(
    "--events-per-day",
    type=click.IntRange(2_000, 2_000_000),
    default=40_000,
    show_default=True,
    help="With --live: events of each generated day.",
)
@click.option(
    "--dashboard", "with_dashboard", is_flag=True, help="With --live: also serve the dashboard."
)
@click.pass_obj
def demo(
    ctx: _Context, live: bool, seconds: float, events_per_day: int, with_dashboard: bool
) -> None:
    """Ingest the bundled real REES46 sample, build every table and print the report.

    With --live: the live path in about two minutes (see README "Live in two minutes")."""
    from .report import format_demo

    if live:
        from .report import format_live_demo

        with ctx.progress() as progress:
            shown = _live_demo(ctx, progress, seconds, events_per_day, with_dashboard)
        click.echo(format_live_demo(shown))
        return
    if with_dashboard or seconds != 120 or events_per_day != 40_000:
        raise usage_error("--seconds, --events-per-day and --dashboard go with --live")
    with ctx.progress() as progress:
        result = ctx.pipeline(progress).demo()
    click.echo(format_demo(result.ingested, result.report))


def _live_demo(
    ctx: _Context, progress: Progress, seconds: float, events_per_day: int, dashboard: bool
) -> Any:
    """Run `demo --live`, with the dashboard beside it when asked (stopped at the end)."""
    import subprocess

    from . import live_demo

    folder = Path(ctx.warehouse).parent if ctx.warehouse else Path("live-demo")
    server: list[subprocess.Popen[bytes]] = []

    def ready(demo: Any) -> None:
        command = f"funnelpulse --warehouse {demo.warehouse} dashboard"
        if dashboard:
            server.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "funnelpulse",
                        "--warehouse",
                        demo.warehouse,
                        "dashboard",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            command = "the dashboard is starting"
        click.echo(
            f"Live page: http://127.0.0.1:8501/Live ({command}); alerts go to {demo.alert_file}",
            err=True,
        )

    try:
        return live_demo.run(folder, seconds, events_per_day, progress, ready)
    finally:
        for process in server:
            process.terminate()
            process.wait(timeout=10)


@cli.command()
@click.option(
    "--rows", type=click.IntRange(min=1), required=True, help="Number of events to write."
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    callback=lambda ctx, param, value: event_file(value),
    help=".csv, .csv.gz or .parquet",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--start", type=DATE, default="2019-10-01", show_default=True, help="First UTC date.")
@click.option("--days", type=click.IntRange(1, 3660), default=61, show_default=True)
@click.option("--brands", type=click.IntRange(1, 10_000), default=250, show_default=True)
@click.option(
    "--inject",
    default=None,
    help="Known incidents: auto:N (N placed at random) or a labels JSON file; labels go to OUT.labels.json.",
)
@click.option(
    "--shape",
    "shape_name",
    type=click.Choice(["real", "plain"]),
    default="real",
    show_default=True,
    help="real: baskets, growth, season, drift and promotion days like a real shop; plain: "
    "one item per decision, flat traffic, fixed rates. The options below override either.",
)
@click.option(
    "--basket-mean", type=click.FloatRange(1, 100), help="Mean items per basket [real: 9]."
)
@click.option(
    "--growth", type=click.FloatRange(-0.9, 10), help="Traffic change over the period [real: 0.1]."
)
@click.option(
    "--season", type=click.FloatRange(0, 0.9), help="Yearly traffic cycle amplitude [real: 0.12]."
)
@click.option(
    "--drift",
    type=click.FloatRange(0, 1),
    help="Daily rate drift per segment, sd of log odds [real: 0.05].",
)
@click.option(
    "--promo-days", type=click.FloatRange(0, 30), help="Promotion days per 30 days [real: 1]."
)
@click.pass_obj
def generate(
    ctx: _Context,
    rows: int,
    out: Path,
    seed: int,
    start: date,
    days: int,
    brands: int,
    inject: str | None,
    shape_name: str,
    basket_mean: float | None,
    growth: float | None,
    season: float | None,
    drift: float | None,
    promo_days: float | None,
) -> None:
    """Write realistic synthetic events in the raw REES46 format (deterministic for a seed)."""
    from dataclasses import replace

    from .generate import PLAIN, REAL, InjectError, generate_file
    from .report import format_generated

    overrides: dict[str, Any] = {
        name: value
        for name, value in (
            ("basket_mean", basket_mean),
            ("growth", growth),
            ("season", season),
            ("drift", drift),
            ("promo_days", promo_days),
        )
        if value is not None
    }
    shape = replace(REAL if shape_name == "real" else PLAIN, **overrides)

    try:
        with ctx.progress() as progress:
            result = generate_file(
                rows,
                out,
                seed=seed,
                start=start,
                days=days,
                brands=brands,
                inject=inject,
                progress=progress,
                shape=shape,
            )
    except InjectError as exc:
        raise click.BadParameter(str(exc), param_hint="--inject") from None
    click.echo(format_generated(result))


@cli.command()
@click.option("--port", type=PORT, default=8501, show_default=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to serve on (loopback by default).",
)
@click.pass_obj
def dashboard(ctx: _Context, port: int, host: str) -> None:
    """Serve the web dashboard (Streamlit) over the warehouse."""
    import os

    from .dashboard import serve

    command, env = serve.command(host, port, ctx.pipeline(None).warehouse, ctx.config)
    click.echo(f"Serving {env['FUNNELPULSE_WAREHOUSE']} on http://{host}:{port} (Ctrl-C to stop)")
    sys.stdout.flush()
    # Become the server (no child process), so Ctrl-C and SIGTERM reach it directly.
    os.execve(sys.executable, command, env)


@cli.command()
@click.option(
    "--source",
    required=True,
    callback=SOURCE_URL,
    help="kafka://HOST:PORT/TOPIC or files://DIR (CSV, JSON lines, Parquet).",
)
@click.option(
    "--until-idle",
    "until_idle",
    type=NON_NEGATIVE,
    default=None,
    help="Stop once no new events arrived for this many seconds (default: run until Ctrl-C).",
)
@click.option(
    "--trigger-s",
    type=POSITIVE,
    default=None,
    help="Longest wait for a micro-batch's input (default 0.25 s; Spark: its trigger, 2 s).",
)
@click.option(
    "--watermark-s",
    type=click.IntRange(min=0),
    default=None,
    help="Lateness allowed before a window is final (default 7200).",
)
@click.option(
    "--checkpoint", default=None, help="Checkpoint folder (default WAREHOUSE/_checkpoints/stream)."
)
@click.option(
    "--max-rows-per-batch",
    type=click.IntRange(min=1),
    default=500_000,
    show_default=True,
    help="Kafka messages per micro-batch at most.",
)
@click.option(
    "--broker-timeout-s",
    type=POSITIVE,
    default=60.0,
    show_default=True,
    help="Give up (clean exit) when Kafka is unreachable this long.",
)
@click.option(
    "--on-offset-reset",
    type=click.Choice(OFFSET_RESETS),
    default=None,
    help="When a Kafka partition ends below the stream's offset (topic recreated, broker "
    "restarted empty): error stops (default), earliest reads it from its start, latest from its end.",
)
@click.option("--master", default=None, help="Spark master (default local[*]).")
@click.option(
    "--engine",
    type=click.Choice(ENGINE_NAMES),
    default=None,
    help="duckdb: the embedded engine, no JVM (default); spark: Spark Structured Streaming.",
)
@click.option(
    "--alert",
    is_flag=True,
    help="Score each newly final hour (shop and brands) and, as live buckets complete, "
    "the open window (drops); alert on incidents.",
)
@click.option(
    "--repair",
    is_flag=True,
    help="Start the live tables over and rebuild them from the source's beginning (when a "
    "data file of theirs is missing).",
)
@SINK_OPTION
@CONF_OPTION
@click.pass_obj
def stream(
    ctx: _Context,
    source: str,
    until_idle: float | None,
    trigger_s: float | None,
    watermark_s: int | None,
    checkpoint: str | None,
    max_rows_per_batch: int,
    broker_timeout_s: float,
    on_offset_reset: str | None,
    master: str | None,
    engine: str | None,
    alert: bool,
    repair: bool,
    sinks: tuple[str, ...],
    spark_conf: Any,
) -> None:
    """Keep gold_stream_funnel_hourly_brand current from Kafka or a folder, exactly once.

    Runs on the embedded engine (DuckDB, no JVM) unless --engine spark. With --alert, each time
    windows become final the stream scores them against the past and sends one alert per
    incident, like `detect --alert` (never twice)."""
    import logging

    from .engines.base import StreamOptions
    from .redact import scrubbed_logging
    from .report import format_stream
    from .streaming.kafka_client import settings_options

    scrubbed_logging(logging.WARNING if ctx.quiet else logging.INFO, "%(asctime)s %(message)s")
    pipeline = ctx.pipeline(
        None,
        watermark_s=watermark_s,
        spark_master=master,
        spark_conf=spark_conf,
        on_offset_reset=on_offset_reset,
    )
    options = StreamOptions(
        until_idle_s=until_idle,
        trigger_s=trigger_s,
        checkpoint=checkpoint,
        max_rows=max_rows_per_batch,
        broker_timeout_s=broker_timeout_s,
        alert_sinks=(list(sinks) or list(pipeline.settings.alert_sinks)) if alert else None,
        kafka_options=settings_options(ctx.config),
        repair=repair,
    )
    result = pipeline.stream(source, engine, options)
    click.echo(format_stream(result, pipeline.warehouse, alert))


@cli.command()
@click.option("--to", "target", required=True, callback=KAFKA_URL, help="kafka://HOST:PORT/TOPIC")
@click.option(
    "--from",
    "sources",
    multiple=True,
    default=("bronze",),
    show_default=True,
    help="bronze, or raw event files (repeat for several).",
)
@click.option(
    "--speedup",
    type=NON_NEGATIVE,
    default=0.0,
    show_default=True,
    help="Event-time speed-up (3600 = one hour per second); 0 publishes as fast as possible.",
)
@click.option(
    "--synthetic",
    is_flag=True,
    help="Produce generated events live instead, stamped with the current time.",
)
@click.option(
    "--rate",
    type=POSITIVE,
    default=1000.0,
    show_default=True,
    help="With --synthetic: events per second.",
)
@click.option(
    "--seconds", type=POSITIVE, default=60.0, show_default=True, help="With --synthetic: how long."
)
@click.pass_obj
def replay(
    ctx: _Context,
    target: str,
    sources: tuple[str, ...],
    speedup: float,
    synthetic: bool,
    rate: float,
    seconds: float,
) -> None:
    """Publish events to Kafka in event-time order, keyed by user_session."""
    from .report import format_replay
    from .streaming import replay as replaying
    from .streaming.kafka_client import settings_options

    options = settings_options(ctx.config)
    with ctx.progress() as progress:
        if synthetic:
            result = replaying.synthetic(target, rate, seconds, options=options, progress=progress)
        else:
            result = ctx.pipeline(progress).replay(target, list(sources), speedup, options)
    click.echo(format_replay(result))


@cli.command()
@click.option("--port", type=PORT, default=9092, show_default=True)
@click.option("--topic", default="funnelpulse-events", show_default=True, help="Topic to create.")
@click.option("--partitions", type=click.IntRange(1, 1000), default=2, show_default=True)
def broker(port: int, topic: str, partitions: int) -> None:
    """Run a local Kafka-protocol broker (tansu, in memory) for the live demo, until Ctrl-C."""
    from .report import format_broker
    from .streaming.broker import serve

    serve(port, topic, partitions, ready=lambda: click.echo(format_broker(port, topic, partitions)))


@cli.command("sql")
@click.argument("statement")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@click.option(
    "--timeout-s",
    type=POSITIVE,
    default=30.0,
    show_default=True,
    help="Cancel the statement after this many seconds.",
)
@click.option(
    "--max-rows",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Print at most this many rows (a note says when more matched).",
)
@click.pass_obj
def sql(ctx: _Context, statement: str, fmt: str, timeout_s: float, max_rows: int) -> None:
    """Run read-only SQL over the warehouse's tables (each at its newest version).

    Every table is a view by its name: bronze_events, silver_events, gold_*, anomalies, ...
    Statements that write, attach, install, read files or change settings are refused.
    """
    from .report import format_sql
    from .sql import SqlSession, split

    session = SqlSession(ctx.pipeline(None).warehouse, timeout_s=timeout_s, max_rows=max_rows)
    try:
        for text in split(statement):
            result = session.run(text)
            _say(format_sql(result, fmt))
            if result.truncated:
                click.echo(
                    f"(only the first {max_rows:,} rows are shown; raise --max-rows for more)",
                    err=True,
                )
    finally:
        session.close()


def _server_options(port: int, secret_env: str, timeout_help: str) -> Any:
    """--host, --port and --timeout-s of a read server (the API, the SQL server)."""

    def wrap(command: Any) -> Any:
        command = click.option(
            "--timeout-s", type=POSITIVE, default=30.0, show_default=True, help=timeout_help
        )(command)
        command = click.option("--port", type=PORT, default=port, show_default=True)(command)
        return click.option(
            "--host",
            default="127.0.0.1",
            show_default=True,
            help=f"Address to serve on (loopback by default; any other needs {secret_env}).",
        )(command)

    return wrap


@cli.command()
@_server_options(8080, "FUNNELPULSE_API_TOKEN", "Statement timeout of each request.")
@click.pass_obj
def api(ctx: _Context, host: str, port: int, timeout_s: float) -> None:
    """Serve the read-only HTTP API (JSON or CSV; OpenAPI docs at /docs) until Ctrl-C."""
    from .api import serve

    warehouse = ctx.pipeline(None).warehouse
    serve(
        warehouse,
        host,
        port,
        timeout_s=timeout_s,
        ready=lambda: click.echo(
            f"Serving the API over {warehouse} on http://{host}:{port} (docs at /docs; "
            "Ctrl-C to stop)"
        ),
    )


@cli.command("sql-server")
@_server_options(5433, "FUNNELPULSE_SQL_PASSWORD", "Cancel a statement after this many seconds.")
@click.pass_obj
def sql_server(ctx: _Context, host: str, port: int, timeout_s: float) -> None:
    """Serve read-only SQL over the Postgres wire protocol (psql, BI tools) until Ctrl-C."""
    from .pgwire import serve

    warehouse = ctx.pipeline(None).warehouse
    serve(
        warehouse,
        host,
        port,
        timeout_s=timeout_s,
        ready=lambda: click.echo(
            f"Serving SQL over {warehouse} on postgresql://{host}:{port}/funnelpulse "
            "(read-only; Ctrl-C to stop)"
        ),
    )


@cli.command()
@click.option(
    "--watch",
    "watch",
    multiple=True,
    metavar="FOLDER",
    help="A landing folder or gs://BUCKET/PREFIX: each complete file is ingested, then build, "
    "detect (and alert).",
)
@click.option("--kafka", default=None, help="kafka://HOST:PORT/TOPIC: run the live stream too.")
@click.option("--host", default=None, help="API, health and metrics address [127.0.0.1].")
@click.option("--port", type=PORT, default=None, help="API, health and metrics port [8080].")
@click.option(
    "--dashboard-port", type=click.IntRange(0, 65_535), default=None, help="[8501]; 0: none."
)
@click.option("--alert", is_flag=True, default=None, help="Alert on incidents (files and stream).")
@SINK_OPTION
@ENGINE_OPTION
@MASTER_OPTION
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default=None, help="Log lines [text]."
)
@click.pass_obj
def serve(
    ctx: _Context,
    watch: tuple[str, ...],
    kafka: str | None,
    host: str | None,
    port: int | None,
    dashboard_port: int | None,
    alert: bool | None,
    sinks: tuple[str, ...],
    engine: str | None,
    master: str | None,
    log_format: str | None,
) -> None:
    """Run the whole monitor as one service until SIGTERM: landing folders, stream, dashboard,
    API, with /healthz, /readyz and /metrics. Settings: the [serve] section of funnelpulse.toml."""
    from .serve.service import serve as run_service

    code = run_service(
        ctx.config,
        ctx.warehouse,
        watch=watch,
        kafka=kafka,
        host=host,
        port=port,
        dashboard_port=dashboard_port,
        alert=alert or None,
        sinks=sinks,
        engine=engine,
        master=master,
        log_format=log_format,
    )
    if code:
        sys.exit(code)


cli.add_command(incidents)
cli.add_command(digest)


def run(args: list[str] | None = None) -> int:
    """Run the command line and return its exit code: expected errors print one `Error:` line."""
    return int(cli.main(args, standalone_mode=False))


def main() -> None:
    """Entry point of the `funnelpulse` script."""
    from .console import EXIT_ABORTED, stop_on_interrupt

    stop_on_interrupt()  # Ctrl-C stops the command even inside a native library call
    try:
        code = run()
    except KeyboardInterrupt:  # Ctrl-C while the command was still starting up
        click.echo("Aborted.", err=True)
        code = EXIT_ABORTED
    finally:
        # The process ends here: the collector's passes over every object the data libraries
        # made would cost 0.3-0.8 s at exit. Commands close their files and connections
        # themselves, and exit handlers still run.
        gc.freeze()
    sys.exit(code)
