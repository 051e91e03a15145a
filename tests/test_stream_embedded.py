"""The embedded stream engine (the default, no JVM) end to end: the real CLI in a subprocess, a real
Kafka-protocol broker (tansu), real Delta tables; kill -9 at every commit boundary, SIGTERM, a dead
broker, and the same judgement of files as `ingest`."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_live_equals_batch, fp, row, sasl_config, write_csv

from funnelpulse import Pipeline, generate_events, tables, write_events
from funnelpulse.errors import FunnelPulseError
from funnelpulse.pipeline import sample_files
from funnelpulse.streaming.sources import parse_json

KILL_POINTS = (
    "stream.planned",
    "stream.quarantine_committed",
    "stream.state_recorded",
    "stream.live_committed",
)


def stream(warehouse: str, source: str, *extra: str, env: dict[str, str] | None = None) -> Any:
    return fp(
        "--warehouse", warehouse, "stream", "--source", source, "--until-idle", "2", *extra, env=env
    )


def live_rows(warehouse: str) -> list[tuple[Any, ...]]:
    """The live table without its commit times, revenue rounded (sums in another order)."""
    rows = tables.read(tables.table_path(warehouse, tables.GOLD_STREAM)).to_pylist()
    return sorted(
        (
            r["window_start"],
            r["brand"] or "",
            r["views"],
            r["carts"],
            r["purchases"],
            round(r["revenue"], 6),
            r["is_final"],
            r["last_event_at"],
            r["conversion_rate"],
        )
        for r in rows
    )


def quarantine_rows(warehouse: str) -> Counter[tuple[Any, ...]]:
    path = tables.table_path(warehouse, tables.QUARANTINE)
    if not tables.exists(path):
        return Counter()
    return Counter(  # a Kafka source is topic:partition; topics differ between runs
        (r["source_file"].rsplit(":", 1)[-1], r["line_number"], r["raw_line"], r["reason"])
        for r in tables.read(path).to_pylist()
    )


def messages_of(events: Any) -> list[tuple[str, str | None, float]]:
    out = []
    for r in events.to_pylist():
        r["event_time"] = r["event_time"].strftime("%Y-%m-%d %H:%M:%S UTC")
        out.append((json.dumps(r), r["user_session"], 0.0))
    return out


# ---------------------------------------------------------------- fast: no broker, no subprocess


def test_parse_json_reads_objects_and_marks_what_is_not_one() -> None:
    good = json.dumps({"event_time": "2019-10-01 00:00:00 UTC", "product_id": 5, "price": 2.5})
    fast = parse_json([good.encode()] * 2, ["t:0", "t:0"], [0, 1])
    assert fast.column("product_id").to_pylist() == ["5", "5"]
    assert float(fast.column("price")[0].as_py()) == 2.5
    assert fast.column("brand").to_pylist() == [None, None]
    mixed = parse_json([good.encode(), b"not json", b"[1, 2]", None], ["t:0"] * 4, [0, 1, 2, 3])
    assert mixed.column("product_id").to_pylist() == ["5", None, None, None]
    assert mixed.column("raw_text").to_pylist()[1:3] == ["not json", "[1, 2]"]


@pytest.mark.slow
def test_files_source_judges_like_ingest(tmp_path: Path) -> None:
    """Missing and extra columns, bad values and blank lines: the stream quarantines exactly the
    rows a batch ingest quarantines, with the same reasons and line numbers."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    lines = [
        row("2019-10-01 10:00:00"),
        "",
        row("2019-10-01 10:05:00", etype="cart"),
        "2019-10-01 10:06:00 UTC,view,1,7",  # missing columns
        row("2019-10-01 10:07:00") + ",extra",  # one column too many
        row("2019-10-01 10:08:00", etype="click"),
        row("2019-10-01 10:09:00", price="-1"),
        row("2019-10-01 10:10:00", etype="purchase", price="9.50"),
    ]
    path = write_csv(folder / "a.csv", lines)
    done = stream(str(tmp_path / "wh"), f"files://{folder}")
    assert done.returncode == 0, done.stderr[-2000:]
    batch = Pipeline(warehouse=str(tmp_path / "batch"))
    batch.ingest([path])
    batch.build()
    streamed = quarantine_rows(str(tmp_path / "wh"))
    ingested = quarantine_rows(batch.warehouse)
    assert len(ingested) == 4 and streamed == ingested
    assert all(line is not None for _, line, _, _ in streamed)
    assert "4 quarantined" in done.stdout
    assert_live_equals_batch(_merged(batch, tmp_path / "wh"))


