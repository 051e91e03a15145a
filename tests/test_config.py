"""Settings are typed and checked before any work: a bad value stops with one `Error:` naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import row, write_csv

from funnelpulse import tables
from funnelpulse.cli import run
from funnelpulse.config import METHODS, SEVERITIES, SINKS, Settings, load_settings
from funnelpulse.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No stray FUNNELPULSE_* variable or ./funnelpulse.toml may leak into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("FUNNELPULSE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def config(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "fp.toml"
    path.write_text("[funnelpulse]\n" + "\n".join(lines) + "\n")
    return path


# Each value here was accepted (or failed deep inside a step) before settings were typed.
BAD_FILE_VALUES = [
    ("history_days = 0", "history_days = 0", "from 3 to 90"),
    ("history_days = -5", "history_days = -5", "from 3 to 90"),
    ("history_days = 3.7", "history_days = 3.7", "whole number"),
    ("history_days = true", "history_days = true", "not a boolean"),
    ('history_days = "7"', 'history_days = "7"', "not a text"),
    ("min_views = -1", "min_views = -1", "from 1"),
    ("min_views = 2.5", "min_views = 2.5", "whole number"),
    ("alpha = 5", "alpha = 5.0", "above 0 and below 1"),
    ("alpha = 0", "alpha = 0.0", "above 0 and below 1"),
    ("alpha = nan", "alpha = nan", "above 0 and below 1"),
    ("alpha = true", "alpha = true", "not a boolean"),
    ('min_severity = "bogus"', 'min_severity = "bogus"', "one of low, medium, high, critical"),
    ('min_severity = "hihg"', 'min_severity = "hihg"', 'did you mean "high"'),
    ('alert_sinks = ["pager"]', 'alert_sinks = ["pager"]', 'unknown sink "pager"'),
    ('alert_sinks = ["console", "emial"]', "alert_sinks", 'did you mean "email"'),
    ("alert_sinks = []", "alert_sinks = []", "at least one"),
    ('alert_sinks = ["console", "console"]', "alert_sinks", "no repeats"),
    ('engine = "sprak"', 'engine = "sprak"', 'did you mean "spark"'),
    ('detect_method = "zscore"', 'detect_method = "zscore"', "seasonal, reference"),
    ("cooldown_h = -1", "cooldown_h = -1", "from 0 to 8760"),
    ("smtp_port = 70000", "smtp_port = 70000", "from 1 to 65535"),
    ("shuffle_partitions = 0", "shuffle_partitions = 0", "from 1 to 10000"),
    ("watermark_s = -1", "watermark_s = -1", "from 0"),
    ('warehouse = ""', 'warehouse = ""', "must not be empty"),
    ("smtp_host = 25", "smtp_host = 25", "not an integer"),
]


@pytest.mark.parametrize(("line", "shown", "why"), BAD_FILE_VALUES)
def test_bad_value_in_the_file_is_refused_naming_key_and_file(
    tmp_path: Path, line: str, shown: str, why: str
) -> None:
    path = config(tmp_path, line)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert f"Setting {shown}" in message
    assert why in message
    assert f"Fix it in {path}" in message


@pytest.mark.parametrize(
    ("variable", "text", "why"),
    [
        ("FUNNELPULSE_HISTORY_DAYS", "3.7", "whole number"),
        ("FUNNELPULSE_HISTORY_DAYS", "true", "whole number"),
        ("FUNNELPULSE_HISTORY_DAYS", "0", "from 3 to 90"),
        ("FUNNELPULSE_ALPHA", "5", "above 0 and below 1"),
        ("FUNNELPULSE_ALPHA", "inf", "above 0 and below 1"),
        ("FUNNELPULSE_MIN_VIEWS", "-1", "from 1"),
        ("FUNNELPULSE_MIN_SEVERITY", "bogus", "one of low"),
        ("FUNNELPULSE_ALERT_SINKS", "console,pager", 'unknown sink "pager"'),
        ("FUNNELPULSE_ENGINE", "Spark", 'did you mean "spark"'),
    ],
)
def test_bad_environment_value_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, why: str
) -> None:
    monkeypatch.setenv(variable, text)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert f"(from {variable})" in message and why in message
    assert message.endswith(f"Fix {variable}")


def test_unknown_keys_are_refused_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"Unknown setting 'histroy_days'.*did you mean \"history_days\""
    ):
        load_settings(config(tmp_path, "histroy_days = 7"))
    outside = tmp_path / "outside.toml"
    outside.write_text('alpha = 0.1\n[funnelpulse]\nengine = "duckdb"\n')
    with pytest.raises(
        ConfigError, match=r"Unknown setting 'alpha' in .* \(outside \[funnelpulse\]\)"
    ):
        load_settings(outside)
    with pytest.raises(ConfigError, match="Unknown setting 'histroy_days' given"):
        load_settings(histroy_days=7)


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(ConfigError, match="history_days = 0"):
        Settings(history_days=0)
    with pytest.raises(ConfigError, match="min_views = true .*not a boolean"):
        Settings(min_views=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="alpha = 5"):
        load_settings(alpha=5)


def test_file_then_environment_then_overrides_with_exact_types(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = config(
        tmp_path,
        "history_days = 21",
        "alpha = 1e-3",
        "min_views = 80",
        'alert_sinks = ["console", "file"]',
        'alert_file = "a.jsonl"',
    )
    monkeypatch.setenv("FUNNELPULSE_MIN_VIEWS", "120")
    monkeypatch.setenv("FUNNELPULSE_ALERT_SINKS", "console, email")
    settings = load_settings(path, history_days=30, alpha=None)
    assert settings.history_days == 30  # the flag wins
    assert settings.min_views == 120  # the environment beats the file
    assert settings.alpha == 0.001 and type(settings.alpha) is float  # the file beats the default
    assert settings.alert_sinks == ("console", "email")
    assert settings.alert_file == "a.jsonl"
    whole = load_settings(config(tmp_path, "history_days = 7", "alpha = 0.5"))
    assert (whole.history_days, type(whole.history_days), whole.alpha) == (7, int, 0.5)
    with pytest.raises(AttributeError):  # frozen
        whole.history_days = 8  # type: ignore[misc]


def test_choices_agree_with_the_code_that_uses_them() -> None:
    from funnelpulse.anomaly import alerts, detect, scoring

    assert tuple(scoring.SEVERITY_RANK) == SEVERITIES
    assert tuple(alerts.SINKS) == SINKS
    assert tuple(detect.METHODS) == METHODS


def test_sinks_that_cannot_deliver_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.check_sinks(None) == ("console",)
    with pytest.raises(ConfigError, match="needs alert_file"):
        settings.check_sinks(["file"])
    with pytest.raises(ConfigError, match="needs smtp_to"):
        settings.check_sinks(["email"])
    with pytest.raises(ConfigError, match="needs FUNNELPULSE_WEBHOOK_URL"):
        settings.check_sinks(["webhook"])
    monkeypatch.setenv("FUNNELPULSE_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    assert settings.check_sinks(["webhook", "console"]) == ("webhook", "console")
    with pytest.raises(ConfigError, match='unknown sink "pager"'):
        settings.check_sinks(["pager"])


# --- the command line refuses bad settings before any step runs ------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A warehouse with silver and gold, and no anomalies table yet: built once for the module,
    as the tests that use it are refused before they write (each checks it stays so)."""
    import os

    folder = tmp_path_factory.mktemp("built")
    wh = str(folder / "wh")
    lines = [row(f"2019-10-{d:02d} {h:02d}:00:00") for d in range(1, 4) for h in range(24)]
    src = write_csv(folder / "a.csv", lines)
    with pytest.MonkeyPatch.context() as mp:  # as _clean_env does for a test
        for name in list(os.environ):
            if name.startswith("FUNNELPULSE_"):
                mp.delenv(name)
        mp.chdir(folder)
        assert run(["--quiet", "--warehouse", wh, "ingest", str(src)]) == 0
        assert run(["--quiet", "--warehouse", wh, "build"]) == 0
    return wh


