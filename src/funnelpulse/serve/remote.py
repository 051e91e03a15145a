"""A `gs://bucket/prefix` landing location: its objects are copied, one by one, into a local
mirror folder (`<warehouse>/_funnelpulse/serve/mirror/<bucket>/<prefix>`) that the watcher watches
like any landing folder.

An object appears whole in Cloud Storage, so a copy is taken as soon as it is listed: it is written
under a `.part` name, given the object's modification time and renamed into place. An object
whose size or modification time changed is copied again (the watcher then replaces its rows, as for
a local file); names the landing rule ignores (`.`/`_` prefix, `.tmp`, `.part`) are not copied;
only the objects directly under the prefix are (as for a folder). Removing an object removes
nothing. `STORAGE_EMULATOR_HOST` (as for Google's own clients) points at a local emulator, without
credentials.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..errors import FunnelPulseError
from ..streaming.landing import ignored

log = logging.getLogger("funnelpulse.serve")

MIRROR_DIR = ("_funnelpulse", "serve", "mirror")
TIMEOUT_S = 20.0


def filesystem() -> Any:
    from pyarrow import fs

    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
    limit = timedelta(seconds=TIMEOUT_S)
    if emulator:
        scheme, _, host = emulator.rpartition("://")
        return fs.GcsFileSystem(anonymous=True, endpoint_override=host.rstrip("/"),
                                scheme=scheme or "http", retry_time_limit=limit)
    return fs.GcsFileSystem(retry_time_limit=limit)


class Mirror:
    """One watched `gs://` prefix and its local copy."""

    def __init__(self, url: str, warehouse: str) -> None:
        inner = url[len("gs://"):].strip("/")
        bucket, _, prefix = inner.partition("/")
        if not bucket:
            raise FunnelPulseError(f"watch {url}: give gs://BUCKET/PREFIX")
        self.url = url
        self.remote = inner
        self.local = Path(warehouse, *MIRROR_DIR, bucket, *[p for p in prefix.split("/") if p])
        self.fs = filesystem()

    def sync(self) -> int:
        """Copy the objects that are new or changed since the last look; how many were."""
        from pyarrow import fs

        try:
            found = self.fs.get_file_info(
                fs.FileSelector(self.remote, recursive=False, allow_not_found=True)
            )
        except OSError as exc:
            reason = str(exc).split("last message of ", 1)[-1].split(". ")[0][:200]
            raise FunnelPulseError(
                f"Cannot list {self.url} ({reason}). Check the bucket, the network and the "
                "credentials (GOOGLE_APPLICATION_CREDENTIALS); it is tried again with backoff"
            ) from None
        copied = 0
        self.local.mkdir(parents=True, exist_ok=True)  # watched (empty) from the first look
        for info in found:
            if info.type != fs.FileType.File or ignored(info.base_name):
                continue
            target = self.local / info.base_name
            mtime_ns = int(info.mtime_ns or 0)
            try:
                have = target.stat()
                if (have.st_size, have.st_mtime_ns) == (info.size, mtime_ns):
                    continue
            except FileNotFoundError:
                pass
            self.local.mkdir(parents=True, exist_ok=True)
            part = self.local / f".{info.base_name}.part"
            try:
                with self.fs.open_input_stream(info.path) as src, open(part, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
            except FileNotFoundError:
                part.unlink(missing_ok=True)
                continue  # removed since the listing
            except OSError as exc:
                part.unlink(missing_ok=True)
                reason = str(exc).split("last message of ", 1)[-1].split(". ")[0][:200]
                raise FunnelPulseError(
                    f"Cannot copy gs://{info.path} ({reason}); it is tried again with backoff"
                ) from None
            os.utime(part, ns=(mtime_ns, mtime_ns))
            os.replace(part, target)  # the watcher sees it whole
            log.info("copied gs://%s to %s", info.path, target)
            copied += 1
        return copied
