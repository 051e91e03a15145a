"""Inputs of the embedded stream: a Kafka topic or a folder of files, read as micro-batches and
judged by the ingest step's own typing rules (the same SQL, so a message is accepted or
quarantined exactly as a batch ingest would do it)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from .. import ingest
from ..engines.duckdb_ingest import raw_view
from ..errors import FunnelPulseError
from ..ingest import RAW_COLUMNS, typed_sql
from ..localdb import connect
from ..raw_lines import fingerprint
from .kafka_client import _confluent, client, consumer_config, partitions, true_ends
from .kafka_url import parse_kafka
from .landing import Landing, signature
from .state import FileVersion
from .windows import NOT_A_MESSAGE

log = logging.getLogger(__name__)

# Read as text; the numeric raw columns are inferred by the parser and cast to text after.
_TEXT_FIELDS = ("event_time", "event_type", "category_code", "brand", "user_session")
JUDGED = pa.schema(
    [(c, pa.string()) for c in ("source", "raw_text", *RAW_COLUMNS)] + [("ordinal", pa.int64())]
)


# (latest, earliest) event time a batch accepts, naive UTC; None: no bound.
Bounds = tuple[datetime | None, datetime | None]


@dataclass
class Batch:
    """One micro-batch: typed rows (`reason` NULL for a good event), quarantine rows, its input."""

    typed: pa.Table
    bad: pa.Table  # source_file, line_number, raw_line, reason
    messages: int
    plan: dict[str, Any]
    files: list[str] = field(default_factory=list)
    caught_up: set[str] = field(default_factory=set)  # partitions read to their end
    versions: dict[str, FileVersion] = field(default_factory=dict)  # files read: their versions
    replaced: list[str] = field(default_factory=list)  # files read before with other content


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)


def _csv_line(text: str) -> dict[str, Any]:
    """A CSV line in the REES46 column order (as every REES46 file has them) as the raw columns;
    an empty field is NULL, as when ingest reads a CSV file. A header line, or a line with
    another number of fields, is no event: {} (it is quarantined)."""
    import csv

    try:
        fields = next(csv.reader([text]), [])
    except csv.Error:
        return {}
    if len(fields) != len(RAW_COLUMNS) or [f.strip() for f in fields] == list(RAW_COLUMNS):
        return {}
    return {c: (f if f != "" else None) for c, f in zip(RAW_COLUMNS, fields, strict=True)}


def _message(value: bytes | None) -> dict[str, Any]:
    """One message or line: a JSON object, or a CSV line in the raw column order."""
    if value is None:
        return {}
    text = value.decode("utf-8", "replace").strip()
    if not text.startswith("{"):
        return _csv_line(text)
    try:
        obj = json.loads(text)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def parse_json(values: list[bytes | None], source: list[str], ordinal: list[int]) -> pa.Table:
    """JSON objects or CSV lines in the REES46 column order (one per message or line) as the
    raw columns in text plus `raw_text`; a value that is neither gets all raw columns NULL (it
    is quarantined)."""
    texts: pa.Array
    try:
        texts = pa.array(values, pa.binary()).cast(pa.string())
    except pa.ArrowInvalid:  # not UTF-8: keep what can be read
        texts = pa.array([v.decode("utf-8", "replace") if v is not None else None for v in values])
    columns: dict[str, pa.Array] | None = None
    if values and None not in values and all(v.lstrip().startswith(b"{") for v in values):  # type: ignore[union-attr]
        try:
            parsed = pajson.read_json(
                io.BytesIO(b"\n".join(values)),  # type: ignore[arg-type]
                parse_options=pajson.ParseOptions(
                    explicit_schema=pa.schema([(c, pa.string()) for c in _TEXT_FIELDS]),
                    newlines_in_values=False,
                ),
            )
            if parsed.num_rows == len(values):
                columns = {
                    c: parsed.column(c).cast(pa.string())
                    if c in parsed.column_names
                    else pa.nulls(len(values), pa.string())
                    for c in RAW_COLUMNS
                }
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            columns = None  # a message that is not a flat JSON object: judge one by one
    if columns is None:  # CSV lines, or a message that is not a flat JSON object: one by one
        rows = [_message(v) for v in values]
        columns = {c: pa.array([_text(r.get(c)) for r in rows], pa.string()) for c in RAW_COLUMNS}
    return pa.table(
        {"source": source, "raw_text": texts, **columns, "ordinal": pa.array(ordinal, pa.int64())},
        schema=JUDGED,
    )


def judge(
    con: Any, raw: pa.Table, latest: datetime | None = None, earliest: datetime | None = None
) -> Batch:
    """Judge raw JSON events with the ingest typing rules (on DuckDB connection `con`); events
    after `latest` or before `earliest` (naive UTC) are quarantined with their reason."""
    missing = " AND ".join(f"{c} IS NULL" for c in RAW_COLUMNS)
    con.register("raw_in", raw)
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW raw AS SELECT *,
            CASE WHEN raw_text IS NULL OR ({missing}) THEN '{NOT_A_MESSAGE}' END AS reader_reason
            FROM raw_in"""
    ).fetchall()
    typed = con.sql(typed_sql(("source",), latest, earliest)).to_arrow_table()
    con.unregister("raw_in")
    return _split(typed, raw.num_rows, {})


