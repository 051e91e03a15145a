"""The embedded stream's progress, as a small JSON file beside its checkpoint (`status.json`),
rewritten whole at most once a second: what `serve` exports as the stream's lag.

`behind`: messages per partition between the stream's position and the partition's end (what the
stream's own consumer knows, see KafkaSource.behind); `caught_up_at`: the wall-clock time at which
the stream last had nothing left to read; `newest_event`: the newest event time read (UTC).
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

FILE = "status.json"
EVERY_S = 1.0


class StatusFile:
    def __init__(self, checkpoint_dir: str) -> None:
        self.path = Path(checkpoint_dir, FILE)
        # a restarted stream has been behind since its last run was caught up, not since ever
        self.caught_up_at: float | None = (read(checkpoint_dir) or {}).get("caught_up_at")
        self._written = float("-inf")

    def update(self, source: Any, newest: datetime | None, batch: int, force: bool = False) -> None:
        """Record the stream's position after a loop turn (throttled unless `force`)."""
        behind_of = getattr(source, "behind", None)
        behind = behind_of() if behind_of is not None else {}
        now = time.time()
        if not any(behind.values()) and not getattr(source, "pending", False):
            self.caught_up_at = now
        if not force and time.monotonic() - self._written < EVERY_S:
            return
        self._written = time.monotonic()
        body = {
            "at": now,
            "batch": batch,
            "behind": {str(p): n for p, n in sorted(behind.items())},
            "caught_up_at": self.caught_up_at,
            "newest_event": newest.isoformat() if newest is not None else None,
            "pid": os.getpid(),
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{FILE}.tmp")
            tmp.write_text(json.dumps(body))
            os.replace(tmp, self.path)  # whole, before or after
        except OSError:  # progress reporting must never stop the stream
            pass


def read(checkpoint_dir: str) -> dict[str, Any] | None:
    try:
        body = json.loads(Path(checkpoint_dir, FILE).read_text())
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None
