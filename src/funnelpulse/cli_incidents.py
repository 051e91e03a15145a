"""`funnelpulse incidents ...`: list, show, acknowledge, resolve, mute and route incidents."""

from __future__ import annotations

from datetime import date
from typing import Any

import click

from .cli_options import DATE, DURATION, SEGMENT
from .config import SINKS
from .errors import FunnelPulseError


def _book(ctx: Any) -> Any:
    return ctx.pipeline(None)


@click.group()
def incidents() -> None:
    """Incidents and their state: list, show, ack, resolve, mute, unmute, routes."""


@incidents.command("list")
@click.option("--open", "only_open", is_flag=True, help="Only incidents not resolved.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.pass_obj
def list_(ctx: Any, only_open: bool, fmt: str) -> None:
    """Every incident, newest first, with its state (open, acknowledged, muted, resolved)."""
    from .anomaly.incident_book import incident_book
    from .incident_report import format_list

    pipeline = _book(ctx)
    views = incident_book(pipeline.warehouse, pipeline.settings)
    if only_open:
        views = [v for v in views if v.state != "resolved"]
    click.echo(format_list(views, fmt))


@incidents.command()
@click.argument("incident_id")
@click.pass_obj
def show(ctx: Any, incident_id: str) -> None:
    """One incident: state, who acknowledged or resolved it, its route and deliveries."""
    from .anomaly.incident_book import find, routing_of
    from .anomaly.routes import explain
    from .incident_report import format_show

    pipeline = _book(ctx)
    view = find(pipeline.warehouse, pipeline.settings, incident_id)
    lines = explain(routing_of(view, pipeline.settings), pipeline.settings.alert_sinks)
    click.echo(format_show(view, lines))


def _decide(ctx: Any, incident_id: str, action: str, note: str, by: str) -> None:
    from .anomaly.incident_book import decide

    pipeline = _book(ctx)
    result = decide(pipeline.warehouse, pipeline.settings, incident_id, action, note, by)
    word = {"acknowledge": "Acknowledged", "resolve": "Resolved"}[action]
    if result.skipped and not (result.sent or result.failed):
        click.echo(f"{incident_id} was already {word.lower()}: nothing sent again.")
        return
    click.echo(f"{word} {incident_id}: {result.sent} sink(s) told, {result.failed} failed.")
    if not result.ok:
        command = {"acknowledge": "ack", "resolve": "resolve"}[action]
        raise FunnelPulseError(
            result.problem().split(". They are retried")[0]
            + f". Run `funnelpulse incidents {command} {incident_id}` again to retry them (the "
            "next `detect --alert` sends them too)"
        )


BY_OPTION = click.option("--by", default="", help="Who (default FUNNELPULSE_USER or login).")


@incidents.command()
@click.argument("incident_id")
@click.option("--note", default="", help="Why, for the record and the message.")
@BY_OPTION
@click.pass_obj
def ack(ctx: Any, incident_id: str, note: str, by: str) -> None:
    """Acknowledge an incident: recorded with who and when; PagerDuty gets `acknowledge`."""
    _decide(ctx, incident_id, "acknowledge", note, by)


@incidents.command()
@click.argument("incident_id")
@click.option("--note", default="", help="Why, for the record and the message.")
@BY_OPTION
@click.pass_obj
def resolve(ctx: Any, incident_id: str, note: str, by: str) -> None:
    """Resolve an incident by hand: recorded; every sink that got it gets the resolution."""
    _decide(ctx, incident_id, "resolve", note, by)


@incidents.command()
@click.option(
    "--segment",
    required=True,
    callback=SEGMENT,
    help="dimension:value, e.g. brand:acme or shop:all.",
)
@click.option("--step", default=None, help="Only this step (default every step).")
@click.option("--for", "duration", required=True, callback=DURATION, help="How long: 30m, 2h, 1d.")
@click.option("--note", default="", help="Why, for the record.")
@BY_OPTION
@click.pass_obj
def mute(ctx: Any, segment: str, step: str | None, duration: Any, note: str, by: str) -> None:
    """Hold back a segment's alerts for a while; still detected and recorded as muted."""
    from .anomaly.incident_book import mute as do_mute

    length = duration
    pipeline = _book(ctx)
    row = do_mute(pipeline.warehouse, segment, step, length, note, by)
    what = segment + (f" {step}" if step else "")
    click.echo(f"Muted {what} until {row['until']:%Y-%m-%d %H:%M} UTC (by {row['by']}).")


@incidents.command()
@click.option("--segment", required=True, callback=SEGMENT, help="dimension:value, as muted.")
@click.option("--step", default=None, help="Only the mute of this step.")
@BY_OPTION
@click.pass_obj
def unmute(ctx: Any, segment: str, step: str | None, by: str) -> None:
    """End a segment's mute now; an incident still open is sent by the next alert run."""
    from .anomaly.incident_book import unmute as do_unmute

    pipeline = _book(ctx)
    ended = do_unmute(pipeline.warehouse, segment, step, by)
    if not ended:
        raise FunnelPulseError(
            f"{segment} is not muted. See `funnelpulse incidents list` for muted incidents"
        )
    click.echo(f"Unmuted {segment}{f' {step}' if step else ''} ({ended} mute(s) ended).")


@incidents.command()
@click.option("--explain", "incident_id", required=True, help="The incident to explain.")
@click.pass_obj
def routes(ctx: Any, incident_id: str) -> None:
    """Which route(s) an incident takes to which sinks, and why."""
    from .anomaly.incident_book import find, routing_of
    from .anomaly.routes import explain

    pipeline = _book(ctx)
    view = find(pipeline.warehouse, pipeline.settings, incident_id)
    routing = routing_of(view, pipeline.settings)
    click.echo(f"Incident {incident_id}:")
    for line in explain(routing, pipeline.settings.alert_sinks):
        click.echo(f"  {line}")
    click.echo(f"  sinks: {', '.join(routing.sinks)}")


@click.command()
@click.option(
    "--date", "day", type=DATE, default=None, help="The UTC date (default: the newest with data)."
)
@click.option(
    "--sink",
    "sinks",
    multiple=True,
    type=click.Choice(SINKS),
    help="Also send it to this sink (repeat).",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.pass_obj
def digest(ctx: Any, day: date | None, sinks: tuple[str, ...], fmt: str) -> None:
    """A day's funnel against the same weekday a week before, its incidents and top movers."""
    from .anomaly.digest import build_digest, format_digest, send_digest

    pipeline = _book(ctx)
    if sinks:
        pipeline.settings.check_sinks(list(sinks))
    found = build_digest(pipeline.warehouse, pipeline.settings, day)
    click.echo(found.to_json() if fmt == "json" else format_digest(found))
    if sinks:
        outcome = send_digest(pipeline.warehouse, pipeline.settings, found, list(sinks))
        for name, status in outcome.items():
            click.echo(f"Digest to {name}: {status}", err=True)
        failed = [n for n, s in outcome.items() if s.startswith("failed")]
        if failed:
            raise FunnelPulseError(
                f"The digest could not be sent to {', '.join(failed)}. Run the command again "
                "to retry (sinks that got it are not sent it twice)"
            )