def _split(typed: pa.Table, messages: int, plan: dict[str, Any]) -> Batch:
    bad_mask = pc.is_valid(typed.column("reason"))
    bad = typed.filter(bad_mask)
    return Batch(
        typed=typed.filter(pc.invert(bad_mask)),
        bad=pa.table(
            {
                "source_file": bad.column("source"),
                "line_number": bad.column("ordinal"),
                "raw_line": bad.column("raw_line"),
                "reason": bad.column("reason"),
            }
        ),
        messages=messages,
        plan=plan,
    )


# How often an idle stream asks whether a partition now ends below its position (a broker that
# restarted without its data serves new messages at offsets the stream believes it has read).
OFFSET_CHECK_S = 5.0


class KafkaSource:
    """A topic read by assignment from the offsets of the last committed batch."""

    pending = False  # nothing lands on a topic: idle means no message came

    def __init__(
        self,
        url: str,
        options: dict[str, str],
        start: dict[str, int] | None,
        broker_timeout_s: float,
        on_offset_reset: str = "error",
    ) -> None:
        self.address = parse_kafka(url)
        self.name = url
        self.options = options
        self.timeout_s = broker_timeout_s
        self.on_offset_reset = on_offset_reset
        self.kafka = _confluent()
        self._down_since: float | None = None
        self._checked_at = time.monotonic()
        config = consumer_config(self.address.bootstrap, options)
        # A position past a partition's end is reported (and handled by on_offset_reset), never
        # silently moved by the client.
        config["auto.offset.reset"] = "error"
        config["error_cb"] = self._error
        config["logger"] = logging.getLogger("funnelpulse.kafka")
        self.consumer = client("Consumer", config)
        parts = partitions(
            self.consumer, self.address.topic, self.address.bootstrap, self.timeout_s
        )
        self.at_end: set[int] = set()
        self.position = {p: int((start or {}).get(str(p), -1)) for p in parts}
        self.partition_keys = {f"{self.address.topic}:{p}" for p in parts}
        ends = true_ends(self.address.bootstrap, self.address.topic, options, self.timeout_s)
        self.ends = {p: end for p, (_, end) in ends.items()}  # true ends, as last read
        self.lows = {p: low for p, (low, _) in ends.items()}
        self._check_offsets(ends)
        self._assign(self.position)
        backlog = sum(
            max(0, end - max(low, self.position.get(p, -1))) for p, (low, end) in ends.items()
        )
        log.info(
            "Kafka %s: %d partitions, %s messages to catch up", url, len(parts), f"{backlog:,}"
        )

    def _check_offsets(self, ends: dict[int, tuple[int, int]]) -> bool:
        """Apply on_offset_reset to every partition whose end lies below the stream's position
        (the topic was recreated, or the broker restarted without its data); True if any moved."""
        topic = self.address.topic
        moved = False
        for p, (low, end) in sorted(ends.items()):
            at = self.position.get(p, -1)
            if at <= end:
                continue
            if self.on_offset_reset == "error":
                raise FunnelPulseError(
                    f"Kafka topic {topic} partition {p} ends at offset {end}, below the stream's "
                    f"committed offset {at}: the topic was recreated or the broker lost its data. "
                    "Run the stream again with --on-offset-reset earliest to read the partition "
                    f"from its first offset ({low}), or --on-offset-reset latest to go on from "
                    f"its end ({end})"
                )
            to = low if self.on_offset_reset == "earliest" else end
            log.warning(
                "Kafka topic %s partition %d ends at offset %d, below the stream's offset %d: "
                "reading on from offset %d (on_offset_reset = %s)",
                topic,
                p,
                end,
                at,
                to,
                self.on_offset_reset,
            )
            self.position[p] = to
            moved = True
        return moved

    def _recheck_offsets(self) -> None:
        """While idle (or told by the client): is any partition now shorter than our position?"""
        self._checked_at = time.monotonic()
        ends = true_ends(self.address.bootstrap, self.address.topic, self.options, self.timeout_s)
        self.ends = {p: end for p, (_, end) in ends.items()}
        self.lows = {p: low for p, (low, _) in ends.items()}
        if self._check_offsets(ends):
            self._assign(self.position)

    def _assign(self, position: dict[int, int]) -> None:
        self.at_end.clear()  # known again once the partitions are read to their end
        begin = self.kafka.OFFSET_BEGINNING
        self.consumer.assign(
            [
                self.kafka.TopicPartition(self.address.topic, p, o if o >= 0 else begin)
                for p, o in position.items()
            ]
        )

    def _error(self, error: Any) -> None:
        codes = (self.kafka.KafkaError._ALL_BROKERS_DOWN, self.kafka.KafkaError._TRANSPORT)
        if error.code() in codes and self._down_since is None:
            self._down_since = time.monotonic()
        log.warning("Kafka at %s: %s", self.address.bootstrap, error.str())

    def _check_broker(self) -> None:
        """Raise once the broker has been unreachable longer than the timeout."""
        if self._down_since is None or time.monotonic() - self._down_since < self.timeout_s:
            return
        try:
            self.consumer.list_topics(self.address.topic, timeout=5)
            self._down_since = None
        except self.kafka.KafkaException:
            raise FunnelPulseError(
                f"Kafka at {self.address.bootstrap} unreachable for {self.timeout_s:.0f} s. "
                "Start the broker and run the stream again (it resumes where it stopped)"
            ) from None

    def read(
        self,
        con: Any,
        max_rows: int,
        max_wait_s: float,
        plan: dict[str, Any] | None,
        bounds: Bounds = (None, None),
    ) -> Batch:
        """Messages until `max_rows`, the end of every partition, or `max_wait_s`; with `plan`,
        exactly the messages up to its end offsets (the retry of a batch cut short by a crash)."""
        topic = self.address.topic
        stop = {int(p): int(o) for p, o in plan["offsets"].items()} if plan else None
        values: list[bytes | None] = []
        offsets: list[int] = []
        parts: list[int] = []
        at_end = self.at_end  # stays true until a message of the partition arrives
        started = time.monotonic()
        position = dict(self.position)
        while True:
            want = min(50_000, max_rows - len(values)) if stop is None else 50_000
            # a consume call waits its whole timeout unless `want` messages come: never past
            # the batch's wait, so a short --trigger-s gives short batches (low latency)
            left = max_wait_s - (time.monotonic() - started)
            wait_s = max(0.01, min(0.1 if values else 0.5, left))
            for m in self.consumer.consume(num_messages=max(want, 1), timeout=wait_s):
                p = m.partition()
                error = m.error()
                if error is not None:
                    if error.code() == self.kafka.KafkaError._PARTITION_EOF:
                        at_end.add(p)
                        self._down_since = None
                    elif error.code() == self.kafka.KafkaError._AUTO_OFFSET_RESET:
                        self._checked_at = 0.0  # checked below, once this poll is done
                    else:
                        log.warning("Kafka %s partition %s: %s", topic, p, error.str())
                    continue
                offset = m.offset()
                if stop is not None and offset >= stop.get(p, 0):
                    continue
                at_end.discard(p)
                values.append(m.value())
                offsets.append(offset)
                parts.append(p)
                position[p] = offset + 1
            self._check_broker()
            if stop is not None:
                if all(position.get(p, -1) >= o or o <= 0 for p, o in stop.items()):
                    position.update({p: o for p, o in stop.items() if o > 0})
                    self._assign(position)  # messages read past the plan are read again next
                    break
                if time.monotonic() - started > self.timeout_s:
                    raise FunnelPulseError(
                        f"Kafka {topic}: the messages of the interrupted batch (up to offsets "
                        f"{stop}) are no longer readable. Was the topic deleted or the broker "
                        "restarted without its data?"
                    )
                continue
            if len(values) >= max_rows or (values and at_end >= set(position)):
                break
            if time.monotonic() - started >= max_wait_s:
                break
        if not values and time.monotonic() - self._checked_at >= OFFSET_CHECK_S:
            self.position = position
            self._recheck_offsets()
            position = dict(self.position)
        self.position = position
        raw = parse_json(values, [f"{topic}:{p}" for p in parts], offsets)
        batch = judge(con, raw, *bounds)
        batch.plan = {"offsets": {str(p): o for p, o in position.items() if o >= 0}}
        batch.caught_up = {f"{topic}:{p}" for p in at_end}
        return batch

    def behind(self) -> dict[int, int]:
        """Messages per partition between the stream's position and the partition's end, from
        what this consumer already knows (no extra request): 0 for a partition read to its end;
        else the larger of the true end last read (at start and while idle, read to the end of
        the partition: the bundled broker's "latest offset" can be short) and the high mark the
        broker sent with its last fetch. A lower bound while messages arrive."""
        out: dict[int, int] = {}
        for p, at in self.position.items():
            if p in self.at_end:
                out[p] = 0
                continue
            end = self.ends.get(p, 0)
            with contextlib.suppress(Exception):  # nothing fetched yet: the true end stands
                _, high = self.consumer.get_watermark_offsets(
                    self.kafka.TopicPartition(self.address.topic, p), cached=True
                )
                if high is not None and high >= 0:
                    end = max(end, high)
            out[p] = max(0, end - (at if at >= 0 else self.lows.get(p, 0)))
        return out

    def close(self) -> None:
        self.consumer.close()


