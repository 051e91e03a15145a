"""Session conversion rates in detection (setting session_rates) on a real generated warehouse
with one labelled checkout incident; the memory cap of the session funnels."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from funnelpulse import Pipeline, funnel, tables
from funnelpulse.anomaly.series import CUBE_SQL, build_series
from funnelpulse.anomaly.session_rates import SESSION_STEPS, add_session_counts, final_until
from funnelpulse.anomaly.sinks import evidence
from funnelpulse.config import load_settings
from funnelpulse.contract import UNKNOWN
from funnelpulse.errors import ConfigError, FunnelPulseError
from funnelpulse.generate import Incident, generate_labelled, write_events
from funnelpulse.localdb import connect

DAYS = 9
# Most payments fail for 4 hours in one price band, two days before the data ends.
INCIDENT = Incident(
    "checkout",
    "checkout_partial",
    "price_band",
    "10-30",
    "purchase",
    datetime(2019, 10, DAYS - 1, 10, tzinfo=UTC),
    4,
    0.2,
)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("session_rates")
    table, _ = generate_labelled(
        600_000, seed=11, start=datetime(2019, 10, 1, tzinfo=UTC), days=DAYS, incidents=[INCIDENT]
    )
    write_events(table, folder / "events.parquet")
    pipeline = Pipeline(warehouse=str(folder / "wh"))
    pipeline.ingest([folder / "events.parquet"])
    pipeline.build()
    return pipeline.warehouse


def _series(warehouse: str, window_minutes: int):  # type: ignore[no-untyped-def]
    con = connect()
    try:
        con.register("silver_events", tables.dataset(tables.table_path(warehouse, tables.SILVER)))
        con.execute(CUBE_SQL)
        series = build_series(con, min_total_views=500)
    finally:
        con.close()
    return add_session_counts(warehouse, series, window_minutes)


@pytest.mark.slow
def test_session_counts_are_the_funnel_contract_at_the_entry_hour(warehouse: str) -> None:
    series = _series(warehouse, 60)
    silver = tables.dataset(tables.table_path(warehouse, tables.SILVER)).to_table(
        columns=["event_time"]
    )
    last = max(silver.column("event_time").to_pylist()).replace(tzinfo=None)
    cutoff = np.datetime64(final_until(last, 60), "us")
    brands = [s for d, s in zip(series.dimension, series.segment, strict=True) if d == "brand"]
    assert UNKNOWN in brands and len(brands) > 5
    for dimension, segment, by in (
        ("shop", "all", None),
        ("price_band", "10-30", "price_band"),
        ("brand", UNKNOWN, "brand"),  # NULL brand: its own segment, held constant too
        ("brand", brands[-1], "brand"),
    ):
        spec = funnel.FunnelSpec(window_seconds=3600, by=by)
        rows = funnel.query(warehouse, spec, grain="hour").rows
        expected = {
            np.datetime64(r["hour"].replace(tzinfo=None), "us"): r
            for r in rows
            if by is None or (r[spec.key_column or ""] or UNKNOWN) == segment
        }
        i = series.index(dimension, segment)
        final = 0
        for t, hour in enumerate(series.hours):
            got = [
                series.values[n][i, t] for n in ("sessions", "session_carted", "session_purchased")
            ]
            if hour > cutoff:  # its sessions could still cart or buy: not scored yet
                assert got == [0, 0, 0]
                continue
            want = expected.get(hour, {"sessions": 0, "carted": 0, "purchased": 0})
            assert got == [want["sessions"], want["carted"], want["purchased"]], (segment, hour)
            final += got[0] > 0
        assert final > 24 * (DAYS - 2)
    # The last two hours (entry hour + 60 min window) are the unfinished tail.
    assert (series.values["sessions"][series.index("shop", "all"), -2:] == 0).all()
    assert series.values["sessions"][series.index("shop", "all"), -3] > 0


def _session_rows(warehouse: str, enabled: bool) -> list[dict]:  # type: ignore[type-arg]
    pipeline = Pipeline(warehouse=warehouse, session_rates=enabled)
    return pipeline.detect().anomalies.to_pylist()


@pytest.mark.slow
def test_a_checkout_incident_drops_session_conversion_and_is_found_only_when_enabled(
    warehouse: str,
) -> None:
    rows = _session_rows(warehouse, True)
    session = [r for r in rows if r["step"] in SESSION_STEPS]
    near = INCIDENT.start - timedelta(hours=24), INCIDENT.end + timedelta(hours=24)
    hits = [
        r
        for r in session
        if (r["dimension"], r["segment"]) == ("price_band", "10-30")
        and r["window_start"] < INCIDENT.end
        and r["window_end"] > INCIDENT.start
    ]
    assert {r["step"] for r in hits} >= {"session_conversion", "session_cart_to_purchase"}
    worst = min(hits, key=lambda r: r["z"])
    assert worst["type"] == "drop" and worst["z"] < -5
    assert worst["observed_rate"] < 0.5 * worst["expected_rate"]
    # numerator and denominator are sessions: never more purchasing than carting sessions
    assert 0 <= worst["numerator"] <= worst["denominator"]
    assert worst["lost_purchases"] > 0
    cause = json.loads(worst["root_cause"])
    assert cause["summary"].startswith(worst["step"])
    assert "sessions" in evidence(worst)
    # no session-rate alarm anywhere else in the nine days
    strays = [r for r in session if not (near[0] <= r["window_start"] <= near[1])]
    assert strays == []

    without = _session_rows(warehouse, False)
    assert without and not [r for r in without if r["step"] in SESSION_STEPS]
    assert {r["step"] for r in without} <= {
        "traffic",
        "view_to_cart",
        "cart_to_purchase",
        "conversion",
    }


def test_session_rate_settings_are_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "funnelpulse.toml"
    toml.write_text("[funnelpulse]\nsession_rates = true\nsession_window_minutes = 30\n")
    settings = load_settings(toml)
    assert settings.session_rates is True and settings.session_window_minutes == 30
    toml.write_text('[funnelpulse]\nsession_rates = "yes"\n')
    with pytest.raises(ConfigError, match=r'Setting session_rates = "yes" \(in .*\) must be true'):
        load_settings(toml)
    monkeypatch.setenv("FUNNELPULSE_SESSION_RATES", "maybe")
    with pytest.raises(ConfigError, match="FUNNELPULSE_SESSION_RATES"):
        load_settings()
    monkeypatch.setenv("FUNNELPULSE_SESSION_RATES", "false")
    assert load_settings().session_rates is False
    with pytest.raises(ConfigError, match="session_window_minutes = 0"):
        load_settings(session_window_minutes=0)


@pytest.mark.slow
def test_a_capped_funnel_spills_to_a_private_folder_that_is_removed(warehouse: str) -> None:
    meta = Path(warehouse, "_funnelpulse")
    before = set(meta.iterdir())
    with funnel.bounded_connection(warehouse, 64) as con:
        limit, spill = con.execute(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchall()[0]
        assert limit == "61.0 MiB"  # 64 MB as DuckDB reports it
        assert Path(spill).parent == meta and Path(spill).is_dir()
    assert not Path(spill).exists() and set(meta.iterdir()) == before
    spec = funnel.FunnelSpec(by="brand")
    # Too small a cap for the joins: one clear error, and the spill folder is still removed.
    with pytest.raises(FunnelPulseError, match="Raise funnel_memory_mb"):
        funnel.query(warehouse, spec, memory_mb=64)
    assert set(meta.iterdir()) == before
    capped = funnel.query(warehouse, spec, memory_mb=256).rows
    free = funnel.query(warehouse, spec, memory_mb=None).rows
    assert len(capped) == len(free) > 100
    for a, b in zip(capped, free, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(b[key], float):  # revenue sums may differ in the last bit
                assert a[key] == pytest.approx(b[key], rel=1e-9), key
            else:
                assert a[key] == b[key], key
    assert set(meta.iterdir()) == before


def _row(step: str, lost: float) -> dict:  # type: ignore[type-arg]
    start = datetime(2019, 10, 10, 3, tzinfo=UTC)
    return {
        "anomaly_id": step,
        "dimension": "brand",
        "segment": "anar",
        "window_start": start,
        "window_end": start + timedelta(hours=1),
        "window_hours": 1,
        "step": step,
        "type": "drop",
        "severity": "high",
        "z": -7.0,
        "lost_purchases": lost,
        "lost_revenue": lost * 10,
    }


def test_an_incident_counts_the_same_missing_purchases_once_across_both_kinds_of_rate() -> None:
    from funnelpulse.anomaly.incidents import group_incidents

    hour = [_row("conversion", 12.0), _row("session_conversion", 14.0)]
    (incident,) = group_incidents(hour)
    assert incident.lost_purchases == 14.0 and incident.lost_revenue == 140.0
    assert incident.steps == ["conversion", "session_conversion"]
    parts = [_row("session_view_to_cart", 9.0), _row("session_cart_to_purchase", 8.0)]
    assert group_incidents([*hour, *parts])[0].lost_purchases == 17.0


@pytest.mark.slow
def test_the_anomalies_page_drills_into_a_session_anomaly(
    warehouse: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    rows = _session_rows(warehouse, True)  # writes the anomalies table, session rows included
    worst = min((r for r in rows if r["step"] == "session_conversion"), key=lambda r: r["z"])
    monkeypatch.setenv("FUNNELPULSE_WAREHOUSE", warehouse)
    page = Path(funnel.__file__).parent / "dashboard" / "pages" / "4_Anomalies.py"
    at = AppTest.from_file(str(page), default_timeout=60).run()
    assert not at.exception
    # The page lists incidents; the one the worst session anomaly belongs to lists it among its
    # anomalous segment-hours, its step in words.
    box = at.selectbox(key="incident")
    found = []
    for k in range(len(box.options)):
        at = at.selectbox(key="incident").set_value(k).run()
        assert not at.exception
        for frame in at.dataframe:
            shown = frame.value
            for _, r in shown.iterrows():
                if worst["anomaly_id"] in {str(v) for v in r.values}:
                    found.append(" ".join(str(v) for v in r.values))
    assert found, "the worst session anomaly is on no incident's page"
    assert any("session" in text.lower() for text in found), found