def _merged(batch: Pipeline, live_warehouse: Path) -> Pipeline:
    """A pipeline view whose batch gold is `batch`'s and whose live table is the stream's."""
    import shutil

    target = Path(batch.warehouse, tables.GOLD_STREAM)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(Path(live_warehouse, tables.GOLD_STREAM), target)
    return batch


# ---------------------------------------------------------------- with the broker


@pytest.mark.kafka
@pytest.mark.slow
def test_real_sample_through_kafka_equals_batch(broker: str, tmp_path: Path) -> None:
    from funnelpulse.streaming.broker import create_topic

    topic = "embedded-real-sample"
    create_topic(broker, topic)
    p = Pipeline(warehouse=str(tmp_path / "wh"))
    p.ingest(sample_files())
    p.build()
    sent = fp("--warehouse", p.warehouse, "replay", "--to", f"kafka://{broker}/{topic}")
    assert sent.returncode == 0, sent.stderr
    assert "Published 42,569 events" in sent.stdout and "all delivered" in sent.stdout
    done = stream(p.warehouse, f"kafka://{broker}/{topic}", "--max-rows-per-batch", "5000")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "42,569 events in, 0 late events quarantined" in done.stdout
    assert "Java" not in done.stderr and "spark" not in done.stderr.lower()
    assert_live_equals_batch(p)


def _bad_messages(offset_h: int) -> list[tuple[str, str | None, float]]:
    return [
        ("this is not json", "s1", 0.0),
        (
            json.dumps(
                {
                    "event_time": f"2019-10-02 {offset_h:02d}:31:00 UTC",
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
                    "event_time": f"2019-10-02 {offset_h:02d}:32:00 UTC",
                    "event_type": "view",
                    "product_id": "x1",
                    "price": 2.0,
                    "user_id": 5,
                }
            ),
            "s1",
            0.0,
        ),
    ]


