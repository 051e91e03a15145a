"""Streaming end to end on the Spark engine (--engine spark) with a real Kafka-protocol broker
(tansu); the embedded engine has tests/test_stream_embedded.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from conftest import assert_live_equals_batch, fp, row, sasl_config, write_csv

from funnelpulse import Pipeline, generate_events, tables, write_events
from funnelpulse.config import load_settings
from funnelpulse.ingest import RAW_COLUMNS
from funnelpulse.pipeline import sample_files
from funnelpulse.streaming.broker import create_topic, free_port
from funnelpulse.streaming.buckets import SPARK_BUCKETS_APP_ID, aggregate, read_buckets
from funnelpulse.streaming.replay import publish

pytestmark = [pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]


def stream(warehouse: str, source: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return fp(
        "--warehouse",
        warehouse,
        "stream",
        "--source",
        source,
        "--until-idle",
        "6",
        "--trigger-s",
        "1",
        "--engine",
        "spark",
        "--master",
        "local[2]",
        *extra,
        timeout=600,
    )


def test_real_sample_through_kafka_equals_batch(broker: str, tmp_path: Path) -> None:
    topic = "real-sample"
    create_topic(broker, topic)
    p = Pipeline(warehouse=str(tmp_path / "wh"))
    p.ingest(sample_files())
    p.build()
    sent = fp("--warehouse", p.warehouse, "replay", "--to", f"kafka://{broker}/{topic}")
    assert sent.returncode == 0, sent.stderr
    assert "Published 42,569 events" in sent.stdout
    done = stream(p.warehouse, f"kafka://{broker}/{topic}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "42,569 events in, 0 late events dropped" in done.stdout
    assert_live_equals_batch(p)


def test_kill_9_and_restart_loses_and_double_counts_nothing(broker: str, tmp_path: Path) -> None:
    topic = "kill-test"
    create_topic(broker, topic)
    events = generate_events(40_000, seed=4, days=2, brands=30).sort_by("event_time")
    p = Pipeline(warehouse=str(tmp_path / "wh"))
    p.ingest([write_events(events, tmp_path / "e.csv")])
    p.build()
    first = write_events(events.slice(0, 20_000), tmp_path / "first.csv")
    second = write_events(events.slice(20_000), tmp_path / "second.csv")

    def replay(path: Path, speedup: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "funnelpulse",
            "--warehouse",
            p.warehouse,
            "replay",
            "--to",
            f"kafka://{broker}/{topic}",
            "--from",
            str(path),
            "--speedup",
            speedup,
        ]

    # Half the topic is there before the stream starts. At 3,000 rows a batch the stream needs
    # 7 batches for it, so a kill after 2 lands mid-run however fast or slow the machine is
    # (a paced publish alone once let a loaded machine see its 2nd batch only after the end).
    assert subprocess.run(replay(first, "0"), capture_output=True).returncode == 0
    args = [
        sys.executable,
        "-m",
        "funnelpulse",
        "--warehouse",
        p.warehouse,
        "stream",
        "--source",
        f"kafka://{broker}/{topic}",
        "--trigger-s",
        "1",
        "--max-rows-per-batch",
        "3000",
        "--engine",
        "spark",
        "--master",
        "local[2]",
    ]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    assert proc.stdout is not None
    # the other half is published (paced: a day of events in ~17 s) while the stream consumes
    replayer = subprocess.Popen(replay(second, "5000"), stdout=subprocess.DEVNULL)
    deadline = time.time() + 240
    seen: list[str] = []
    for line in proc.stdout:
        if "funnelpulse_windows batch" in line and ": 0 rows in" not in line:
            seen.append(line.strip())
        if len(seen) >= 2 or time.time() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its JVM and Python workers, mid-run
    proc.wait()
    assert replayer.wait(timeout=120) == 0
    assert len(seen) == 2, seen
    assert all(": 3,000 rows in" in line for line in seen), seen  # batches are capped
    partial = sum(p.table(tables.GOLD_STREAM).column("views").to_pylist())
    full = sum(p.table(tables.GOLD_HOURLY_BRAND).column("views").to_pylist())
    assert 0 < partial < full  # killed with part of the topic processed
    done = stream(p.warehouse, f"kafka://{broker}/{topic}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert_live_equals_batch(p)


def test_the_spark_kafka_reader_reads_its_options_as_spark_hands_them_over() -> None:
    """Spark gives a Python source its options with lower-cased names: the batch cap, the broker
    timeout and the user's Kafka options (here SASL) must survive that, or a Spark stream reads
    500,000 rows a batch whatever --max-rows-per-batch says and connects without its security."""
    from pyspark.sql.datasource import CaseInsensitiveDict

    from funnelpulse.engines.spark_kafka_source import KafkaDataSource, _config

    given = {
        "bootstrap": "broker:9092",
        "topic": "t",
        "maxOffsetsPerTrigger": "3000",
        "brokerTimeoutSeconds": "7",
        "kafkaOptions": json.dumps({"security.protocol": "SASL_PLAINTEXT"}),
    }
    reader = KafkaDataSource(CaseInsensitiveDict(given)).streamReader(None)
    assert (reader.max_rows, reader.timeout_s) == (3000, 7.0)
    assert reader.getDefaultReadLimit().max_rows == 3000
    assert _config(reader.options)["security.protocol"] == "SASL_PLAINTEXT"


def test_the_spark_stream_connects_with_the_config_files_kafka_options(
    broker: str, tmp_path: Path
) -> None:
    """Asked for SASL (the bundled broker has none), the Spark stream must be refused, not read
    the topic without it; the secret never shows."""
    topic = "spark-options"
    create_topic(broker, topic)
    publish(f"kafka://{broker}/{topic}", iter([(json.dumps({"event_type": "view"}), "s", 0.0)]))
    config, env = sasl_config(tmp_path)
    sasl = fp(
        "--config",
        str(config),
        "--warehouse",
        str(tmp_path / "wh"),
        "stream",
        "--source",
        f"kafka://{broker}/{topic}",
        "--until-idle",
        "5",
        "--broker-timeout-s",
        "3",
        "--engine",
        "spark",
        "--master",
        "local[1]",
        env=env,
        timeout=600,
    )
    assert sasl.returncode == 1, (sasl.returncode, sasl.stdout[-1000:], sasl.stderr[-2000:])
    assert "Error:" in sasl.stderr and "unreachable" in sasl.stderr, sasl.stderr[-2000:]
    assert "TopSecret42" not in sasl.stdout + sasl.stderr


def test_a_capped_spark_batch_shares_the_cap_among_partitions_by_their_backlog() -> None:
    """Not the first partition first: that would run its event time ahead of the others' and
    the watermark would drop their older events as late (7,474 of 40,000 once, on restart)."""
    from funnelpulse.engines.spark_kafka_source import _capped_ends

    begins, highs = {"0": 0, "1": 100}, {"0": 10_101, "1": 10_000}
    ends = _capped_ends(begins, highs, 3000)
    assert sum(ends[p] - begins[p] for p in ends) == 3000
    assert ends == {"0": 1515, "1": 100 + 1485}
    assert _capped_ends(begins, highs, None) == highs == _capped_ends(begins, highs, 50_000)
    one_waiting = _capped_ends({"0": 5, "1": 7}, {"0": 5, "1": 9_000}, 3000)
    assert one_waiting == {"0": 5, "1": 3007}


# ---------------------------------------------------------------- 5-minute buckets (both engines)


@pytest.fixture(scope="module")
def bucket_input(broker: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Any], ...]:
    """A topic of one generated day (a third without a brand, every price band) with 1 event in
    40 sent again a few dozen messages later, and the buckets a batch build's silver events give."""
    events = generate_events(12_000, seed=21, days=1, brands=25)
    rows = events.to_pylist()
    repeats = {i + 50: rows[i] for i in range(0, len(rows) - 50, 40)}
    messages = []
    for i, r in enumerate(rows):
        for event in (r, repeats.get(i)):
            if event is not None:
                text = {
                    **event,
                    "event_time": event["event_time"].strftime("%Y-%m-%d %H:%M:%S UTC"),
                }
                messages.append((json.dumps(text), event["user_session"], 0.0))
    create_topic(broker, "buckets")
    publish(f"kafka://{broker}/buckets", iter(messages))
    folder = tmp_path_factory.mktemp("buckets")
    batch = Pipeline(warehouse=str(folder / "batch"))
    batch.ingest(
        [
            write_events(
                pa.Table.from_pylist(rows + list(repeats.values()), events.schema),
                folder / "all.csv",
            )
        ]
    )
    batch.build()
    expected = bucket_rows(
        aggregate(batch.table(tables.SILVER), load_settings().live_bucket_minutes)
    )
    assert sum(r[4] for r in expected if r[2] == "shop") > 0
    assert {r[3] for r in expected if r[2] == "brand"} >= {"(unknown)"}
    return messages, expected


