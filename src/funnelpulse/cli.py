"""The `funnelpulse` command: parse flags, call the library, print. Nothing else lives here."""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click

from .config import SINKS
from .engines import ENGINE_NAMES
from .errors import FunnelPulseError


class _Context:
    def __init__(self, warehouse: str | None, config: str | None, quiet: bool, debug: bool) -> None:
        self.warehouse = warehouse
        self.config = config
        self.quiet = quiet
        self.debug = debug

    def pipeline(self, progress: Any, **overrides: Any) -> Any:
        from .config import load_settings
        from .pipeline import Pipeline

        settings = load_settings(self.config, warehouse=self.warehouse, **overrides)
        return Pipeline(settings, progress=progress)


def _echo(ctx: _Context, text: str) -> None:
    if not ctx.quiet:
        click.echo(text)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
        from .anomaly.sinks import scrubbed_logging

        scrubbed_logging(log_level.upper(), "%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = _Context(warehouse, config, quiet, debug)


def _progress(ctx: _Context) -> Any:
    from .console import progress

    return progress(ctx.quiet)


ENGINE_OPTION = click.option(
    "--engine", type=click.Choice(ENGINE_NAMES), default=None, help="Default duckdb."
)
MASTER_OPTION = click.option(
    "--master", default=None, help="Spark master URL (local[*], spark://..., yarn)."
)
SINK_OPTION = click.option(
    "--sink",
    "sinks",
    multiple=True,
    type=click.Choice(SINKS),
    help="Override the alert sinks (repeat for several).",
)
PORT = click.IntRange(1, 65_535)


class _Seconds(click.FloatRange):
    """A finite number in a range: `nan` and `inf` are refused like any other bad value."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        import math

        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


POSITIVE = _Seconds(min=0, min_open=True)
NON_NEGATIVE = _Seconds(min=0)


class _IsoDate(click.ParamType):
    """A UTC calendar date flag (YYYY-MM-DD), refused by the parser before any work."""

    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not a date. Use YYYY-MM-DD", param, ctx)


DATE = _IsoDate()


def _event_file(path: Path) -> Path:
    """An output name generate can write, refused before minutes of generating."""
    if not path.name.lower().endswith((".csv", ".csv.gz", ".parquet")):
        raise click.BadParameter(f"{path} must end in .csv, .csv.gz or .parquet")
    return path


def _check_range(since: date | None, until: date | None) -> None:
    """An empty date range is a mistake, never a silent no-op."""
    if since and until and since > until:
        raise click.UsageError(f"--since {since} is after --until {until}. Swap them")


@cli.command()
@click.argument("files", nargs=-1)
@ENGINE_OPTION
@MASTER_OPTION
@click.pass_obj
def ingest(ctx: _Context, files: tuple[str, ...], engine: str | None, master: str | None) -> None:
    """Load raw REES46 files (CSV, CSV.gz, Parquet) into bronze_events; bad rows go to quarantine.

    FILES may be local paths or URIs (gs://bucket/raw/, s3://..., file://...); a URI ending in /
    means every file in that folder. With --engine spark, Spark's executors read the files
    (URIs directly, e.g. gs:// on Dataproc).
    """
    from .pipeline import IngestIncomplete

    try:
        with _progress(ctx) as progress:
            result = ctx.pipeline(progress, engine=engine, spark_master=master).ingest(files)
    except IngestIncomplete as exc:  # say what is already in: re-running only the rest is enough
        _ingested(exc.committed)
        click.echo(
            f"{len(exc.committed.files)} file(s) committed before the error (listed above).",
            err=True,
        )
        raise exc.error from None
    _ingested(result)


def _ingested(result: Any) -> None:
    for f in result.files:
        reasons = ", ".join(f"{k} {v:,}" for k, v in f.reasons.items())
        click.echo(
            f"{f.path}: {f.bronze_rows:,} rows to bronze_events, {f.quarantined_rows:,} to "
            f"quarantine_events" + (f" ({reasons})" if reasons else "")
        )
    if len(result.files) > 1:
        click.echo(
            f"Total: {result.bronze_rows:,} to bronze_events, {result.quarantined_rows:,} quarantined"
        )


def _date(value: str | date | None) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise FunnelPulseError(f"{value!r} is not a date. Use YYYY-MM-DD") from exc


@cli.command()
@ENGINE_OPTION
@MASTER_OPTION
@click.option("--since", type=DATE, default=None, help="First UTC date to rebuild.")
@click.option("--until", type=DATE, default=None, help="Last UTC date to rebuild.")
@click.pass_obj
def build(
    ctx: _Context, engine: str | None, master: str | None, since: date | None, until: date | None
) -> None:
    """Build silver_events and the gold tables from bronze_events (only the dates covered are replaced)."""
    _check_range(since, until)
    with _progress(ctx) as progress:
        result = ctx.pipeline(progress, engine=engine, spark_master=master).build(
            _date(since), _date(until)
        )
    for name, rows in result.rows.items():
        click.echo(f"{name}: {rows:,} rows")


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

    _check_range(since, until)
    data = ctx.pipeline(None).report(top, since, until)
    click.echo(json.dumps(data, indent=2, default=str) if fmt == "json" else format_text(data))


@cli.command()
@click.option(
    "--by",
    type=click.Choice(["brand", "category", "price_band"]),
    default=None,
    help="One row per value, held constant through the funnel.",
)
@click.option("--since", default=None, help="First UTC entry date (YYYY-MM-DD).")
@click.option("--until", default=None, help="Last UTC entry date (YYYY-MM-DD).")
@click.option("--window", default="24h", show_default=True, help="Conversion window: 30m, 2h, 7d.")
@click.option(
    "--same-product", is_flag=True, help="Cart and purchase must be of the viewed product."
)
@click.option("--by-user", is_flag=True, help="Count users (user_id) instead of sessions.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text")
@click.pass_obj
def funnel(
    ctx: _Context,
    by: str | None,
    since: str | None,
    until: str | None,
    window: str,
    same_product: bool,
    by_user: bool,
    fmt: str,
) -> None:
    """Ordered funnel per session: viewed, then carted, then purchased within the window."""
    from . import funnel as fn

    spec = fn.FunnelSpec(fn.parse_window(window), by, same_product, by_user)
    result = fn.query(ctx.pipeline(None).warehouse, spec, _date(since), _date(until))
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
@click.option("--alert", is_flag=True, help="Send one alert per incident to the configured sinks.")
@SINK_OPTION
@ENGINE_OPTION
@MASTER_OPTION
@click.pass_obj
def detect(
    ctx: _Context,
    method: str | None,
    since: date | None,
    alert: bool,
    sinks: tuple[str, ...],
    engine: str | None,
    master: str | None,
) -> None:
    """Find conversion drops/spikes and traffic changes per hour and segment; write `anomalies`.

    With --engine spark, the hourly segment aggregation over silver_events runs on Spark.
    """
    with _progress(ctx) as progress:
        pipeline = ctx.pipeline(progress, engine=engine, spark_master=master)
        if alert:  # a sink that cannot deliver is refused before anomalies are rewritten
            pipeline.settings.check_sinks(sinks)
        result = pipeline.detect(method, _date(since))
    from .report import format_detect

    click.echo(
        format_detect(result.anomalies.to_pylist(), result.method, result.segments, result.hours)
    )
    if alert:
        with _progress(ctx) as progress:
            sent = pipeline.alert(result.anomalies, list(sinks) or None, progress=progress)
        click.echo(sent.summary())
        if not sent.ok:
            raise FunnelPulseError(sent.problem())


@cli.command()
@click.argument("anomaly_id")
@click.pass_obj
def explain(ctx: _Context, anomaly_id: str) -> None:
    """Show one anomaly and the segments that drove it (rate change vs mix change)."""
    from .report import format_explain

    click.echo(format_explain(ctx.pipeline(None).anomaly(anomaly_id)))


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

    with _progress(ctx) as progress:
        scores = ctx.pipeline(progress).evaluate(labels)
    if fmt == "json":
        click.echo(json.dumps([asdict(s) for s in scores], indent=2, default=str))
        return
    click.echo(
        f"{'method':<10} {'labels':>6} {'found':>5} {'detectable':>10} {'found':>5} "
        f"{'incidents':>9} {'precision':>9} {'recall':>6} {'recall(det)':>11} {'F1(det)':>7} "
        f"{'delay p50/p90':>13} {'false/week':>10}"
    )
    for s in scores:
        delay = (
            "n/a"
            if s.median_delay_h is None
            else f"{s.median_delay_h:.1f}/{s.p90_delay_h:.1f} h"
        )
        click.echo(
            f"{s.method:<10} {s.labels:>6} {s.detected_labels:>5} {s.detectable:>10} "
            f"{s.detected_detectable:>5} {s.predicted:>9} {s.precision:>9.2f} {s.recall:>6.2f} "
            f"{s.recall_detectable:>11.2f} {s.f1:>7.2f} {delay:>13} {s.false_per_week:>10.2f}"
        )
    for s in scores:
        kinds = ", ".join(
            f"{kind} {k['found']}/{k['labels']} (detectable {k['found_detectable']}/{k['detectable']})"
            for kind, k in sorted(s.per_kind.items())
        )
        click.echo(f"{s.method} per kind: {kinds}")
        missed = [r for r in s.per_label if not r["detected"] and r["detectable"]]
        if missed:
            click.echo(
                f"{s.method} missed detectable: "
                + ", ".join(
                    f"{r['id']} ({r['kind']} {r['segment']}, ideal z {r['ideal_z']:+.1f})"
                    for r in missed
                )
            )


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
    with _progress(ctx) as progress:
        found = ctx.pipeline(progress).vacuum(retain_hours, dry_run)
    verb = "would delete" if dry_run else "deleted"
    for name, (files, size) in found.items():
        click.echo(f"{name}: {verb} {files:,} files ({size / 1e6:,.1f} MB)")
    total = sum(size for _, size in found.values())
    click.echo(
        f"Total: {verb} {total / 1e6:,.1f} MB (kept every version of the last {retain_hours} h)"
    )


@cli.command()
@click.pass_obj
def demo(ctx: _Context) -> None:
    """Ingest the bundled real REES46 sample, build every table and print the report."""
    from .pipeline import sample_files
    from .report import format_text

    with _progress(ctx) as progress:
        pipeline = ctx.pipeline(progress)
        result = pipeline.ingest(sample_files())
        pipeline.build()
        data = pipeline.report()
    for f in result.files:
        click.echo(
            f"Ingested {Path(f.path).name}: {f.bronze_rows:,} rows, {f.quarantined_rows:,} quarantined"
        )
    click.echo("")
    click.echo(format_text(data))


@cli.command()
@click.option(
    "--rows", type=click.IntRange(min=1), required=True, help="Number of events to write."
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    callback=lambda ctx, param, value: _event_file(value),
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
) -> None:
    """Write realistic synthetic events in the raw REES46 format (deterministic for a seed)."""
    from .anomaly.incidents import load_labels, plan_incidents, save_labels
    from .generate import generate_labelled, ranked_brands, write_events

    first = _date(start)
    assert first is not None
    begin = datetime(first.year, first.month, first.day, tzinfo=UTC)
    incidents = []
    if inject:
        if inject.startswith("auto:"):
            count = int(inject[5:]) if inject[5:].isdigit() else 0
            if count < 1:
                raise click.BadParameter("use auto:N, N a whole number >= 1", param_hint="--inject")
            if brands < 3:
                raise click.BadParameter("incidents need --brands 3 or more", param_hint="--inject")
            incidents = plan_incidents(
                count, start=begin, days=days, brands=ranked_brands(brands, seed), seed=seed
            )
        else:
            incidents = load_labels(Path(inject))
    with _progress(ctx) as progress:
        progress.step(f"Generating {rows:,} events")
        table, incidents = generate_labelled(
            rows, seed=seed, start=begin, days=days, brands=brands, incidents=incidents
        )
        progress.step(f"Writing {out}")
        write_events(table, out)
    click.echo(f"Wrote {table.num_rows:,} events to {out}")
    if incidents:
        labels = Path(f"{out}.labels.json")
        save_labels(incidents, labels)
        click.echo(f"Injected {len(incidents)} incidents; labels in {labels}")


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
    import importlib.util
    import os

    from .config import load_settings
    from .errors import MissingDependencyError

    if importlib.util.find_spec("streamlit") is None:
        raise MissingDependencyError("streamlit", "dashboard")
    settings = load_settings(ctx.config, warehouse=ctx.warehouse)
    env = {**os.environ, "FUNNELPULSE_WAREHOUSE": str(Path(settings.warehouse_path).resolve())}
    if ctx.config:  # the pages load the same settings file as this command
        env["FUNNELPULSE_CONFIG"] = str(Path(ctx.config).resolve())
    click.echo(f"Serving {env['FUNNELPULSE_WAREHOUSE']} on http://{host}:{port} (Ctrl-C to stop)")
    command = [sys.executable, "-m", "funnelpulse.dashboard.serve", host, str(port)]
    sys.stdout.flush()
    # Become the server (no child process), so Ctrl-C and SIGTERM reach it directly.
    os.execve(sys.executable, command, env)


@cli.command()
@click.option(
    "--source",
    required=True,
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
    help="Longest wait for a micro-batch's input (default 0.5 s; Spark: its trigger, 2 s).",
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
    help="Score each newly final hour (shop and brands) and, as 5-minute buckets complete, "
    "the open window (drops, embedded engine); alert on incidents.",
)
@SINK_OPTION
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
    master: str | None,
    engine: str | None,
    alert: bool,
    sinks: tuple[str, ...],
) -> None:
    """Keep gold_stream_funnel_hourly_brand current from Kafka or a folder, exactly once.

    Runs on the embedded engine (DuckDB, no JVM) unless --engine spark. With --alert, each time
    windows become final the stream scores them against the past and sends one alert per
    incident, like `detect --alert` (never twice)."""
    import logging

    from .anomaly.sinks import scrubbed_logging
    from .config import load_settings
    from .engines.base import StreamOptions
    from .pipeline import Pipeline
    from .streaming.kafka_client import settings_options

    scrubbed_logging(logging.WARNING if ctx.quiet else logging.INFO, "%(asctime)s %(message)s")
    settings = load_settings(
        ctx.config, warehouse=ctx.warehouse, watermark_s=watermark_s, spark_master=master
    )
    options = StreamOptions(
        until_idle_s=until_idle,
        trigger_s=trigger_s,
        checkpoint=checkpoint,
        max_rows=max_rows_per_batch,
        broker_timeout_s=broker_timeout_s,
        alert_sinks=(list(sinks) or list(settings.alert_sinks)) if alert else None,
        kafka_options=settings_options(ctx.config),
    )
    result = Pipeline(settings).stream(source, engine, options)
    click.echo(
        f"Stream stopped after {result.seconds:.0f} s: {result.batches} batches, {result.input_rows:,} events in, "
        f"{result.late_rows_dropped:,} late events dropped by the watermark, {result.quarantined:,} quarantined, "
        f"{result.windows:,} windows in {settings.warehouse_path}/gold_stream_funnel_hourly_brand"
    )
    if alert:
        click.echo(f"Alerts: {result.alerts_sent} sent, {result.alerts_failed} failed")


@cli.command()
@click.option("--to", "target", required=True, help="kafka://HOST:PORT/TOPIC")
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
    from .streaming import replay as replaying
    from .streaming.kafka_client import settings_options

    options = settings_options(ctx.config)
    with _progress(ctx) as progress:
        if synthetic:
            result = replaying.synthetic(target, rate, seconds, options=options)
        else:
            result = ctx.pipeline(progress).replay(target, list(sources), speedup, options)
    click.echo(
        f"Published {result.published:,} events in {result.seconds:.1f} s "
        f"({result.published / max(result.seconds, 1e-9):,.0f}/s), all delivered"
    )


@cli.command()
@click.option("--port", type=PORT, default=9092, show_default=True)
@click.option("--topic", default="funnelpulse-events", show_default=True, help="Topic to create.")
@click.option("--partitions", type=click.IntRange(1, 1000), default=2, show_default=True)
def broker(port: int, topic: str, partitions: int) -> None:
    """Run a local Kafka-protocol broker (tansu, in memory) for the live demo, until Ctrl-C."""
    import signal
    import time

    from .streaming.broker import create_topic, start_broker

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # `kill` stops the broker too, not only Ctrl-C
    proc = start_broker(port)
    try:
        create_topic(f"127.0.0.1:{port}", topic, partitions)
        click.echo(
            f"Kafka-protocol broker on 127.0.0.1:{port}, topic {topic} ({partitions} partitions). "
            "In-memory: data is gone when it stops. Ctrl-C to stop."
        )
        while proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        proc.terminate()


# Exit codes (README "The command line"): 1 an error the message says how to fix, 2 a bad
# command line (nothing was done), 3 an unexpected failure (a bug: --debug shows the traceback).
EXIT_ERROR, EXIT_USAGE, EXIT_UNEXPECTED = 1, 2, 3


def _scrubbed(text: str) -> str:
    """An error line with every part of every configured secret removed."""
    from .anomaly.sinks import scrub

    return scrub(text)


def run(args: list[str] | None = None) -> int:
    """Run the command line and return its exit code: expected errors print one `Error:` line."""
    import warnings

    argv = sys.argv[1:] if args is None else list(args)
    debug = "--debug" in argv
    warnings.formatwarning = lambda message, *args, **kwargs: f"Warning: {message}\n"
    try:
        code = cli.main(argv, prog_name="funnelpulse", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.UsageError as exc:
        where = f" See `{exc.ctx.command_path} --help`." if exc.ctx else ""
        message = exc.format_message().rstrip()
        end = "" if message.endswith((".", "?", "!")) else "."
        click.echo(f"Error: {message}{end}{where}", err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except FunnelPulseError as exc:
        if debug:
            raise
        click.echo(_scrubbed(f"Error: {exc}"), err=True)
        return EXIT_ERROR
    except Exception as exc:
        if debug:
            raise
        click.echo(
            _scrubbed(
                f"Error: unexpected {type(exc).__name__}: {exc}. Re-run with --debug for details"
            ),
            err=True,
        )
        return EXIT_UNEXPECTED
    return code if isinstance(code, int) else 0


def main() -> None:
    """Entry point of the `funnelpulse` script."""
    sys.exit(run())
