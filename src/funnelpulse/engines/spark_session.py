"""The Spark session the engine runs in: sized for where it runs, and its failures told plainly.

Local mode runs every task inside the driver JVM, so the driver's heap is the memory of the whole
job: unless configured it is a documented share of the machine (`LOCAL_SHARE` of RAM, or of the
container's limit). Under spark-submit, Dataproc or a notebook the session already exists and the
cluster's own settings win; the progress line says which settings the job runs with.

A JVM that ran out of memory, died, or could not start (Java missing or too old), and an executor
that was lost, each become one `EngineError` naming what ran out and the setting to raise.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..console import Progress
from ..errors import EngineError, FunnelPulseError, MissingDependencyError

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

# Share of the machine's memory a local driver gets when driver_memory is unset: the JVM runs
# every task, while the Python driver (Delta commits, the detection cube) needs the rest.
LOCAL_SHARE = 0.5
# Smallest and largest automatic heap: Spark refuses a driver under ~450 MB, and a heap above
# 31 GB loses the JVM's compressed pointers (more memory, less room).
LOCAL_MIN_MB, LOCAL_MAX_MB = 1024, 31 * 1024
# Spark's exit status for a JVM that stopped on an OutOfMemoryError (SparkExitCode.OOM).
EXIT_OOM = 52
# The session settings every run needs for the same results as the DuckDB engine.
RESULT_SETTINGS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "true",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}


@dataclass(frozen=True)
class SparkConfig:
    """What a new Spark session is started with (an existing one keeps its own settings)."""

    master: str | None = "local[*]"
    shuffle_partitions: int = 8
    driver_memory: str = ""  # "": a share of the machine in local mode, Spark's default elsewhere
    executor_memory: str = ""
    conf: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> SparkConfig:
        return cls(
            settings.spark_master,
            settings.shuffle_partitions,
            settings.spark_driver_memory,
            settings.spark_executor_memory,
            settings.spark_conf,
        )

    @property
    def local(self) -> bool:
        return (self.master or "local").startswith("local")

    def session_conf(self) -> dict[str, str]:
        """Every spark.* setting a new session starts with: ours, then the configured ones."""
        conf = {
            **RESULT_SETTINGS,
            "spark.sql.shuffle.partitions": str(self.shuffle_partitions),
            "spark.ui.showConsoleProgress": "false",
        }
        driver = self.driver_memory or (f"{local_driver_mb()}m" if self.local else "")
        if driver:
            conf["spark.driver.memory"] = _compact(driver)
        if self.executor_memory:
            conf["spark.executor.memory"] = _compact(self.executor_memory)
        conf.update(dict(self.conf))  # an explicit spark.* key wins over the named settings
        return conf


def _compact(size: str) -> str:
    return re.sub(r"\s+", "", size).lower().removesuffix("b")


def machine_memory_mb() -> int:
    """The memory this process may use: the machine's RAM, or the container's limit if lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with suppress(OSError, ValueError), open(limit_file) as handle:
            total = min(total, int(handle.read().strip()))
    return total // (1024 * 1024)


def local_driver_mb() -> int:
    """The driver heap of a local session when none is configured (README "Running on Spark")."""
    return int(min(max(machine_memory_mb() * LOCAL_SHARE, LOCAL_MIN_MB), LOCAL_MAX_MB))


