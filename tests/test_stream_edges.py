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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# ---------------------------------------------------------------- offsets you can trust


def _live_views(warehouse: str) -> int:
    return sum(
        r["views"]
        for r in tables.read(tables.table_path(warehouse, tables.GOLD_STREAM)).to_pylist()
    )


def _batch_of(events: Any, tmp_path: Path, name: str) -> Pipeline:
    batch = Pipeline(warehouse=str(tmp_path / name))
    batch.ingest([write_events(events, tmp_path / f"{name}.csv")])
    batch.build()
    return batch


def _with_live(batch: Pipeline, live_warehouse: str) -> Pipeline:
    import shutil

    target = Path(batch.warehouse, tables.GOLD_STREAM)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(Path(live_warehouse, tables.GOLD_STREAM), target)
    return batch


@pytest.mark.kafka
@pytest.mark.slow
def test_a_broker_back_empty_stops_the_stream_with_the_offsets_then_earliest_reads_all(
    tmp_path: Path,
) -> None:
    """The stream caught up; the (memory-only) broker restarts empty and new events arrive at
    offsets the stream believes it has read. The next run stops (exit 1) naming the topic, the
    partition and both offsets; with --on-offset-reset earliest it reads every new event."""
    from funnelpulse.streaming.broker import create_topic, free_port, start_broker, stop_broker
    from funnelpulse.streaming.replay import publish

    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    url = f"kafka://{bootstrap}/reborn"
    events = generate_events(4_000, seed=31, days=1, brands=6)
    old, new = events.slice(0, 3_000), events.slice(3_000)
    wh = str(tmp_path / "wh")
    proc = start_broker(port)
    try:
        create_topic(bootstrap, "reborn")
        publish(url, iter(messages_of(old)))
        assert stream(wh, url).returncode == 0
        stop_broker(proc)
        proc = start_broker(port)
        create_topic(bootstrap, "reborn")
        publish(url, iter(messages_of(new)))
        stopped = stream(wh, url)
        assert stopped.returncode == 1, stopped.stderr[-2000:]
        error = stopped.stderr.strip().splitlines()[-1]
        assert error.startswith("Error: Kafka topic reborn partition "), error
        assert "below the stream's committed offset" in error and "--on-offset-reset" in error
        assert "Traceback" not in stopped.stderr
        again = stream(wh, url, "--on-offset-reset", "earliest")
        assert again.returncode == 0, again.stderr[-2000:]
        assert "1,000 events in, 0 late events quarantined" in again.stdout, again.stdout
    finally:
        stop_broker(proc)
    assert_live_equals_batch(_with_live(_batch_of(events, tmp_path, "batch"), wh))


def _recreate(bootstrap: str, topic: str) -> None:
    """Create the topic on a broker that just restarted (its first answers can be slow)."""
    from funnelpulse.streaming.broker import create_topic

    for attempt in range(3):
        try:
            create_topic(bootstrap, topic)
            return
        except TimeoutError:
            if attempt == 2:
                raise


def _offsets_committed(warehouse: str) -> int:
    """Messages the stream has committed as read (the offsets in its last commit)."""
    from funnelpulse.streaming.engine import committed

    _, meta = committed(tables.table_path(warehouse, tables.GOLD_STREAM))
    return sum(meta.get("plan", {}).get("offsets", {}).values())