@pytest.mark.parametrize(
    ("line", "args", "key"),
    [
        ("history_days = 0", [], "history_days"),
        ("history_days = -5", [], "history_days"),
        ('min_severity = "bogus"', ["--alert"], "min_severity"),
        ('alert_sinks = ["pager"]', ["--alert"], "alert_sinks"),
        ("", ["--alert", "--sink", "file"], "alert_file"),
        ("", ["--alert", "--sink", "webhook"], "FUNNELPULSE_WEBHOOK_URL"),
    ],
)
def test_detect_refuses_bad_settings_before_writing_anomalies(
    built: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    line: str,
    args: list[str],
    key: str,
) -> None:
    capsys.readouterr()
    path = config(tmp_path, line)
    code = run(["--warehouse", built, "--config", str(path), "detect", *args])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith("Error: ") and key in err
    assert len(err.strip().splitlines()) == 1 and "unexpected" not in err
    assert not tables.exists(tables.table_path(built, tables.ANOMALIES))


def test_bad_settings_stop_every_command_that_reads_them(
    built: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, "history_days = 3.7")
    source = str(Path(built).parent / "a.csv")  # the file the warehouse was built from
    for command in (["report"], ["build"], ["ingest", source]):
        capsys.readouterr()
        assert run(["--warehouse", built, "--config", str(path), *command]) == 1
        assert "Setting history_days = 3.7" in capsys.readouterr().err