def _launched_by_spark_submit() -> bool:
    """True inside spark-submit: its JVM is already running, with the cluster's settings."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def _required_java() -> int:
    import pyspark

    return 17 if int(pyspark.__version__.split(".")[0]) >= 4 else 8


def check_java() -> None:
    """Refuse, before launching Spark, a Java that is missing or older than Spark needs."""
    need = _required_java()
    install = f"Install Java {need} or newer (e.g. a JDK {need}) and set JAVA_HOME to it"
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.path.isfile(java):
        where = f"JAVA_HOME={home} has no bin/java" if home else "no java is on PATH"
        raise EngineError(f"Spark needs Java, and {where}. {install}")
    try:
        shown = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"Spark needs Java, and {java} does not run ({exc}). {install}") from exc
    found = re.search(r'version "(\d+)(?:\.(\d+))?', shown.stderr + shown.stdout)
    if shown.returncode != 0 or not found:
        raise EngineError(
            f"Spark needs Java, and {java} -version did not report a version. {install}"
        )
    major = int(found[1]) if found[1] != "1" else int(found[2] or 0)  # "1.8.0" is Java 8
    if major < need:
        raise EngineError(f"Spark needs Java {need} or newer; {java} is Java {major}. {install}")


def spark_session(
    master: str | None = "local[*]",
    shuffle_partitions: int = 8,
    app: str = "funnelpulse",
    config: SparkConfig | None = None,
) -> Any:
    """A UTC, ANSI-mode session: the active one (spark-submit's, a notebook's) as it is
    configured, or a new one started with `config` (by default: `master`, sized from the machine)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise MissingDependencyError("pyspark", "spark") from exc
    config = config or SparkConfig(master, shuffle_partitions)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    active = SparkSession.getActiveSession()
    builder = SparkSession.builder.appName(app)
    if active is not None or _launched_by_spark_submit():
        # The cluster's settings win: only what results depend on is set, plus the runtime
        # settings the user asked for explicitly.
        session = builder.getOrCreate()
        for key, value in RESULT_SETTINGS.items():
            session.conf.set(key, value)
        cluster = session.sparkContext.getConf()
        if not cluster.contains("spark.sql.shuffle.partitions"):
            session.conf.set("spark.sql.shuffle.partitions", str(config.shuffle_partitions))
        for key, value in config.conf:
            if session.conf.isModifiable(key):
                session.conf.set(key, value)
            else:
                log.warning(
                    "%s=%s is ignored: the running Spark session was started without it", key, value
                )
        return session
    check_java()
    if config.master:
        builder = builder.master(config.master)
    for key, value in config.session_conf().items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except FunnelPulseError:
        raise
    except Exception as exc:
        raise EngineError(
            "Spark could not start: its Java process exited before it was ready. Check the "
            "[spark] settings (driver_memory, master, conf) and the lines above"
        ) from exc
    # A failed task's stack trace is Spark's log, not the user's message: the error that ends the
    # command says what happened; --log-level DEBUG keeps Spark's own errors.
    debug = logging.getLogger("funnelpulse").isEnabledFor(logging.DEBUG)
    session.sparkContext.setLogLevel("ERROR" if debug else "OFF")
    _log_started(session)
    return session


def _log_started(session: Any) -> None:
    heap_mb = session.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory() // 2**20
    log.info(
        "Spark started: master %s, driver memory %s (JVM heap %d MB)",
        session.sparkContext.master,
        session.sparkContext.getConf().get("spark.driver.memory", "1g"),
        heap_mb,
    )


def describe(session: Any) -> str:
    """Where a session runs and with how much memory, for the progress line."""
    conf = session.sparkContext.getConf()
    parts = [session.sparkContext.master, f"driver memory {conf.get('spark.driver.memory', '1g')}"]
    if not session.sparkContext.master.startswith("local"):
        parts.append(f"executor memory {conf.get('spark.executor.memory', '1g')}")
        if conf.contains("spark.executor.instances"):
            parts.append(f"{conf.get('spark.executor.instances')} executors")
    parts.append(f"{session.conf.get('spark.sql.shuffle.partitions')} shuffle partitions")
    return ", ".join(parts)


def _planned(config: SparkConfig) -> str:
    conf = config.session_conf()
    parts = [config.master or "local[*]"]
    if "spark.driver.memory" in conf:
        auto = not config.driver_memory and "spark.driver.memory" not in dict(config.conf)
        share = f" ({LOCAL_SHARE:.0%} of {machine_memory_mb() / 1024:.1f} GB RAM)" if auto else ""
        parts.append(f"driver memory {conf['spark.driver.memory']}{share}")
    if "spark.executor.memory" in conf and not config.local:
        parts.append(f"executor memory {conf['spark.executor.memory']}")
    return ", ".join(parts)


