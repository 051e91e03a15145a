"""A Spark streaming source for Kafka in Python (confluent-kafka), for Sparks without the kafka jar.

Offsets live in Spark's checkpoint (the reader keeps no state of its own), partitions are read by
assignment (no consumer group, so no group-join delay), and each Kafka partition of a micro-batch
is one Spark input partition, read as Arrow record batches.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition

from ..streaming.kafka_client import client_options

log = logging.getLogger(__name__)

SCHEMA = "topic string, partition int, offset long, timestamp timestamp, key string, value string"
NAME = "funnelpulse_kafka"


class KafkaPartition(InputPartition):
    def __init__(self, partition: int, start: int, end: int) -> None:
        self.partition = partition
        self.start = start
        self.end = end


class KafkaDataSource(DataSource):
    """Options: bootstrap, topic, maxOffsetsPerTrigger (default 500000), brokerTimeoutSeconds (60)."""

    @classmethod
    def name(cls) -> str:
        return NAME

    def schema(self) -> str:
        return SCHEMA

    def streamReader(self, schema: Any) -> DataSourceStreamReader:
        # Spark hands the options over with their names lower-cased: read them that way.
        return KafkaStreamReader({k.lower(): v for k, v in self.options.items()})


def _config(options: dict[str, str]) -> dict[str, Any]:
    """The consumer settings: the user's options (secrets from this process's environment)."""
    import json

    from ..streaming.kafka_client import client_options, consumer_config

    user = client_options(json.loads(options.get("kafkaoptions", "{}")))
    return consumer_config(options["bootstrap"], user)


class KafkaStreamReader(DataSourceStreamReader):
    def __init__(self, options: dict[str, str]) -> None:
        self.options = options
        self.topic = options["topic"]
        self.max_rows = int(options.get("maxoffsetspertrigger", "500000"))
        self.timeout_s = float(options.get("brokertimeoutseconds", "60"))
        self._consumer: Any = None
        self._last_end: dict[str, int] | None = None

    def _watermarks(self) -> dict[str, tuple[int, int]]:
        """First and true end offsets per partition, retrying while the broker is unreachable
        (the end is read to the end of each partition: the bundled broker misreports it)."""
        from confluent_kafka import KafkaException

        from ..errors import FunnelPulseError
        from ..streaming.kafka_client import true_ends

        deadline = time.time() + self.timeout_s
        delay = 0.5
        while True:
            try:
                user = json.loads(self.options.get("kafkaoptions", "{}"))
                ends = true_ends(
                    self.options["bootstrap"], self.topic, client_options(user), timeout_s=5
                )
                return {str(p): marks for p, marks in sorted(ends.items())}
            except (KafkaException, FunnelPulseError) as exc:
                if time.time() > deadline:
                    raise RuntimeError(
                        f"Kafka broker {self.options['bootstrap']} unreachable for {self.timeout_s:.0f} s ({exc})"
                    ) from None
                log.warning(
                    "Kafka broker %s unreachable (%s); retrying in %.1f s",
                    self.options["bootstrap"],
                    exc,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                self._consumer = None

    def initialOffset(self) -> dict[str, int]:
        return {p: low for p, (low, _) in self._watermarks().items()}

    def getDefaultReadLimit(self) -> Any:
        from pyspark.sql.streaming.datasource import ReadMaxRows

        return ReadMaxRows(self.max_rows)

    def latestOffset(
        self, start: dict[str, int] | None = None, limit: Any = None
    ) -> dict[str, int]:
        marks = self._watermarks()
        # Spark 4.2+ gives the batch start and the read limit. Older Sparks call latestOffset()
        # bare, so the reader remembers the end it returned last; there the first call of a run
        # (fresh or restarted) is not capped: only Spark's checkpoint knows where it begins.
        base = start if start is not None else self._last_end
        if limit is not None:  # ReadAllAvailable (e.g. an available-now trigger) has no cap
            cap = getattr(limit, "max_rows", None)
        else:
            cap = self.max_rows if base is not None else None
        start = base or {p: low for p, (low, _) in marks.items()}
        begins: dict[str, int] = {}
        highs: dict[str, int] = {}
        for p, (_, high) in marks.items():
            begins[p] = int(start.get(p, 0))
            if high < begins[p]:
                # The broker lost the topic's data (e.g. an in-memory broker restarted).
                log.warning(
                    "Kafka partition %s is behind the checkpoint (%d < %d); waiting for new data",
                    p,
                    high,
                    begins[p],
                )
            highs[p] = max(high, begins[p])
        out = _capped_ends(begins, highs, cap)
        self._last_end = out
        return out

    def partitions(self, start: dict[str, int], end: dict[str, int]) -> list[InputPartition]:
        return [
            KafkaPartition(int(p), int(start.get(p, 0)), int(e))
            for p, e in end.items()
            if int(e) > int(start.get(p, 0))
        ]

    def read(self, partition: InputPartition):  # type: ignore[no-untyped-def]
        import pyarrow as pa
        from confluent_kafka import Consumer, TopicPartition

        assert isinstance(partition, KafkaPartition)
        consumer = Consumer(_config(self.options))
        consumer.assign([TopicPartition(self.topic, partition.partition, partition.start)])
        schema = pa.schema(
            [
                ("topic", pa.string()),
                ("partition", pa.int32()),
                ("offset", pa.int64()),
                ("timestamp", pa.timestamp("us", "UTC")),
                ("key", pa.string()),
                ("value", pa.string()),
            ]
        )
        position = partition.start
        deadline = time.time() + self.timeout_s
        try:
            while position < partition.end:
                messages = consumer.consume(
                    num_messages=min(20000, partition.end - position), timeout=1.0
                )
                offsets: list[int] = []
                stamps: list[int] = []
                keys: list[str | None] = []
                values: list[str | None] = []
                for m in messages:
                    offset = m.offset()
                    if m.error() is not None or offset is None or offset >= partition.end:
                        continue
                    offsets.append(offset)
                    stamps.append(m.timestamp()[1] * 1000)
                    key = m.key()
                    keys.append(key.decode("utf-8", "replace") if key is not None else None)
                    value = m.value()
                    values.append(value.decode("utf-8", "replace") if value is not None else None)
                if offsets:
                    position = offsets[-1] + 1
                    deadline = time.time() + self.timeout_s
                    n = len(offsets)
                    yield pa.record_batch(
                        [
                            pa.array([self.topic] * n),
                            pa.array([partition.partition] * n, pa.int32()),
                            pa.array(offsets, pa.int64()),
                            pa.array(stamps, pa.timestamp("us", "UTC")),
                            pa.array(keys, pa.string()),
                            pa.array(values, pa.string()),
                        ],
                        schema=schema,
                    )
                elif time.time() > deadline:
                    raise RuntimeError(
                        f"Kafka partition {partition.partition}: offsets {position}..{partition.end} not readable "
                        f"within {self.timeout_s:.0f} s (broker down or data deleted)"
                    )
        finally:
            consumer.close()

    def commit(self, end: dict[str, int]) -> None:
        return None

    def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def _capped_ends(begins: dict[str, int], highs: dict[str, int], cap: int | None) -> dict[str, int]:
    """The batch's end offset per partition: everything available, or with a cap, `cap` messages
    shared among the partitions in proportion to what each has waiting. Taking the cap from the
    first partition alone would run its event time ahead of the others, and the watermark would
    then drop their older events as late."""
    waiting = {p: highs[p] - begins[p] for p in highs}
    total = sum(waiting.values())
    if cap is None or total <= cap:
        return dict(highs)
    out: dict[str, int] = {}
    seen = given = 0
    for p, n in waiting.items():  # cumulative rounding: the shares add up to exactly `cap`
        seen += n
        share = cap * seen // total - given
        given += share
        out[p] = begins[p] + share
    return out