class FileSource:
    """A folder whose new files (CSV, CSV.gz, Parquet, JSON lines) are read once each, in order of
    modification time, once they have landed (see landing.py); a file is judged exactly as
    `ingest` judges it, line numbers included. A file whose content changes under the same name
    is a replacement: read again, its earlier rows taken out by the engine."""

    def __init__(
        self,
        url: str,
        done: dict[str, FileVersion],
        max_files: int = 10,
        settle_s: float = 10.0,
    ) -> None:
        folder = Path(url[len("files://") :])
        if not folder.is_dir():
            raise FunnelPulseError(
                f"{folder}: no such folder. Give files://DIR with CSV, JSON lines or Parquet files"
            )
        self.name = url
        self.folder = folder
        self.done = dict(done)
        self.max_files = max_files
        self.landing = Landing(settle_s)
        self.partition_keys = {"files"}

    @property
    def pending(self) -> bool:
        """Files are landing (seen, not yet settled): the folder is not idle."""
        return self.landing.waiting > 0

    def _is_new(self, path: Path, stat: Any) -> bool:
        """Not read before, or read with other content (a replacement)."""
        name = str(path.resolve())
        if name not in self.done:
            return True
        identity, size, mtime_ns = self.done[name]
        if identity is None or (size, mtime_ns) == signature(stat):
            return False
        if fingerprint(path) == identity:  # touched, same bytes: remember the new look
            self.done[name] = (identity, *signature(stat))
            return False
        return True

    def _new_files(self) -> list[tuple[Path, Any]]:
        found = [(p, st) for p, st in self.landing.candidates(self.folder) if self._is_new(p, st)]
        found.sort(key=lambda f: (f[1].st_mtime, f[0].name))
        return found[: self.max_files]

    def read(
        self,
        con: Any,
        max_rows: int,
        max_wait_s: float,
        plan: dict[str, Any] | None,
        bounds: Bounds = (None, None),
    ) -> Batch:
        if plan is not None:
            files = [(Path(f), None) for f in plan["files"]]
            replaced = set(plan.get("replaced", []))
        else:
            files = self._new_files()
            if not files:
                time.sleep(max_wait_s)
                files = self._new_files()
            replaced = {str(p.resolve()) for p, _ in files if str(p.resolve()) in self.done}
        parts = []
        versions: dict[str, FileVersion] = {}
        for path, stat in files:
            name = str(path.resolve())
            # a replacement's rows are history being corrected: never judged late
            part = judge_file(con, path, bounds[0], None if name in replaced else bounds[1])
            if stat is not None and _changed(path, stat):
                # written to while it was read: read it again once it has settled
                log.info("%s changed while it was read; it is read again once it settles", path)
                self.landing.forget(path)
                replaced.discard(name)
                continue
            parts.append(part)
            if plan is not None and name in plan.get("versions", {}):
                versions[name] = tuple(plan["versions"][name])  # type: ignore[assignment]
            else:
                versions[name] = (fingerprint(path), *signature(stat or path.stat()))
        names = list(versions)
        self.done.update(versions)
        typed = pa.concat_tables([b.typed for b in parts]) if parts else _empty(con)
        bad = pa.concat_tables([b.bad for b in parts]) if parts else _split(typed, 0, {}).bad
        plan_out = {"files": names, "replaced": sorted(replaced), "versions": versions}
        batch = Batch(typed, bad, sum(b.messages for b in parts), plan_out, names, {"files"})
        batch.versions = versions
        batch.replaced = sorted(replaced)
        if batch.replaced:
            log.info("replaced (read again, earlier rows taken out): %s", ", ".join(batch.replaced))
        return batch