def test_readme_lists_every_setting_and_quotes_real_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from funnelpulse.config import RULES

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for key in RULES:
        assert f"| `{key}` |" in readme, key
    (tmp_path / "funnelpulse.toml").write_text("[funnelpulse]\nhistory_days = 0\n")
    capsys.readouterr()
    assert run(["report"]) == 1
    first = capsys.readouterr().err.strip()
    (tmp_path / "funnelpulse.toml").unlink()
    monkeypatch.setenv("FUNNELPULSE_ALPHA", "5")
    assert run(["report"]) == 1
    second = capsys.readouterr().err.strip()
    assert f"```\n{first}\n{second}\n```" in readme


def test_the_kafka_table_is_left_to_the_kafka_client(tmp_path: Path) -> None:
    both = tmp_path / "both.toml"
    both.write_text('[funnelpulse]\nhistory_days = 7\n[kafka]\n"security.protocol" = "SSL"\n')
    assert load_settings(both).history_days == 7
    bare = tmp_path / "bare.toml"
    bare.write_text('history_days = 8\n[kafka]\n"security.protocol" = "SSL"\n')
    assert load_settings(bare).history_days == 8


def test_a_config_path_that_is_not_a_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist. Check the --config path"):
        load_settings(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="is not a file. Check the --config path"):
        load_settings(tmp_path)
    broken = tmp_path / "broken.toml"
    broken.write_text("[funnelpulse\nalpha = 0.1\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings(broken)


def test_stream_refuses_a_sink_that_cannot_deliver_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wh = tmp_path / "wh"
    (tmp_path / "in").mkdir()
    capsys.readouterr()
    code = run(
        ["--warehouse", str(wh), "stream", "--source", f"files://{tmp_path / 'in'}"]
        + ["--until-idle", "1", "--alert", "--sink", "email"]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("Error: The email alert sink needs smtp_to"), err
    assert not wh.exists()  # no checkpoint, no table: nothing started


def test_the_python_api_refuses_a_reversed_build_range(tmp_path: Path) -> None:
    from datetime import date

    from funnelpulse import Pipeline

    p = Pipeline(warehouse=str(tmp_path / "wh"))
    p.ingest([write_csv(tmp_path / "a.csv", [row("2019-10-01 10:00:00")])])
    with pytest.raises(ConfigError, match="since 2019-12-31 is after until 2019-10-01"):
        p.build(date(2019, 12, 31), date(2019, 10, 1))
    assert not tables.exists(tables.table_path(p.warehouse, tables.SILVER))


def test_a_mistyped_variable_is_named_not_silently_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUNNELPULSE_HISTORY_DAY", "7")
    monkeypatch.setenv("FUNNELPULSE_SMTP_PASSWORD", "secret")  # not a setting, but known
    monkeypatch.setenv("FUNNELPULSE_GCP_PROJECT", "p")  # far from every setting: no noise
    with pytest.warns(UserWarning) as caught:
        assert load_settings().history_days == 14
    messages = [str(w.message) for w in caught]
    assert messages == [
        "FUNNELPULSE_HISTORY_DAY is not a setting and is ignored; did you mean "
        "FUNNELPULSE_HISTORY_DAYS?"
    ]


@pytest.mark.parametrize("minutes", [0, 7, 45, 61])
def test_live_buckets_must_divide_an_hour(tmp_path: Path, minutes: int) -> None:
    with pytest.raises(ConfigError, match=f"live_bucket_minutes = {minutes} .*divides 60"):
        load_settings(config(tmp_path, f"live_bucket_minutes = {minutes}"))
    assert load_settings(config(tmp_path, "live_bucket_minutes = 15")).live_bucket_minutes == 15
