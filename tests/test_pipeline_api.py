"""The library API: operators' log lines, the engine registry, typed results."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import row, write_csv

from funnelpulse import Pipeline
from funnelpulse.config import ENGINES
from funnelpulse.engines import ENGINE_NAMES, REGISTRY
from funnelpulse.errors import ConfigError


def test_each_step_logs_one_info_line_with_counts(
    pipeline: Pipeline, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = write_csv(
        tmp_path / "e.csv",
        [row("2019-10-01 10:00:00"), row("2019-10-01 10:05:00", etype="cart"), "garbage"],
    )
    with caplog.at_level(logging.INFO, logger="funnelpulse"):
        pipeline.ingest([raw])
        pipeline.build()
    lines = [r.getMessage() for r in caplog.records if r.name == "funnelpulse.pipeline"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("ingest: 1 file(s), 2 rows to bronze_events, 1 to quarantine_events")
    assert lines[1].startswith("build (duckdb): silver_events 2, gold_funnel_hourly_brand 1")
    assert lines[1].endswith(" s")


def test_the_engine_comes_from_the_one_registry(pipeline: Pipeline) -> None:
    assert ENGINE_NAMES == tuple(REGISTRY) == ENGINES == ("duckdb", "spark")
    assert pipeline.engine().name == "duckdb"
    with pytest.raises(ConfigError, match="Unknown engine 'flink'"):
        pipeline.engine("flink")


def test_dashboard_pages_use_the_config_the_cli_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from funnelpulse.dashboard import common

    config = tmp_path / "custom.toml"
    config.write_text("history_days = 9\n")
    monkeypatch.setenv("FUNNELPULSE_WAREHOUSE", str(tmp_path / "wh"))
    monkeypatch.setenv("FUNNELPULSE_CONFIG", str(config))
    assert common.settings().history_days == 9
    assert common.pipeline().warehouse == str(tmp_path / "wh")
    monkeypatch.delenv("FUNNELPULSE_CONFIG")
    monkeypatch.chdir(tmp_path)  # no funnelpulse.toml here: the default applies
    assert common.settings().history_days != 9


def test_error_lines_and_log_lines_never_show_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from funnelpulse.cli import run
    from funnelpulse.redact import ScrubSecrets

    secret = "sasl-Pa55word-XYZ"
    monkeypatch.setenv("FUNNELPULSE_KAFKA_SASL_PASSWORD", secret)
    monkeypatch.setenv("FUNNELPULSE_WEBHOOK_URL", "https://hooks.example/T000/B000?token=TOKEN42")
    # an error whose text happens to carry both secrets
    missing = tmp_path / f"{secret}-TOKEN42.csv"
    code = run(["--warehouse", str(tmp_path / "wh"), "ingest", str(missing)])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("Error:")
    assert secret not in err and "TOKEN42" not in err and "***" in err
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "with %s", (secret,), None)
    assert ScrubSecrets().filter(record) and secret not in record.getMessage()


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example/services/T000/B000?token=SECRET TOKEN42",
        "hooks.example/services/SECRET",
        "ftp://hooks.example/SECRET",
        "https://hooks.example:99999/SECRET",
    ],
)
def test_a_malformed_webhook_url_is_refused_before_any_work_without_showing_it(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from funnelpulse.config import load_settings

    monkeypatch.setenv("FUNNELPULSE_WEBHOOK_URL", url)
    with pytest.raises(ConfigError, match="FUNNELPULSE_WEBHOOK_URL is not an http") as caught:
        load_settings().check_sinks(["webhook"])
    assert "SECRET" not in str(caught.value)


def test_terminal_output_never_carries_control_characters() -> None:
    from datetime import UTC, datetime

    from funnelpulse.report import format_detect, format_explain

    hostile = "evil\x1b[2J\x1b]0;pwned\x07\rbrand"
    row = {
        "anomaly_id": "a1",
        "window_start": datetime(2019, 10, 1, 8, tzinfo=UTC),
        "severity": "high",
        "dimension": "brand",
        "segment": hostile,
        "step": "cart_to_purchase",
        "type": "drop",
        "observed_rate": 0.1,
        "expected_rate": 0.45,
        "z": -5.5,
        "lost_purchases": 12.0,
        "lost_revenue": 99.0,
        "root_cause": {"price_band": [], "summary": f"{hostile} explains it"},
    }
    for text in (format_detect([row], "seasonal", 3, 24), format_explain(row)):
        assert not any(ch in text for ch in "\x1b\x07\r"), repr(text)
        assert "evil [2J ]0;pwned  brand" in text


def test_vacuum_of_a_missing_warehouse_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    from funnelpulse.cli import run

    missing = tmp_path / "nonexistent" / "x"
    assert run(["--warehouse", str(missing), "vacuum", "--dry-run"]) == 1
    assert not missing.exists()