def bucket_rows(buckets: pa.Table) -> list[tuple[Any, ...]]:
    """Bucket rows without their commit times, revenue rounded (sums in another order)."""
    return sorted(
        (
            r["bucket_start"],
            r["bucket_end"],
            r["dimension"],
            r["segment"],
            r["views"],
            r["carts"],
            r["purchases"],
            round(r["revenue"], 6),
        )
        for r in buckets.to_pylist()
    )


def test_both_engines_keep_the_same_5_minute_buckets(
    broker: str, bucket_input: tuple[list[Any], ...], tmp_path: Path
) -> None:
    source = f"kafka://{broker}/buckets"
    expected = bucket_input[1]
    embedded = str(tmp_path / "embedded")
    done = fp(
        "--warehouse",
        embedded,
        "stream",
        "--source",
        source,
        "--until-idle",
        "2",
        "--max-rows-per-batch",
        "4000",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    spark = str(tmp_path / "spark")
    done = stream(spark, source, "--max-rows-per-batch", "4000")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "0 late events dropped" in done.stdout
    assert bucket_rows(read_buckets(spark)) == bucket_rows(read_buckets(embedded)) == expected
    assert {r[2] for r in expected} == {"shop", "brand", "price_band"}


@pytest.mark.faults
def test_a_spark_batch_replayed_after_its_bucket_merge_counts_once(
    broker: str, bucket_input: tuple[list[Any], ...], tmp_path: Path
) -> None:
    """Killed (SIGKILL) right after the first batch's buckets are committed, before Spark records
    the batch as done: the restart replays that batch, finds it merged and skips it, then counts
    what was published meanwhile."""
    from deltalake import DeltaTable

    messages, expected = bucket_input
    source = f"kafka://{broker}/buckets-kill"
    create_topic(broker, "buckets-kill")
    half = len(messages) // 2
    publish(source, iter(messages[:half]))
    wh = str(tmp_path / "wh")
    args = [sys.executable, "-m", "funnelpulse", "--warehouse", wh, "stream", "--source", source]
    args += ["--until-idle", "6", "--trigger-s", "1", "--max-rows-per-batch", "4000"]
    args += ["--engine", "spark", "--master", "local[2]"]
    killed = subprocess.Popen(
        args,
        env={**os.environ, "FUNNELPULSE_KILL_AT": "stream.buckets_merged"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert killed.wait(timeout=600) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(killed.pid, signal.SIGKILL)  # its JVM, if still there
    path = tables.table_path(wh, tables.GOLD_STREAM_BUCKETS)
    assert DeltaTable(path).transaction_version(SPARK_BUCKETS_APP_ID) == 0
    partial = sum(r[4] for r in bucket_rows(read_buckets(wh)) if r[2] == "shop")
    assert 0 < partial < sum(r[4] for r in expected if r[2] == "shop")
    publish(source, iter(messages[half:]))
    done = stream(wh, source, "--max-rows-per-batch", "4000")
    assert done.returncode == 0, done.stderr[-2000:]
    assert bucket_rows(read_buckets(wh)) == expected
    assert "buckets batch 0: " in done.stderr and "(merged before: skipped)" in done.stderr


def test_spark_refuses_buckets_the_embedded_engine_counted(tmp_path: Path) -> None:
    """Adding Spark's batches on top of the embedded engine's would count events twice."""
    from funnelpulse.engines.spark_stream import _refuse_embedded_table
    from funnelpulse.errors import FunnelPulseError
    from funnelpulse.streaming.buckets import update_buckets

    wh = str(tmp_path / "wh")
    events = generate_events(200, seed=3, days=1, brands=5)
    events = events.append_column("brand_norm", events.column("brand")).append_column(
        "price_band", pa.array(["<10"] * events.num_rows)
    )
    live = tables.table_path(wh, tables.GOLD_STREAM)
    buckets = tables.table_path(wh, tables.GOLD_STREAM_BUCKETS)
    update_buckets(wh, events, batch_id=0, app_id=SPARK_BUCKETS_APP_ID)
    _refuse_embedded_table(live, buckets)  # Spark's own buckets: fine
    update_buckets(wh, events, batch_id=0)  # the embedded engine's
    with pytest.raises(
        FunnelPulseError, match="gold_stream_funnel_buckets was written by the embedded"
    ):
        _refuse_embedded_table(live, buckets)


def test_malformed_and_late_events(broker: str, tmp_path: Path) -> None:
    topic = "bad-and-late"
    create_topic(broker, topic)
    good = [row(f"2019-10-01 {h:02d}:00:00") for h in range(0, 10)]
    messages = [
        *[
            (
                json.dumps(
                    dict(
                        zip(
                            RAW_COLUMNS,
                            r.split(","),
                            strict=True,
                        )
                    )
                ),
                "s1",
                0.0,
            )
            for r in good
        ],
        ("this is not json", "s1", 0.0),
        (  # judged by the ingest step's rules, as a batch ingest would: NaN is not a price
            json.dumps(
                {
                    "event_time": "2019-10-01 09:31:00 UTC",
                    "event_type": "purchase",
                    "product_id": 1,
                    "price": "NaN",
                    "user_id": 5,
                }
            ),
            "s1",
            0.0,
        ),
        (
            json.dumps(
                {
                    "event_time": "2019-10-01 09:30:00 UTC",
                    "event_type": "click",
                    "product_id": 1,
                    "price": 2.0,
                    "user_id": 5,
                }
            ),
            "s1",
            0.0,
        ),
        (
            json.dumps(
                {
                    "event_time": "2019-10-01 00:10:00 UTC",
                    "event_type": "view",
                    "product_id": 1,
                    "category_id": 7,
                    "brand": "acme",
                    "price": 5.0,
                    "user_id": 10,
                    "user_session": "late",
                }
            ),
            "s1",
            0.0,
        ),
    ]
    # Spark drops an event as late against the watermark of the batch before the current one,
    # so: in-order events (batch 0), one more in-order event (a later batch), then the late one.
    publish(f"kafka://{broker}/{topic}", iter(messages[:10]))
    wh = str(tmp_path / "wh")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "funnelpulse",
            "--warehouse",
            wh,
            "stream",
            "--source",
            f"kafka://{broker}/{topic}",
            "--until-idle",
            "8",
            "--trigger-s",
            "1",
            "--engine",
            "spark",
            "--master",
            "local[2]",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True
    )  # type: ignore[union-attr]
    reader.start()

    def wait_for(text: str) -> None:
        deadline = time.time() + 180
        while not any(text in line and "funnelpulse_windows" in line for line in lines):
            assert time.time() < deadline, "".join(lines[-20:])
            time.sleep(0.5)

    wait_for("funnelpulse_windows batch 0: 10 rows in ")
    publish(
        f"kafka://{broker}/{topic}",
        iter([messages[0][0].replace("00:00:00 UTC", "09:30:00 UTC"), "s1", 0.0] for _ in range(1)),
    )
    wait_for(": 1 rows in ")
    publish(f"kafka://{broker}/{topic}", iter(messages[10:]))
    out = proc.stdout.read()  # type: ignore[union-attr]
    proc.wait(timeout=300)
    reader.join(timeout=10)
    err = "".join(lines)
    assert proc.returncode == 0, err[-2000:]
    assert "1 late events dropped by the watermark" in out, err[-3000:]
    assert "3 quarantined" in out
    bad = {
        r["reason"].split(":")[0]: r
        for r in Pipeline(warehouse=wh).table(tables.QUARANTINE).to_pylist()
    }
    assert set(bad) == {
        "not a JSON object with the raw columns",
        "unknown event_type",
        "negative or invalid price",
    }
    assert bad["not a JSON object with the raw columns"]["raw_line"] == "this is not json"
    topic_name, _, partition = bad["unknown event_type"]["source_file"].partition(":")
    assert topic_name == topic and partition.isdigit()
    # every message has key s1, so one partition, where offsets count the messages published
    # before: 10 good, the in-order one, then these three in this order
    assert {r["source_file"] for r in bad.values()} == {f"{topic}:{partition}"}
    assert {reason: r["line_number"] for reason, r in bad.items()} == {
        "not a JSON object with the raw columns": 11,
        "negative or invalid price": 12,
        "unknown event_type": 13,
    }


def test_unreachable_broker_exits_cleanly(tmp_path: Path) -> None:
    started = time.time()
    done = stream(
        str(tmp_path / "wh"), f"kafka://127.0.0.1:{free_port()}/nothing", "--broker-timeout-s", "5"
    )
    assert done.returncode == 1
    assert "Error: The stream stopped" in done.stderr and "unreachable" in done.stderr
    assert "Traceback" not in done.stderr.split("Error:")[-1]
    assert time.time() - started < 120


def test_files_source(tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    write_csv(
        folder / "a.csv",
        [row("2019-10-01 10:00:00"), row("2019-10-01 10:05:00", etype="cart"), "bad,row"],
    )
    done = stream(str(tmp_path / "wh"), f"files://{folder}")
    assert done.returncode == 0, done.stderr[-2000:]
    live = Pipeline(warehouse=str(tmp_path / "wh")).table(tables.GOLD_STREAM).to_pylist()
    assert [(r["views"], r["carts"]) for r in live] == [(1, 1)]
    assert "1 quarantined" in done.stdout
    # the dashboard's Live page shows the current hour of the live table
    from streamlit.testing.v1 import AppTest

    os.environ["FUNNELPULSE_WAREHOUSE"] = str(tmp_path / "wh")
    try:
        page = Path(__file__).parents[1] / "src/funnelpulse/dashboard/pages/5_Live.py"
        at = AppTest.from_file(str(page), default_timeout=60).run()
    finally:
        os.environ.pop("FUNNELPULSE_WAREHOUSE", None)
    assert not at.exception
    shown = {m.label: m.value for m in at.metric}
    assert (shown["Views"], shown["Carts"], shown["Purchases"]) == ("1", "1", "0")
    assert "2019-10-01 10:00 UTC" in at.subheader[0].value


def test_a_stopped_stream_names_its_cause() -> None:
    from funnelpulse.engines.spark_stream import _cause

    python = (
        "An exception was raised by the Python Proxy. Return Message: Traceback (most recent call last):\n"
        '  File "job.py", line 299, in bad_rows\n'
        "deltalake.exceptions.CommitFailedError: Failed to commit transaction: disk full\n"
    )
    assert _cause(python) == "CommitFailedError: Failed to commit transaction: disk full"
    java = (
        "An exception was raised by the Python Proxy. Return Message: Traceback (most recent call last):\n"
        "py4j.protocol.Py4JJavaError: An error occurred while calling o302.getResult.\n"
        ": org.apache.spark.SparkException: Exception thrown in awaitResult: \n"
        "\tat org.apache.spark.util.SparkThreadUtils$.awaitResult(SparkThreadUtils.scala:70)\n"
        "Caused by: org.apache.spark.SparkException: Job aborted due to stage failure: Lost task 0.0\n"
        "\tat java.base/java.io.ObjectInputStream.readObject0(ObjectInputStream.java:1756)\n"
        "Caused by: java.io.OptionalDataException\n"
    )
    assert _cause(java) == "java.io.OptionalDataException"
    assert _cause("Query terminated\nmore") == "Query terminated"


def test_a_spark_stream_whose_source_stops_raises_one_no_data_incident_and_resolves_it(
    broker: str, tmp_path: Path
) -> None:
    """`stream --engine spark --alert` with no_data_minutes = 0.05 (3 s): once the topic stops
    bringing messages, one no-data incident reaches the sink within 3 s + one check interval
    (3 s: the check runs every min(5 s, the limit)), however long the silence lasts; messages
    again resolve it, once. The same incident, ids and texts as the embedded stream's."""
    from datetime import UTC, datetime, timedelta

    topic = "no-data"
    create_topic(broker, topic)
    source = f"kafka://{broker}/{topic}"

    def messages(hour: int) -> list[tuple[str, str, float]]:
        rows = [row(f"2019-10-01 {hour:02d}:{m:02d}:00") for m in range(0, 60, 6)]
        return [
            (json.dumps(dict(zip(RAW_COLUMNS, r.split(","), strict=True))), "s1", 0.0)
            for r in rows
        ]

    publish(source, iter(messages(1)))
    alerts = tmp_path / "alerts.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNNELPULSE_")}
    env |= {
        "FUNNELPULSE_ALERT_FILE": str(alerts),
        "FUNNELPULSE_NO_DATA_MINUTES": "0.05",
        "PYTHONUNBUFFERED": "1",
    }
    args = [sys.executable, "-m", "funnelpulse", "--warehouse", str(tmp_path / "wh"), "stream"]
    args += ["--source", source, "--trigger-s", "1", "--engine", "spark", "--master", "local[2]"]
    args += ["--alert", "--sink", "file"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    reader = threading.Thread(
        target=lambda: err.extend(iter(proc.stderr.readline, "")),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()

    def no_data_lines() -> list[dict[str, Any]]:
        found = [json.loads(x) for x in alerts.read_text().splitlines()] if alerts.exists() else []
        return [x for x in found if x["incident_id"].startswith("shop:all:no_data:")]

    try:
        deadline = time.monotonic() + 300
        while not no_data_lines() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        opened = no_data_lines()
        assert len(opened) == 1, "".join(err[-30:])
        seen_at = datetime.now(UTC)
        # start: the wall-clock time the driver last saw messages; from there to the sink took
        # the limit (3 s) plus at most one check (3 s) and one turn of the driver's loop
        silent = seen_at - datetime.fromisoformat(opened[0]["start"])
        assert timedelta(seconds=3) <= silent <= timedelta(seconds=3 + 3 + 2), silent
        assert opened[0]["steps"] == ["no_data"] and opened[0]["severity"] == "high"
        assert opened[0]["message"].startswith("[HIGH] NO DATA - shop all: no event arrived for")
        # the first batch came before the silence: it was read, so the silence is real
        assert any("funnelpulse_windows batch 0: 10 rows" in line for line in err), err[-30:]
        time.sleep(8.0)  # several checks more: still one incident for one silence
        assert len(no_data_lines()) == 1
        publish(source, iter(messages(2)))
        deadline = time.monotonic() + 180
        while len(no_data_lines()) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        both = no_data_lines()
        assert [x["incident_id"] for x in both] == [
            opened[0]["incident_id"],
            opened[0]["incident_id"] + ":resolved",
        ], "".join(err[-30:])
        assert both[1]["message"].startswith("[RESOLVED] NO DATA - shop all: events arrive again")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        reader.join(timeout=10)
        (tmp_path / "stream.log").write_text("".join(err))  # to read after a failure
    rows = Pipeline(warehouse=str(tmp_path / "wh")).table(tables.ALERTS).to_pylist()
    statuses = sorted(
        (r["incident_id"].removeprefix(opened[0]["incident_id"]), r["status"])
        for r in rows
        if r["incident_id"].startswith("shop:all:no_data:")
    )
    # recorded in the alerts table: one opening, one resolution, nothing more
    assert statuses == [("", "sent"), (":resolved", "sent")]