@pytest.mark.kafka
@pytest.mark.slow
def test_a_running_stream_notices_the_broker_came_back_empty(tmp_path: Path) -> None:
    """The same while the stream runs: with FUNNELPULSE_ON_OFFSET_RESET=earliest it reads the new
    events within seconds; with the default it exits 1 with the offsets, never waits silently."""
    import os
    import subprocess
    import sys
    import time

    from funnelpulse.streaming.broker import create_topic, free_port, start_broker, stop_broker
    from funnelpulse.streaming.replay import publish

    events = generate_events(3_000, seed=32, days=1, brands=6)
    old, new = events.slice(0, 2_000), events.slice(2_000)
    for policy in ("earliest", "error"):
        port = free_port()
        bootstrap = f"127.0.0.1:{port}"
        url = f"kafka://{bootstrap}/reborn"
        wh = str(tmp_path / f"wh-{policy}")
        proc = start_broker(port)
        runner = None
        try:
            create_topic(bootstrap, "reborn")
            publish(url, iter(messages_of(old)))
            runner = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "funnelpulse",
                    "--warehouse",
                    wh,
                    "stream",
                    "--source",
                    url,
                    "--until-idle",
                    "20",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "FUNNELPULSE_ON_OFFSET_RESET": policy},
            )
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and _offsets_committed(wh) < 2_000:
                time.sleep(0.3)  # until the stream has caught up on the old events
            assert _offsets_committed(wh) == 2_000
            stop_broker(proc)
            proc = start_broker(port)
            _recreate(bootstrap, "reborn")
            publish(url, iter(messages_of(new)))
            out, err = runner.communicate(timeout=180)
        finally:
            if runner is not None and runner.poll() is None:
                runner.kill()
            stop_broker(proc)
        if policy == "earliest":
            assert runner.returncode == 0, err[-3000:]
            assert "3,000 events in, 0 late events quarantined" in out, err[-5000:]
            assert "reading on from offset 0 (on_offset_reset = earliest)" in err
            assert_live_equals_batch(_with_live(_batch_of(events, tmp_path, "b"), wh))
        else:
            assert runner.returncode == 1, err[-3000:]
            assert "Error: Kafka topic reborn partition " in err, err[-3000:]
            assert "Traceback" not in err


# ---------------------------------------------------------------- files you can trust


def _live_total(warehouse: str) -> int:
    path = tables.table_path(warehouse, tables.GOLD_STREAM)
    if not tables.exists(path):
        return 0
    return sum(r["views"] + r["carts"] + r["purchases"] for r in tables.read(path).to_pylist())


