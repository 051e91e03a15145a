"""The `funnelpulse` command: parse flags, call the library, print. Nothing else lives here."""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click

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
@click.option("--config", "config", default=None, help="Settings file (default ./funnelpulse.toml).")
@click.option("--quiet", "-q", is_flag=True, help="Print only results and errors.")
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
@click.version_option(package_name="funnelpulse")
@click.pass_context
def cli(ctx: click.Context, warehouse: str | None, config: str | None, quiet: bool, debug: bool) -> None:
    """FunnelPulse: monitor the view -> cart -> purchase funnel on a Delta Lake warehouse."""
    ctx.obj = _Context(warehouse, config, quiet, debug)


def _progress(ctx: _Context) -> Any:
    from .console import progress

    return progress(ctx.quiet)


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.pass_obj
def ingest(ctx: _Context, files: tuple[Path, ...]) -> None:
    """Load raw REES46 files (CSV, CSV.gz, Parquet) into bronze_events; bad rows go to quarantine."""
    with _progress(ctx) as progress:
        result = ctx.pipeline(progress).ingest(files)
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


def _date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise FunnelPulseError(f"{value!r} is not a date. Use YYYY-MM-DD") from exc


@cli.command()
@click.option("--engine", type=click.Choice(["duckdb", "spark"]), default=None, help="Default duckdb.")
@click.option("--master", default=None, help="Spark master URL (local[*], spark://..., yarn).")
@click.option("--since", default=None, help="First UTC date to rebuild (YYYY-MM-DD).")
@click.option("--until", default=None, help="Last UTC date to rebuild (YYYY-MM-DD).")
@click.pass_obj
def build(ctx: _Context, engine: str | None, master: str | None, since: str | None, until: str | None) -> None:
    """Build silver_events and the gold tables from bronze_events (only the dates covered are replaced)."""
    with _progress(ctx) as progress:
        result = ctx.pipeline(progress, engine=engine, spark_master=master).build(
            _date(since), _date(until)
        )
    for name, rows in result.rows.items():
        click.echo(f"{name}: {rows:,} rows")


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option("--top", default=5, show_default=True, help="Rows per segment list.")
@click.pass_obj
def report(ctx: _Context, fmt: str, top: int) -> None:
    """Print the summary: table sizes, date range, funnel, top brands, categories, price bands."""
    from .report import format_text

    data = ctx.pipeline(None).report(top)
    click.echo(json.dumps(data, indent=2, default=str) if fmt == "json" else format_text(data))


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
        click.echo(f"Ingested {Path(f.path).name}: {f.bronze_rows:,} rows, {f.quarantined_rows:,} quarantined")
    click.echo("")
    click.echo(format_text(data))


@cli.command()
@click.option("--rows", type=int, required=True, help="Number of events to write.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help=".csv, .csv.gz or .parquet")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--start", default="2019-10-01", show_default=True, help="First UTC date.")
@click.option("--days", type=int, default=61, show_default=True)
@click.option("--brands", type=int, default=250, show_default=True)
@click.pass_obj
def generate(
    ctx: _Context, rows: int, out: Path, seed: int, start: str, days: int, brands: int
) -> None:
    """Write realistic synthetic events in the raw REES46 format (deterministic for a seed)."""
    from .generate import generate_events, write_events

    first = _date(start)
    assert first is not None
    with _progress(ctx) as progress:
        progress.step(f"Generating {rows:,} events")
        table = generate_events(
            rows,
            seed=seed,
            start=datetime(first.year, first.month, first.day, tzinfo=UTC),
            days=days,
            brands=brands,
        )
        progress.step(f"Writing {out}")
        write_events(table, out)
    click.echo(f"Wrote {table.num_rows:,} events to {out}")


def main() -> None:
    """Entry point: expected errors print one `Error:` line; tracebacks only with --debug."""
    debug = "--debug" in sys.argv
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except FunnelPulseError as exc:
        if debug:
            raise
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        if debug:
            raise
        click.echo(
            f"Error: unexpected {type(exc).__name__}: {exc}. Re-run with --debug for details",
            err=True,
        )
        sys.exit(2)