@contextmanager
def using_spark(config: SparkConfig, progress: Progress | None = None) -> Iterator[Any]:
    """The active session (spark-submit's, a notebook's), or a new one that is stopped after;
    a JVM or executor failure inside leaves as an `EngineError` saying what to raise."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise MissingDependencyError("pyspark", "spark") from exc
    ours = SparkSession.getActiveSession() is None
    if ours and not _launched_by_spark_submit():
        if progress:
            progress.step(f"Starting Spark ({_planned(config)})")
        spark = spark_session(config=config)
    else:
        spark = spark_session(config=config)
        if progress:
            progress.step(f"Using the active Spark session ({describe(spark)})")
    try:
        yield spark
    except FunnelPulseError:
        raise
    except Exception as exc:
        failure = explain_failure(spark, exc)
        if failure is None:
            raise
        raise failure from exc
    finally:
        if ours:  # a session someone else gave us is theirs to stop
            with suppress(Exception):  # a JVM that died cannot be stopped, only forgotten
                if _jvm_exit(spark) is None:
                    spark.stop()
                else:
                    _forget(spark)


def _jvm_exit(spark: Any, wait_s: float = 0.0) -> int | None:
    """The exit status of the session's JVM if we launched it and it has exited (waiting up to
    `wait_s` for it to finish exiting), else None."""
    import subprocess

    proc = getattr(getattr(spark.sparkContext, "_gateway", None), "proc", None)
    if proc is None:
        return None
    if wait_s > 0:
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait_s)
    return proc.poll()


def _forget(spark: Any) -> None:
    """Drop the handles of a session whose JVM is gone, so a later session can start afresh."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    SparkSession._instantiatedSession = None
    SparkSession._activeSession = None
    SparkContext._active_spark_context = None
    SparkContext._gateway = None
    SparkContext._jvm = None


def explain_failure(spark: Any, exc: BaseException) -> EngineError | None:
    """The user-facing error for a Spark failure that is about resources, or None (a bug)."""
    from py4j.protocol import Py4JError, Py4JJavaError, Py4JNetworkError

    local = True
    with suppress(Exception):
        local = spark.sparkContext.master.startswith("local")
    lost = isinstance(exc, ConnectionError | Py4JNetworkError) or (
        isinstance(exc, Py4JError) and not isinstance(exc, Py4JJavaError)
    )
    # A JVM that dies closes its connection a moment before its process has exited: when the
    # connection is what failed, give the process a few seconds so its exit status says why.
    exit_status = _jvm_exit(spark, wait_s=10.0 if lost else 0.0)
    raise_driver = (
        "Raise it with driver_memory in [spark] of funnelpulse.toml, "
        "FUNNELPULSE_SPARK_DRIVER_MEMORY or --conf spark.driver.memory=SIZE"
    )
    if exit_status is not None:
        if exit_status == EXIT_OOM:
            return EngineError(
                "Spark ran out of memory: its driver's Java heap "
                f"({_configured_driver(spark)}) is full and the Java process stopped. "
                f"{raise_driver}; nothing was committed"
            )
        how = (
            f"was killed by signal {-exit_status}"
            if exit_status < 0
            else (f"exited with status {exit_status}")
        )
        hint = (
            " (signal 9 is often the system's out-of-memory killer: lower driver_memory or "
            "free memory on this machine)"
            if exit_status == -9
            else ""
        )
        return EngineError(
            f"Spark's Java process {how} during the step{hint}. Nothing was committed; "
            "run the command again"
        )
    if lost:
        return EngineError(
            "Spark's Java process stopped answering during the step (it died or was killed). "
            "Nothing was committed; run the command again"
        )
    text = _java_text(exc)
    if "ExecutorLostFailure" in text or "executor lost" in text.lower():
        return EngineError(
            "A Spark executor was lost during the step (its process died, often for lack of "
            "memory). Raise executor_memory in [spark] (or --conf spark.executor.memory=SIZE, "
            "and spark.executor.memoryOverhead on YARN/Kubernetes); nothing was committed"
        )
    if "OutOfMemoryError" in text:  # the JVM's own, or Spark's SparkOutOfMemoryError
        if local:
            return EngineError(
                "Spark ran out of memory: its driver's Java heap "
                f"({_configured_driver(spark)}) is full. {raise_driver}; nothing was committed"
            )
        return EngineError(
            "Spark ran out of memory in an executor or the driver. Raise executor_memory "
            "(and driver_memory) in [spark], or --conf spark.executor.memory=SIZE; "
            "nothing was committed"
        )
    return None


def _configured_driver(spark: Any) -> str:
    with suppress(Exception):
        return str(spark.sparkContext.getConf().get("spark.driver.memory", "1g"))
    return "as configured"


def _java_text(exc: BaseException) -> str:
    """The Java side of a Spark error (class names and messages of its causes), if any."""
    seen: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 10:
        java = getattr(current, "java_exception", None)
        if java is not None:
            with suppress(Exception):
                seen.append(str(java.toString()))
        desc = getattr(current, "errmsg", None) or getattr(current, "_desc", None)
        if desc:
            seen.append(str(desc))
        if type(current).__module__.startswith(("pyspark", "py4j")):
            seen.append(str(current))
        current = current.__cause__ or current.__context__
    return "\n".join(seen)
