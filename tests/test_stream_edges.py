"""The stream's edges: event times it cannot trust (a wrong clock), offsets it cannot trust (a
broker that came back empty), files it cannot trust (a slow writer, a replaced file). Real broker,
real Delta tables, the CLI in a subprocess where the process is the point; exact counts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_live_equals_batch, fp

from funnelpulse import Pipeline, generate_events, tables, write_events
from funnelpulse.ingest import FUTURE_REASON, LATE_REASON


def stream(warehouse: str, source: str, *extra: str, env: dict[str, str] | None = None) -> Any:
    return fp(
        "--warehouse", warehouse, "stream", "--source", source, "--until-idle", "2", *extra, env=env
    )


def messages_of(events: Any) -> list[tuple[str, str | None, float]]:
    out = []
    for r in events.to_pylist():
        r["event_time"] = r["event_time"].strftime("%Y-%m-%d %H:%M:%S UTC")
        out.append((json.dumps(r), r["user_session"], 0.0))
    return out


def wrong_clock(when: str, n: int, tag: str) -> list[tuple[str, str | None, float]]:
    """`n` well-formed events dated `when` (a device with a wrong clock)."""
    return [
        (
            json.dumps(
                {
                    "event_time": f"{when} UTC",
                    "event_type": "view",
                    "product_id": 100 + i,
                    "category_id": 7,
                    "brand": "clockless",
                    "price": 3.5,
                    "user_id": 900 + i,
                    "user_session": f"{tag}-{i}",
                }
            ),
            f"{tag}-{i}",
            0.0,
        )
        for i in range(n)
    ]


def reasons(warehouse: str) -> Counter[str]:
    path = tables.table_path(warehouse, tables.QUARANTINE)
    if not tables.exists(path):
        return Counter()
    return Counter(r.split(":")[0] for r in tables.read(path).column("reason").to_pylist())


def interleave(real: list[Any], odd: list[Any], after: int) -> list[Any]:
    """`odd` spread evenly through `real`, none among its first `after` messages."""
    out = list(real[:after])
    rest = real[after:]
    step = max(1, len(rest) // (len(odd) + 1))
    for i, message in enumerate(odd):
        out += rest[i * step : (i + 1) * step] + [message]
    return out + rest[len(odd) * step :]


# ---------------------------------------------------------------- event time you can trust


@pytest.mark.kafka
@pytest.mark.slow
def test_events_dated_2030_and_2015_never_make_real_events_late(
    broker: str, tmp_path: Path
) -> None:
    """A few events dated 2030-01-01 and 2015-06-01 among real ones, across a restart: every real
    event is counted exactly as a batch build counts it, the 2030 ones are quarantined as ahead of
    the clock, the 2015 ones as late, and nothing else is lost."""
    from funnelpulse.streaming.broker import create_topic
    from funnelpulse.streaming.replay import publish

    topic = "wrong-clock"
    create_topic(broker, topic)
    url = f"kafka://{broker}/{topic}"
    events = generate_events(6_000, seed=21, days=2, brands=8)
    first, second = events.slice(0, 4_000), events.slice(4_000)
    publish(
        url, iter(interleave(messages_of(first), wrong_clock("2030-01-01 00:00:00", 5, "f"), 1_500))
    )
    wh = str(tmp_path / "wh")
    done = stream(wh, url, "--max-rows-per-batch", "500")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "4,005 events in, 0 late events quarantined" in done.stdout, done.stdout
    odd = wrong_clock("2015-06-01 12:00:00", 5, "p") + wrong_clock("2030-01-01 00:00:00", 1, "g")
    publish(url, iter(interleave(messages_of(second), odd, 200)))
    again = stream(wh, url, "--max-rows-per-batch", "500")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "2,006 events in, 5 late events quarantined" in again.stdout, again.stdout
    assert reasons(wh) == Counter({FUTURE_REASON: 6, LATE_REASON: 5})
    batch = Pipeline(warehouse=str(tmp_path / "batch"))
    batch.ingest([write_events(events, tmp_path / "real.csv")])
    batch.build()
    import shutil

    shutil.copytree(Path(wh, tables.GOLD_STREAM), Path(batch.warehouse, tables.GOLD_STREAM))
    assert_live_equals_batch(batch)  # every real event counted, finality from real times only