@pytest.mark.slow
def test_a_file_written_slowly_in_chunks_is_read_whole_and_names_in_progress_never(
    tmp_path: Path,
) -> None:
    """30,000 rows appended in 10 chunks cut mid-line, no rename, while the stream watches: the
    file is read once, whole (every row counted as a batch build counts it, no cut line in
    quarantine); hidden, `_`, `.tmp` and `.part` files beside it are never read."""
    import os
    import subprocess
    import sys
    import time

    folder = tmp_path / "landing"
    folder.mkdir()
    events = generate_events(30_000, seed=41, days=1, brands=6)
    whole = write_events(events, tmp_path / "whole.csv").read_bytes()
    for name in (".hidden.csv", "_staging.csv", "late.csv.tmp", "upload.csv.part"):
        (folder / name).write_bytes(whole[: len(whole) // 3])
    wh = str(tmp_path / "wh")
    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "funnelpulse",
            "--warehouse",
            wh,
            "stream",
            "--source",
            f"files://{folder}",
            "--until-idle",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FUNNELPULSE_SETTLE_S": "2"},
    )
    try:
        chunk = len(whole) // 10 + 1
        with open(folder / "day.csv", "wb") as out:
            for i in range(10):
                out.write(whole[i * chunk : (i + 1) * chunk])
                out.flush()
                time.sleep(0.5)
        out_text, err = runner.communicate(timeout=180)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 0, err[-3000:]
    assert "30,000 events in" in out_text and "0 quarantined in all" in out_text, out_text
    assert not tables.exists(tables.table_path(wh, tables.QUARANTINE))
    batch = _batch_of(events, tmp_path, "batch")
    assert _live_total(wh) == sum(
        r["views"] + r["carts"] + r["purchases"]
        for r in batch.table(tables.GOLD_HOURLY_BRAND).to_pylist()
    )
    assert_live_equals_batch(_with_live(batch, wh))


def test_the_landing_rule() -> None:
    """Names in progress are ignored; a file counts as landed after settle_s unchanged."""
    from types import SimpleNamespace

    from funnelpulse.streaming.landing import Landing, ignored

    assert [
        n
        for n in ("a.csv", ".a.csv", "_a.csv", "a.csv.tmp", "a.CSV.PART", "a.parquet")
        if not ignored(n)
    ] == ["a.csv", "a.parquet"]
    now = [1_000.0]
    landing = Landing(10, clock=lambda: now[0])

    def stat(size: int, mtime: float) -> Any:
        return SimpleNamespace(st_size=size, st_mtime_ns=int(mtime * 1e9), st_mtime=mtime)

    path = Path("x.csv")
    assert not landing.settled(path, stat(10, 999.0))  # just written
    now[0] = 1_005.0
    assert not landing.settled(path, stat(20, 1_004.0))  # grew: the clock starts again
    now[0] = 1_013.0
    assert not landing.settled(path, stat(20, 1_004.0))  # unchanged 8 s by observation, 9 by mtime
    now[0] = 1_015.0
    assert landing.settled(path, stat(20, 1_004.0))  # unchanged for 10 s
    assert landing.settled(Path("old.csv"), stat(5, 900.0))  # last written long ago


@pytest.mark.slow
def test_a_file_replaced_under_its_name_replaces_its_rows_exactly_once(tmp_path: Path) -> None:
    """Day 1 and day 2 streamed; day 1's file is then replaced by atomic rename with corrected
    content (types and prices changed, events added, a different bad line): after a restart its
    old rows are out of the final windows, the buckets and quarantine, its new rows in, once;
    the live table equals a batch build of what the folder now holds."""
    import os

    import pyarrow as pa
    import pyarrow.compute as pc

    folder = tmp_path / "landing"
    folder.mkdir()
    day1 = generate_events(3_000, seed=51, days=1, brands=5)
    day2 = generate_events(2_000, seed=52, days=1, brands=5)
    day2 = day2.set_column(
        0,
        "event_time",
        pc.add(day2.column("event_time"), pa.scalar(86_400_000_000, pa.duration("us"))),
    )

    def with_bad_line(events: Any, path: Path, bad: str) -> Path:
        write_events(events, path)
        with open(path, "a") as out:
            out.write(bad + "\n")
        return path

    with_bad_line(day1, folder / "day1.csv", "2019-10-01 10:00:00 UTC,click,1,7,,acme,5.0,1,s")
    write_events(day2, folder / "day2.csv")
    wh = str(tmp_path / "wh")
    first = stream(wh, f"files://{folder}")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "5,001 events in" in first.stdout, first.stdout
    kinds = day1.column("event_type").to_pylist()
    fixed = day1.set_column(
        1, "event_type", pa.array(["purchase" if i % 10 == 0 else k for i, k in enumerate(kinds)])
    )
    extra = generate_events(300, seed=53, days=1, brands=5)
    corrected = pa.concat_tables([fixed, extra]).sort_by("event_time")
    staged = with_bad_line(
        corrected, tmp_path / "day1.csv", "2019-10-01 11:00:00 UTC,view,x,7,,acme,5.0,1,s"
    )
    os.replace(staged.rename(folder / "day1.csv.tmp"), folder / "day1.csv")
    again = stream(wh, f"files://{folder}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "3,301 events in" in again.stdout, again.stdout
    batch = Pipeline(warehouse=str(tmp_path / "batch"))
    batch.ingest([folder / "day1.csv", folder / "day2.csv"])
    batch.build()
    assert_live_equals_batch(_with_live(batch, wh))
    quarantined = tables.read(tables.table_path(wh, tables.QUARANTINE)).to_pylist()
    assert [r["reason"].split(":")[0] for r in quarantined] == ["non-numeric product_id"]
    from funnelpulse.streaming.buckets import read_buckets

    shop = read_buckets(wh).filter(pc.equal(read_buckets(wh).column("dimension"), "shop"))
    gold = batch.table(tables.GOLD_HOURLY_BRAND)
    for m in ("views", "carts", "purchases"):
        assert pc.sum(shop.column(m)).as_py() == pc.sum(gold.column(m)).as_py(), m


@st.composite
def _skewed_batches(draw: Any) -> list[list[tuple[float, bool]]]:
    """Batches of (seconds after 2019-10-01, is_real): real events move on 10 minutes a batch;
    each batch also holds up to 2 events (fewer than its real ones) whose clock is off by seconds
    to decades, either way."""
    batches = []
    for i in range(draw(st.integers(2, 5))):
        real = draw(st.integers(3, 30))
        times = [(i * 600 + draw(st.floats(0, 599)), True) for _ in range(real)]
        for _ in range(draw(st.integers(0, min(2, (real - 1) // 2)))):
            skew = draw(st.sampled_from((-1, 1))) * 10 ** draw(st.floats(0, 8.8))
            times.append((i * 600 + draw(st.floats(0, 599)) + skew, False))
        batches.append(draw(st.permutations(times)))
    return batches


@pytest.mark.slow
@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=_skewed_batches())
def test_random_clock_skews_never_make_a_real_event_late(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[tuple[float, bool]]]
) -> None:
    """Whatever the skews of a few events of each batch, every real event is counted live, and
    every event ends in the live table or quarantine (exact counts)."""
    from datetime import UTC, datetime, timedelta

    from conftest import row, write_csv

    from funnelpulse.config import load_settings
    from funnelpulse.streaming.engine import EmbeddedStream

    root = tmp_path_factory.mktemp("skews")
    folder = root / "in"
    folder.mkdir()
    wh = str(root / "wh")
    settings = load_settings(warehouse=wh, settle_s=0.0)
    run = EmbeddedStream(wh, settings, f"files://{folder}", str(root / "ckpt"), {}, 30.0, None)
    start = datetime(2019, 10, 1, tzinfo=UTC)
    user = 0
    try:
        for i, batch in enumerate(batches):
            lines = []
            for seconds, real in batch:
                user += 1
                when = start + timedelta(seconds=seconds)
                if when.year < 1900 or when.year > 9000:
                    when = start
                text = when.strftime("%Y-%m-%d %H:%M:%S")
                lines.append(
                    row(text, brand="real" if real else "odd", user=user, session=f"s{user}")
                )
            write_csv(folder / f"b{i:02d}.csv", lines)
            assert run.step(10_000, 0.01) is not None
    finally:
        run.close()
    live = tables.read(tables.table_path(wh, tables.GOLD_STREAM)).to_pylist()
    counted = Counter()
    for r in live:
        counted[r["brand"]] += r["views"]
    quarantine = tables.table_path(wh, tables.QUARANTINE)
    quarantined = tables.read(quarantine).num_rows if tables.exists(quarantine) else 0
    real = sum(1 for b in batches for _, is_real in b if is_real)
    odd = sum(len(b) for b in batches) - real
    assert counted["real"] == real
    assert counted["odd"] + quarantined == odd


@pytest.mark.spark
@pytest.mark.slow
def test_spark_stream_quarantines_events_ahead_of_the_clock(tmp_path: Path) -> None:
    """On Spark too: events dated 2030 among real ones go to quarantine with the reason (judged
    against each batch's clock) and never reach the live table or its watermark."""
    from conftest import row, write_csv

    folder = tmp_path / "incoming"
    folder.mkdir()
    real = [row(f"2019-10-01 10:{m:02d}:00", user=m, session=f"s{m}") for m in range(40)]
    odd = [row("2030-01-01 00:00:00", user=100 + i, session=f"f{i}") for i in range(3)]
    write_csv(folder / "a.csv", real[:20] + odd + real[20:])
    wh = str(tmp_path / "wh")
    done = fp(
        "--warehouse",
        wh,
        "stream",
        "--source",
        f"files://{folder}",
        "--until-idle",
        "6",
        "--trigger-s",
        "1",
        "--engine",
        "spark",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert reasons(wh) == Counter({FUTURE_REASON: 3})
    live = tables.read(tables.table_path(wh, tables.GOLD_STREAM)).to_pylist()
    assert [(r["views"], r["window_start"].year) for r in live] == [(40, 2019)]
