"""Detection end to end on generated data with known incidents: a small benchmark that can fail."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from funnelpulse import Pipeline, tables
from funnelpulse.anomaly.incidents import group_incidents
from funnelpulse.generate import KINDS
from funnelpulse.labels import load_labels


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "funnelpulse", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("labelled")
    out = cli(
        "-q",
        "generate",
        "--shape",
        "plain",
        "--rows",
        "3000000",
        "--days",
        "14",
        "--out",
        "ev.csv",
        "--seed",
        "3",
        "--inject",
        "auto:6",
        cwd=folder,
    )
    assert out.returncode == 0, out.stderr
    for step in (["ingest", "ev.csv"], ["build"]):
        done = cli("-q", *step, cwd=folder)
        assert done.returncode == 0, done.stderr
    return folder


@pytest.mark.slow
def test_seasonal_finds_the_detectable_incidents_and_beats_reference(labelled: Path) -> None:
    result = cli(
        "-q", "evaluate", "--labels", "ev.csv.labels.json", "--format", "json", cwd=labelled
    )
    assert result.returncode == 0, result.stderr
    scores = {s["method"]: s for s in json.loads(result.stdout)}
    seasonal, reference = scores["seasonal"], scores["reference"]
    assert seasonal["labels"] == 6
    labels = load_labels(labelled / "ev.csv.labels.json")
    assert {lab.kind for lab in labels} == {k[0] for k in KINDS}
    assert all(lab.ideal_z is not None for lab in labels)
    detectable = [r for r in seasonal["per_label"] if r["detectable"]]
    assert detectable and seasonal["detectable"] == len(detectable)
    # Labels near the |ideal z| = 5 line are coin flips; clearly visible ones must all be found.
    clear = [r for r in detectable if abs(r["ideal_z"]) >= 8]
    assert clear and all(r["detected"] for r in clear), clear
    assert seasonal["recall_detectable"] >= 0.8
    # Incidents are counted per real event (one outage over 75 segments is one incident, not 75),
    # so one false incident among six weighs 1/6: bound the false ones per week, and precision.
    assert seasonal["false_per_week"] <= 1.0
    assert seasonal["precision"] >= 0.8
    assert seasonal["notifications_per_label"] <= 1.2
    assert seasonal["median_delay_h"] <= 1.0
    assert seasonal["f1"] - reference["f1"] >= 0.2
    assert sum(k["labels"] for k in seasonal["per_kind"].values()) == 6


@pytest.mark.slow
def test_detect_writes_anomalies_with_window_root_cause_and_explain(labelled: Path) -> None:
    result = cli("detect", cwd=labelled)
    assert result.returncode == 0, result.stderr
    p = Pipeline(warehouse=str(labelled / "warehouse"))
    rows = p.table(tables.ANOMALIES).to_pylist()
    assert rows and all(r["method"] == "seasonal" for r in rows)
    assert all(
        r["window_end"] - r["window_start"] == timedelta(hours=r["window_hours"]) for r in rows
    )
    assert len({r["anomaly_id"] for r in rows}) == len(rows)
    labels = load_labels(labelled / "ev.csv.labels.json")
    outage = next(lab for lab in labels if lab.kind == "outage")
    hit = [
        r
        for r in rows
        if r["dimension"] == "shop"
        and r["step"] == "traffic"
        and outage.start < r["window_end"] <= outage.end + timedelta(hours=1)
    ]
    assert hit and hit[0]["type"] == "traffic_drop" and hit[0]["lost_purchases"] > 0
    brand_rows = [
        r
        for lab in labels
        if lab.dimension == "brand" and lab.kind != "spike"
        for r in rows
        if r["segment"] == lab.segment
        and lab.start < r["window_end"] <= lab.end + timedelta(hours=1)
    ]
    assert brand_rows and brand_rows[0]["type"] == "drop"
    cause = json.loads(brand_rows[0]["root_cause"])
    assert set(cause) >= {"price_band", "category_root", "summary"}
    assert (
        abs(sum(part["share"] for part in cause["price_band"]) - 1) < 1e-6
        or len(cause["price_band"]) == 5
    )

    explained = cli("explain", brand_rows[0]["anomaly_id"], cwd=labelled)
    assert explained.returncode == 0, explained.stderr
    assert "by price_band:" in explained.stdout and brand_rows[0]["segment"] in explained.stdout
    missing = cli("explain", "nope", cwd=labelled)
    assert missing.returncode == 1 and "No anomaly or incident with id" in missing.stderr
    assert "`funnelpulse incidents list`" in missing.stderr  # a command that lists ids

    # overlapping windows of one segment group into one incident covering the outage
    incidents = group_incidents(rows)
    assert any(
        i.start <= outage.start and i.end >= outage.end for i in incidents if i.dimension == "shop"
    )


def test_detect_on_real_sample_finds_no_history(demo_warehouse: Pipeline) -> None:
    # The bundled sample covers a few hours on four days: no hour has three past same-hour days.
    result = demo_warehouse.detect()
    assert result.anomalies.num_rows == 0
    assert result.segments > 0


def test_reference_method_reproduces_the_original_rule(demo_warehouse: Pipeline) -> None:
    result = demo_warehouse.detect(method="reference")
    gold = demo_warehouse.table(tables.GOLD_HOURLY_BRAND).to_pylist()
    for row in result.anomalies.to_pylist():
        assert row["denominator"] >= 50 and abs(row["z"]) >= 2.0
        assert row["type"] == ("drop" if row["z"] < 0 else "spike")
        match = [
            g
            for g in gold
            if g["brand"] == row["segment"] and g["window_start"] == row["window_start"]
        ]
        assert match and match[0]["conversion_rate"] == row["observed_rate"]