@pytest.fixture(scope="module")
def kill_topic(broker: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A topic in two parts (the second repeats 500 events of the first and has bad messages),
    and the tables of an uninterrupted run over all of it."""
    from funnelpulse.streaming.broker import create_topic
    from funnelpulse.streaming.replay import publish

    events = generate_events(24_000, seed=11, days=2, brands=20)
    first, second = events.slice(0, 12_000), events.slice(12_000)
    part1 = messages_of(first) + _bad_messages(1)
    part2 = messages_of(first.slice(11_500)) + messages_of(second) + _bad_messages(20)
    topics = {}
    for name in ("reference", *KILL_POINTS):
        topic = f"kill-{name.replace('.', '-')}"
        create_topic(broker, topic)
        publish(f"kafka://{broker}/{topic}", iter(part1))
        topics[name] = topic
    ref = str(tmp_path_factory.mktemp("ref") / "wh")
    url = f"kafka://{broker}/{topics['reference']}"
    publish(url, iter(part2))
    done = stream(ref, url, "--max-rows-per-batch", "4000")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "24,506 events in" in done.stdout, done.stdout  # 23,000 + 500 repeats + 6 bad
    return {"topics": topics, "part2": part2, "reference": ref, "stdout": done.stdout}


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_9_at_each_commit_boundary_then_restart_equals_uninterrupted(
    broker: str, kill_topic: dict[str, Any], point: str, tmp_path: Path
) -> None:
    from funnelpulse.streaming.replay import publish

    url = f"kafka://{broker}/{kill_topic['topics'][point]}"
    wh = str(tmp_path / "wh")
    first = stream(wh, url, "--max-rows-per-batch", "4000")
    assert first.returncode == 0, first.stderr[-2000:]
    publish(url, iter(kill_topic["part2"]))
    killed = stream(wh, url, "--max-rows-per-batch", "4000", env={"FUNNELPULSE_KILL_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    again = stream(wh, url, "--max-rows-per-batch", "4000")
    assert again.returncode == 0, again.stderr[-2000:]
    ref = kill_topic["reference"]
    assert live_rows(wh) == live_rows(ref)
    assert quarantine_rows(wh) == quarantine_rows(ref)
    assert sum(quarantine_rows(wh).values()) == 6
    views = sum(r[2] for r in live_rows(wh))
    assert views == sum(r[2] for r in live_rows(ref)) > 0


@pytest.mark.kafka
@pytest.mark.slow
def test_repeats_across_a_restart_are_dropped_once(broker: str, tmp_path: Path) -> None:
    from funnelpulse.streaming.broker import create_topic
    from funnelpulse.streaming.replay import publish

    topic = "repeats"
    create_topic(broker, topic)
    url = f"kafka://{broker}/{topic}"
    events = generate_events(3_000, seed=3, days=1, brands=5)
    publish(url, iter(messages_of(events)))
    wh = str(tmp_path / "wh")
    assert stream(wh, url).returncode == 0
    before = live_rows(wh)
    repeated = events.slice(2_900)  # the last 100 events (within the watermark) sent again
    publish(url, iter(messages_of(repeated)))
    again = stream(wh, url)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "100 events in, 0 late" in again.stdout
    valid = {
        (r["event_time"], r["user_id"], r["user_session"], r["product_id"], r["event_type"])
        for r in repeated.to_pylist()
        if r["price"] is not None and r["price"] > 0
    }
    assert f"(0 late, {len(valid)} repeats" in again.stderr
    assert live_rows(wh) == before


@pytest.mark.kafka
@pytest.mark.slow
def test_sigterm_commits_the_batch_in_flight_and_stops(broker: str, tmp_path: Path) -> None:
    from funnelpulse.streaming.broker import create_topic
    from funnelpulse.streaming.replay import publish

    topic = "sigterm"
    create_topic(broker, topic)
    url = f"kafka://{broker}/{topic}"
    events = generate_events(30_000, seed=8, days=2, brands=10)
    publish(url, iter(messages_of(events)))
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
            url,
            "--max-rows-per-batch",
            "2000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "batch 1:" in line:
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    stopped = int(out.split(" batches")[0].rsplit(" ", 1)[-1])
    events_in = int(out.split(" events in")[0].rsplit(" ", 1)[-1].replace(",", ""))
    assert stopped >= 2 and 0 < events_in < 30_000
    # every event the run reported is in the live table, committed with its position
    assert sum(r[2] + r[3] + r[4] for r in live_rows(wh)) <= events_in
    rest = stream(wh, url)
    assert rest.returncode == 0, rest.stderr[-2000:]
    assert f"{30_000 - events_in:,} events in" in rest.stdout
    p = Pipeline(warehouse=str(tmp_path / "batch"))
    p.ingest([write_events(events, tmp_path / "e.csv")])
    p.build()
    assert_live_equals_batch(_merged(p, Path(wh)))


@pytest.mark.kafka
def test_unreachable_broker_gives_a_clean_error(tmp_path: Path) -> None:
    from funnelpulse.streaming.broker import free_port

    started = time.time()
    done = stream(
        str(tmp_path / "wh"), f"kafka://127.0.0.1:{free_port()}/nothing", "--broker-timeout-s", "4"
    )
    assert done.returncode == 1
    assert "Error: Kafka at 127.0.0.1:" in done.stderr and "Start the broker" in done.stderr
    assert "Traceback" not in done.stderr
    assert "retrying" in done.stderr  # log lines while it waits
    assert time.time() - started < 60


@pytest.mark.kafka
@pytest.mark.slow
def test_broker_dying_mid_stream_gives_log_lines_then_a_clean_error(tmp_path: Path) -> None:
    from funnelpulse.streaming.broker import create_topic, free_port, start_broker
    from funnelpulse.streaming.replay import publish

    port = free_port()
    proc = start_broker(port)
    url = f"kafka://127.0.0.1:{port}/dying"
    try:
        create_topic(f"127.0.0.1:{port}", "dying")
        publish(url, iter(messages_of(generate_events(2_000, seed=2, days=1))))
        runner = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "funnelpulse",
                "--warehouse",
                str(tmp_path / "wh"),
                "stream",
                "--source",
                url,
                "--broker-timeout-s",
                "5",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert runner.stderr is not None
        for line in runner.stderr:
            if "batch 0:" in line:
                break
    finally:
        proc.kill()
        proc.wait()
    out, err = runner.communicate(timeout=120)
    assert runner.returncode == 1, err[-2000:]
    assert "Kafka at 127.0.0.1" in err and "unreachable" in err
    assert "Traceback" not in err
    assert len(tables.read(str(tmp_path / "wh" / tables.GOLD_STREAM))) > 0


@pytest.mark.kafka
def test_replay_that_cannot_deliver_says_so() -> None:
    from funnelpulse.streaming.broker import free_port
    from funnelpulse.streaming.replay import publish

    messages = iter([("{}", None, 0.0)] * 50)
    with pytest.raises(FunnelPulseError, match=r"50 of 50 events were not delivered"):
        publish(
            f"kafka://127.0.0.1:{free_port()}/t", messages, options={"message.timeout.ms": "2000"}
        )


OUTAGE_DAY = 11  # days of history in batch gold before the day that streams in


@pytest.fixture(scope="module")
def outage_history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    """Eleven days built in batch gold, and the twelfth as a file with a shop-wide tracking outage
    at 08:00-10:00: made once, copied by each engine's run of the scenario."""
    from datetime import UTC, datetime

    import pyarrow.compute as pc

    from funnelpulse.generate import Incident

    root = tmp_path_factory.mktemp("outage")
    last_day = datetime(2019, 10, 1, tzinfo=UTC) + timedelta(days=OUTAGE_DAY)
    outage = Incident(
        "out", "outage", "shop", "all", "views", last_day + timedelta(hours=8), 2, 0.15
    )
    events = generate_events(700_000, seed=5, days=12, brands=30, incidents=[outage])
    before = pc.less(events.column("event_time"), last_day)
    p = Pipeline(warehouse=str(root / "wh"))
    p.ingest([write_events(events.filter(before), root / "history.csv")])
    p.build()
    day12 = write_events(events.filter(pc.invert(before)), root / "day12.csv")
    return Path(p.warehouse), day12, outage


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["embedded", pytest.param("spark", marks=pytest.mark.spark)])
def test_stream_alerts_once_on_an_incident_in_final_windows(
    engine: str, outage_history: tuple[Path, Path, Any], tmp_path: Path
) -> None:
    """Eleven days in batch gold are the history; the twelfth streams in with a shop-wide tracking
    outage at 08:00-10:00. On either engine the stream alerts on it once final, the open-window
    check on the 5-minute buckets sends its "resolved" message, and a restart does not alert
    again."""
    import shutil

    from funnelpulse.anomaly.live_incidents import read_incidents

    history, day12, outage = outage_history
    warehouse = shutil.copytree(history, tmp_path / "wh")
    folder = tmp_path / "incoming"
    folder.mkdir()
    shutil.copy(day12, folder / "day12.csv")
    alerts = tmp_path / "alerts.jsonl"
    env = {"FUNNELPULSE_ALERT_FILE": str(alerts)}
    args = ["--warehouse", str(warehouse), "stream", "--source", f"files://{folder}"]
    args += ["--alert", "--sink", "file"]
    if engine == "spark":
        args += ["--until-idle", "6", "--trigger-s", "1", "--engine", "spark"]
        args += ["--master", "local[2]"]
    else:
        args += ["--until-idle", "2"]

    first = fp(*args, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    sent = [json.loads(line) for line in alerts.read_text().splitlines()]
    shop = [a for a in sent if a["dimension"] == "shop"]
    # one shop incident: the outage, as a traffic drop from its first hour, alerted when its
    # hours are final; then the live path's "resolved" message, under its own key
    assert [a["incident_id"] for a in shop] == [
        "shop:all/traffic-drop/20191012T08",
        "shop:all/traffic-drop/20191012T08:resolved",
    ], sent
    assert shop[0]["start"] == outage.start.isoformat()
    assert shop[0]["step"] == "traffic" and shop[0]["end"] == outage.end.isoformat()
    last_day = outage.start - timedelta(hours=8)
    assert all(a["start"] >= last_day.isoformat() for a in sent)  # batch-only hours: detect's job
    live = read_incidents(str(warehouse)).to_pylist()
    assert {(r["incident_id"], r["status"]) for r in live} >= {
        ("shop:all/traffic-drop/20191012T08", "resolved")
    }
    assert f"Alerts: {len(sent)} sent, 0 failed" in first.stdout

    again = fp(*args, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Alerts: 0 sent, 0 failed" in again.stdout
    assert len(alerts.read_text().splitlines()) == len(sent)
    recorded = Pipeline(warehouse=str(warehouse)).table(tables.ALERTS).to_pylist()
    assert {(r["incident_id"], r["status"]) for r in recorded} >= {
        ("shop:all/traffic-drop/20191012T08", "sent")
    }


CONFLUENT_STYLE = """
[funnelpulse]
warehouse = "./wh"

[kafka]
security.protocol = "SASL_SSL"
sasl.mechanism = "PLAIN"
sasl.username = "API_KEY"
"group.id" = "funnelpulse-live"
"""


def test_kafka_options_from_the_config_file_and_secrets_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from funnelpulse.config import load_settings
    from funnelpulse.errors import ConfigError
    from funnelpulse.streaming.kafka_client import (
        consumer_config,
        producer_config,
        redacted,
        settings_options,
    )

    config = tmp_path / "funnelpulse.toml"
    config.write_text(CONFLUENT_STYLE)
    assert load_settings(str(config)).warehouse == "./wh"  # the [kafka] table is not a setting
    monkeypatch.setenv("FUNNELPULSE_KAFKA_SASL_PASSWORD", "s3cret-value")
    options = settings_options(str(config))
    assert options == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "API_KEY",
        "group.id": "funnelpulse-live",
        "sasl.password": "s3cret-value",
    }
    consumer = consumer_config("broker:9092", options)
    assert (
        consumer["group.id"] == "funnelpulse-live" and consumer["sasl.password"] == "s3cret-value"
    )
    assert consumer["enable.auto.commit"] is False  # ours, whatever the file says
    producer = producer_config("broker:9092", options)
    assert producer["security.protocol"] == "SASL_SSL" and "group.id" not in producer
    assert "s3cret-value" not in json.dumps(redacted(consumer))
    config.write_text(CONFLUENT_STYLE + 'sasl.password = "in-the-file"\n')
    with pytest.raises(ConfigError, match="FUNNELPULSE_KAFKA_SASL_PASSWORD"):
        settings_options(str(config))


@pytest.mark.kafka
@pytest.mark.slow
def test_kafka_options_reach_the_real_clients(broker: str, tmp_path: Path) -> None:
    """The same broker and topic: readable without options, refused once the config file asks
    for SASL (the bundled broker has none), and an option the client refuses is a clean error.
    The secret never shows."""
    from funnelpulse.streaming.broker import create_topic
    from funnelpulse.streaming.replay import publish

    topic = "options"
    create_topic(broker, topic)
    url = f"kafka://{broker}/{topic}"
    publish(url, iter(messages_of(generate_events(500, seed=1, days=1))))
    plain = fp("--warehouse", str(tmp_path / "a"), "stream", "--source", url, "--until-idle", "1")
    assert plain.returncode == 0 and "500 events in" in plain.stdout, plain.stderr[-2000:]
    config, env = sasl_config(tmp_path)
    sasl = fp(
        "--config",
        str(config),
        "--warehouse",
        str(tmp_path / "b"),
        "stream",
        "--source",
        url,
        "--broker-timeout-s",
        "3",
        env=env,
    )
    assert sasl.returncode == 1 and "Error: Kafka at" in sasl.stderr, sasl.stderr[-2000:]
    assert "TopSecret42" not in sasl.stdout + sasl.stderr
    config.write_text('[kafka]\ncompression.type = "bogus"\n')
    bad = fp(
        "--config", str(config), "replay", "--to", url, "--synthetic", "--seconds", "1", env=env
    )
    assert bad.returncode == 1 and "Error: Kafka refused an option" in bad.stderr, bad.stderr
    assert "compression" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_the_engines_refuse_each_others_live_table(tmp_path: Path) -> None:
    """Each engine keeps its own position; mixing them would count events twice."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    write_csv(folder / "a.csv", [row("2019-10-01 10:00:00")])
    wh = str(tmp_path / "wh")
    assert stream(wh, f"files://{folder}").returncode == 0
    from funnelpulse.engines.spark_stream import _refuse_embedded_table

    with pytest.raises(FunnelPulseError, match="written by the embedded engine"):
        _refuse_embedded_table(tables.table_path(wh, tables.GOLD_STREAM))


# ---------------------------------------------------------------- maintenance: retention


RETENTION_ENV = "FUNNELPULSE_STREAM_RETENTION_S"


@pytest.mark.slow
def test_stream_retention_is_a_checked_setting_that_reaches_both_live_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deltalake import DeltaTable

    from funnelpulse.config import load_settings
    from funnelpulse.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(RETENTION_ENV, raising=False)
    assert load_settings().stream_retention_s == 3600
    (tmp_path / "funnelpulse.toml").write_text("stream_retention_s = 600\n")
    assert load_settings().stream_retention_s == 600
    for bad in ("5", "1.5", "an hour"):
        monkeypatch.setenv(RETENTION_ENV, bad)
        with pytest.raises(ConfigError, match="Setting stream_retention_s = .* from 10 to"):
            load_settings()
    monkeypatch.delenv(RETENTION_ENV)
    folder = tmp_path / "incoming"
    folder.mkdir()
    write_csv(folder / "a.csv", [row("2019-10-01 10:00:00"), row("2019-10-01 10:05:00", "cart")])
    wh = str(tmp_path / "wh")
    refused = stream(wh, f"files://{folder}", env={RETENTION_ENV: "5"})
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"Error: Setting stream_retention_s = 5 (from {RETENTION_ENV}) must be an integer from "
        f"10 to 2592000. Fix {RETENTION_ENV}"
    ]
    assert not Path(wh, tables.GOLD_STREAM).exists()
    done = stream(wh, f"files://{folder}", env={RETENTION_ENV: "120"})
    assert done.returncode == 0, done.stderr[-2000:]
    for name in (tables.GOLD_STREAM, tables.GOLD_STREAM_BUCKETS):
        config = DeltaTable(tables.table_path(wh, name)).metadata().configuration
        assert config["delta.deletedFileRetentionDuration"] == "interval 120 seconds", name
        assert config["delta.logRetentionDuration"] == "interval 120 seconds", name


def _parquet_on_disk(table: str) -> set[str]:
    return {p.name for p in Path(table).rglob("*.parquet") if "_delta_log" not in p.parts}


@pytest.mark.slow
def test_a_reader_holding_an_older_version_survives_compaction_and_vacuum(tmp_path: Path) -> None:
    """The retention protects a read in progress: the files of the version it holds stay until
    the retention has passed since a newer version removed them, then vacuum deletes them."""
    from deltalake import DeltaTable

    from funnelpulse.streaming.maintenance import Maintenance

    folder = tmp_path / "incoming"
    folder.mkdir()
    wh = str(tmp_path / "wh")
    live = tables.table_path(wh, tables.GOLD_STREAM)
    events = generate_events(3_000, seed=5, days=1, brands=5)
    env = {RETENTION_ENV: "10"}
    for i in range(2):  # two runs, a batch each
        write_events(events.slice(i * 1_000, 1_000), folder / f"part{i}.csv")
        assert stream(wh, f"files://{folder}", env=env).returncode == 0
    held = DeltaTable(live)
    held_files = set(held.file_uris())
    reading = held.to_pyarrow_dataset()  # a reader's snapshot: the files of this version
    held_views = sum(r[2] for r in live_rows(wh))
    write_events(events.slice(2_000), folder / "part2.csv")  # its MERGE rewrites those files
    assert stream(wh, f"files://{folder}", env=env).returncode == 0
    expected = live_rows(wh)
    views = sum(r[2] for r in expected)
    assert views > held_views > 0

    Maintenance([live], retention_s=10, compact_every_s=0).after_batch(1)  # compact + vacuum now
    assert held_files - set(DeltaTable(live).file_uris()), "no file of the held version removed"
    assert held_files <= {str(p) for p in Path(live).rglob("*.parquet")}
    assert sum(reading.to_table().column("views").to_pylist()) == held_views  # still readable
    assert live_rows(wh) == expected

    time.sleep(10.5)  # the retention passes: the files the held version read are deleted
    Maintenance([live], retention_s=10, compact_every_s=0).after_batch(2)
    assert _parquet_on_disk(live) == {Path(u).name for u in DeltaTable(live).file_uris()}
    with pytest.raises(OSError):  # the held version's files are gone now
        reading.to_table()
    assert live_rows(wh) == expected


@pytest.mark.kafka
@pytest.mark.slow
def test_kill_9_right_after_a_vacuum_then_restart_counts_exactly(
    broker: str, tmp_path: Path
) -> None:
    """A stream whose retention is short compacts, vacuums and expires its log while it runs;
    killed the moment a vacuum deleted files, it restarts from the newest commit alone."""
    from deltalake import DeltaTable

    from funnelpulse.streaming.broker import create_topic
    from funnelpulse.streaming.replay import publish

    topic = "vacuum-kill"
    create_topic(broker, topic)
    url = f"kafka://{broker}/{topic}"
    events = generate_events(12_000, seed=12, days=2, brands=10)
    publish(url, iter(messages_of(events)))
    wh = str(tmp_path / "wh")
    live = tables.table_path(wh, tables.GOLD_STREAM)
    env = {RETENTION_ENV: "10"}
    before = 0
    # The log is trimmed only before a checkpoint older than the retention, so the first vacuum
    # that deletes files may come before any log entry can go (how soon depends on the pace of
    # the run): kill again, each run resuming the last, until a vacuum trimmed the log too.
    for _ in range(4):
        killed = stream(
            wh,
            url,
            "--max-rows-per-batch",
            "50",
            env={**env, "FUNNELPULSE_KILL_AT": "stream.vacuumed"},
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        before += sum(
            int(m.group(1).replace(",", ""))
            for m in (
                re.search(r"batch \d+: ([\d,]+) events", line)
                for line in killed.stderr.splitlines()
            )
            if m
        )
        if not Path(live, "_delta_log", f"{0:020d}.json").exists():
            break
    assert 0 < before < 12_000
    assert not Path(live, "_delta_log", f"{0:020d}.json").exists()  # the old log is gone
    first_version = DeltaTable(live).version()
    again = stream(wh, url, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{12_000 - before:,} events in, 0 late" in again.stdout, (before, again.stdout)
    assert DeltaTable(live).version() > first_version

    batch = Pipeline(warehouse=str(tmp_path / "batch"))
    batch.ingest([str(write_events(events, tmp_path / "events.csv"))])
    batch.build()
    assert_live_equals_batch(_merged(batch, Path(wh)))
    shop = tables.read(tables.table_path(wh, tables.GOLD_STREAM_BUCKETS)).to_pylist()
    bucket_views = sum(r["views"] for r in shop if r["dimension"] == "shop")
    assert bucket_views == sum(r[2] for r in live_rows(wh)) > 0


@pytest.mark.kafka
def test_replay_from_a_messy_file_publishes_what_ingest_keeps_and_says_what_it_skipped(
    broker: str, tmp_path: Path
) -> None:
    """100 good rows (one spelled `...T09:15:00.250Z`), 5 with a wrong number of fields, one at
    `10:00:00+02:00` and one with `product_id=abc`: replay publishes exactly the 100 that ingest
    keeps, counts the 7 it skipped with their reasons and lines, and the stream of what it
    published equals the batch build of the same file."""
    from funnelpulse.streaming.broker import create_topic

    good = [
        row(
            f"2019-10-01 {8 + i // 40:02d}:{i % 60:02d}:00",
            etype=("view", "view", "cart", "purchase")[i % 4],
            product=100 + i,
            brand=f"b{i % 3}",
            user=i % 17,
            session=f"s{i % 11}",
        )
        for i in range(99)
    ]
    good.append("2019-10-01T09:15:00.250Z,view,7,7,,b1,3.50,4,s2")
    lines = list(good)
    wrong = [
        (10, row("2019-10-01 08:10:00") + ",extra"),
        (20, row("2019-10-01 08:20:00") + ",x,y"),
        (30, "2019-10-01 08:30:00 UTC,view,1,7"),
        (40, "2019-10-01 08:40:00 UTC,view"),
        (50, row("2019-10-01 08:50:00") + ","),
    ]
    for position, text in wrong:
        lines.insert(position, text)
    lines.insert(60, "2019-10-01 10:00:00+02:00,view,5,7,,b0,5.00,10,s1")
    lines.insert(70, "2019-10-01 09:00:00 UTC,view,abc,7,,b0,5.00,10,s1")
    source = write_csv(tmp_path / "messy.csv", lines)
    # the line numbers ingest gives these rows in quarantine, as replay must report them
    batch = Pipeline(warehouse=str(tmp_path / "batch"))
    batch.ingest([source])
    batch.build()
    quarantined = batch.table(tables.QUARANTINE).to_pylist()
    assert len(quarantined) == 7 and batch.table(tables.BRONZE).num_rows == 100
    by_kind: dict[str, list[int]] = {}
    for q in quarantined:
        by_kind.setdefault(q["reason"].split(":")[0], []).append(q["line_number"])

    topic = "replay-messy"
    create_topic(broker, topic)
    sent = fp("replay", "--to", f"kafka://{broker}/{topic}", "--from", str(source))
    assert sent.returncode == 0, sent.stderr
    assert "Published 100 events" in sent.stdout and "all delivered" in sent.stdout
    assert "Skipped 7 rows that ingest would quarantine: " in sent.stdout
    for kind, numbers in by_kind.items():
        listed = ", ".join(str(n) for n in sorted(numbers))
        count = len(numbers)
        assert f"{count} {kind} (line{'s' if count > 1 else ''} {listed})" in sent.stdout, (
            kind,
            sent.stdout,
        )
    assert set(by_kind) >= {"bad event_time", "non-numeric product_id"}
    assert sum(len(v) for k, v in by_kind.items() if "columns" in k) == 5

    live = tmp_path / "live"
    done = stream(str(live), f"kafka://{broker}/{topic}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "100 events in, 0 late events quarantined" in done.stdout
    assert_live_equals_batch(_merged(batch, live))
