"""What a producer sends and what `replay` tells: CSV lines in the REES46 column order as well as
JSON objects, sent by a second client library (kafka-python) to the bundled broker; replay's
progress, its skipped rows with reasons, and a Ctrl-C that says what was published."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HEADER, fp, row, write_csv

from funnelpulse import tables
from funnelpulse.ingest import RAW_COLUMNS
from funnelpulse.streaming.sources import parse_json


def test_csv_lines_and_json_objects_parse_alike() -> None:
    line = "2019-10-01 10:00:00 UTC,view,1,7,,acme,5.00,10,s1"
    obj = json.dumps(dict(zip(RAW_COLUMNS, line.split(","), strict=True)) | {"category_code": None})
    values = [line.encode(), obj.encode(), HEADER.encode(), b"1,2,3", b"not an event"]
    table = parse_json(values, ["t:0"] * 5, list(range(5))).to_pylist()
    picked = [{c: r[c] for c in RAW_COLUMNS} for r in table]
    assert picked[0] == picked[1]
    assert picked[0]["brand"] == "acme" and picked[0]["category_code"] is None
    for not_an_event in picked[2:]:  # a header, too few fields, free text: all columns NULL
        assert set(not_an_event.values()) == {None}


def _kafka_python_producer(bootstrap: str):  # type: ignore[no-untyped-def]
    kafka = pytest.importorskip("kafka", reason="kafka-python is in the dev extra")
    return kafka.KafkaProducer(bootstrap_servers=bootstrap)


def _count(bootstrap: str, topic: str) -> int:
    """Messages in `topic`, read from the start of every partition until none comes for 3 s
    (replay compresses with lz4, which kafka-python reads only with an extra library)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "count"})
    try:
        parts = consumer.list_topics(topic, timeout=15).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        count, quiet_until = 0, time.monotonic() + 10  # the first fetch may take a while
        while time.monotonic() < quiet_until:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                count += 1
                quiet_until = time.monotonic() + 3
        return count
    finally:
        consumer.close()


@pytest.mark.kafka
def test_the_stream_takes_csv_lines_and_json_from_kafka_python(broker: str, tmp_path: Path) -> None:
    from funnelpulse.streaming.broker import create_topic

    topic = "second-client"
    create_topic(broker, topic)
    producer = _kafka_python_producer(broker)
    csv_lines = [
        row("2019-10-01 10:00:00", session="a"),
        row("2019-10-01 10:01:00", etype="cart", session="a"),
        row("2019-10-01 10:02:00", etype="purchase", session="a"),
    ]
    as_json = {
        c: v
        for c, v in zip(
            RAW_COLUMNS, row("2019-10-01 10:03:00", session="b").split(","), strict=True
        )
    }
    as_json["category_code"] = None
    for line in csv_lines:
        producer.send(topic, key=b"a", value=line.encode())
    producer.send(topic, key=b"b", value=json.dumps(as_json).encode())
    producer.send(topic, value=HEADER.encode())  # a header line is no event: quarantined
    producer.send(topic, value=b"2019-10-01 10:04:00 UTC,view,1")  # too few fields
    producer.flush(30)
    producer.close()

    wh = str(tmp_path / "wh")
    done = fp(
        "--warehouse", wh, "stream", "--source", f"kafka://{broker}/{topic}", "--until-idle", "2"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    live = tables.read(tables.table_path(wh, tables.GOLD_STREAM)).to_pylist()
    assert sum(r["views"] for r in live) == 2 and sum(r["carts"] for r in live) == 1
    assert sum(r["purchases"] for r in live) == 1
    quarantined = tables.read(tables.table_path(wh, tables.QUARANTINE)).to_pylist()
    assert sorted(r["raw_line"] for r in quarantined) == sorted(
        [HEADER, "2019-10-01 10:04:00 UTC,view,1"]
    )
    assert {r["reason"] for r in quarantined} == {
        "not a JSON object or CSV line with the raw columns"
    }


@pytest.mark.kafka
def test_replay_names_every_skipped_row(broker: str, tmp_path: Path) -> None:
    from funnelpulse.streaming.broker import create_topic

    topic = "nine-rows"
    create_topic(broker, topic)
    lines = [row(f"2019-10-01 10:0{i}:00", session=f"s{i}") for i in range(7)]
    lines.insert(3, "2019-10-01 10:03:30 UTC,view,1,7")
    lines.insert(6, "2019-10-01 10:05:30 UTC,view")
    nine = write_csv(tmp_path / "nine.csv", lines)
    done = fp("replay", "--to", f"kafka://{broker}/{topic}", "--from", str(nine))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("Published 7 events in ")
    assert (
        "Skipped 2 rows that ingest would quarantine: 2 missing columns (lines 5, 8)" in done.stdout
    )
    assert _count(broker, topic) == 7


@pytest.mark.kafka
def test_replay_shows_progress_and_ctrl_c_says_what_was_published(
    broker: str, tmp_path: Path
) -> None:
    from funnelpulse.streaming.broker import create_topic

    topic = "interrupted"
    create_topic(broker, topic)
    # 240 events a minute apart: 4 h of event time, at 600x that is 24 s of publishing
    lines = [
        row(f"2019-10-01 {10 + i // 60:02d}:{i % 60:02d}:00", session=f"s{i}") for i in range(240)
    ]
    events = write_csv(tmp_path / "events.csv", lines)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "funnelpulse",
            "replay",
            "--to",
            f"kafka://{broker}/{topic}",
            "--from",
            str(events),
            "--speedup",
            "600",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**__import__("os").environ, "FUNNELPULSE_PROGRESS_S": "1"},
    )
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + 120
    while "event time 2019-10-01" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.readline()
    assert "event time 2019-10-01" in seen, seen  # a progress line: count, rate, event time
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    err = seen + err
    assert proc.returncode == 130, err
    stopped = [line for line in err.splitlines() if line.startswith("Stopped: ")]
    assert len(stopped) == 1, err
    published = int(stopped[0].split("published ")[1].split(" of 240")[0].replace(",", ""))
    assert 0 < published < 240, stopped
    assert "(0 sent without a delivery report); event time reached 2019-10-01" in stopped[0]
    assert "Traceback" not in err and out == ""
    assert _count(broker, topic) == published  # exactly what it said
