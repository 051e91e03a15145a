"""Fault-injection hook: lets tests kill the real process at a named step, to prove crash safety.

Set the environment variable ``FUNNELPULSE_KILL_AT`` to a checkpoint name and the process sends
itself SIGKILL (no cleanup, no ``finally``, exactly like ``kill -9`` or a power cut) the moment it
reaches that checkpoint. Unset, a checkpoint costs one dictionary look-up and does nothing.

Checkpoint names (add yours here when you call ``checkpoint``):

Ingest (one input file; the journal makes it all-or-nothing)
- ``ingest.journal_written``  the pending-ingest journal is on disk, nothing committed yet
- ``ingest.bronze_committed`` bronze_events committed, quarantine_events not yet
- ``ingest.quarantine_committed`` both committed, journal not yet removed

Table commits (any table)
- ``commit.files_written``    Parquet files written, the Delta commit not yet made

Build
- ``build.journal_written``   the pending-build journal is on disk, nothing committed yet
- ``build.silver_committed``  silver_events committed, no gold table yet
- ``build.gold_committed``    the first gold table committed, the others not yet
- ``build.all_committed``     every table committed, the build record not yet written
- ``build.state_written``     the build record written, the journal not yet removed

Detect (anomalies and incidents; the journal undoes a detect killed before both commit)
- ``detect.journal_written``  the pending-detect journal is on disk, nothing committed yet
- ``detect.anomalies_committed`` anomalies committed, incidents not yet
- ``detect.incidents_committed`` both committed, the journal not yet removed
- ``detect.state_written``    the detect record written (journal removed), old cube files not pruned
- ``detect.anomalies_written`` a detect with `--since` (as `serve` runs it): anomalies written, incidents not yet

Alerts and streaming checkpoints are named ``alerts.*`` and ``stream.*`` by their modules
(``alerts.resolve_after_send``: a resolve notice delivered, its record not yet written).

``FUNNELPULSE_FAKE_CLOCK`` (an ISO time, UTC) starts the clock `serve` schedules its daily digest
by at that time (serve/digest.py), so a test reaches a digest time without waiting for it.
"""

from __future__ import annotations

import os
import signal

KILL_ENV = "FUNNELPULSE_KILL_AT"


def checkpoint(name: str) -> None:
    """Die here, at once and without cleanup, if the test harness asked for a crash at `name`."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