def _changed(path: Path, before: Any) -> bool:
    try:
        return signature(path.stat()) != signature(before)
    except FileNotFoundError:
        return True


def _empty(con: Any) -> pa.Table:
    return judge(con, parse_json([], [], [])).typed


def judge_file(
    con: Any, path: Path, latest: datetime | None = None, earliest: datetime | None = None
) -> Batch:
    """One file judged as `ingest` judges it: the same reader, typing rules and line numbers."""
    source = str(path.resolve())
    name = path.name.lower()
    if name.endswith((".json", ".jsonl", ".ndjson")):
        lines = path.read_bytes().splitlines()
        kept = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
        raw = parse_json([line for _, line in kept], [source] * len(kept), [i for i, _ in kept])
        return judge(con, raw, latest, earliest)
    try:
        header = ingest.check_file(path)
    except FunnelPulseError as exc:
        log.warning("%s", exc)
        reason = str(exc).split(": ", 1)[-1].split(". ")[0]
        bad = pa.table(
            {
                "source_file": [source],
                "line_number": pa.array([None], pa.int64()),
                "raw_line": pa.array([None], pa.string()),
                "reason": [reason],
            }
        )
        return Batch(_empty(con), bad, 1, {})
    own = connect()  # its own connection: the file's reader registers its own views
    try:
        accounts = raw_view(own, path, header)
        typed = own.sql(typed_sql((), latest, earliest)).to_arrow_table()
    finally:
        own.close()
    typed = typed.append_column("source", pa.array([source] * typed.num_rows, pa.string()))
    split = _split(typed, typed.num_rows, {})
    bad_batches = typed.filter(pc.is_valid(typed.column("reason"))).to_batches()
    accounts.check(split.typed.num_rows, split.bad.num_rows)
    quarantine = ingest.quarantine_rows(bad_batches, source, "", header)
    split.bad = quarantine.select(["source_file", "line_number", "raw_line", "reason"])
    return split
