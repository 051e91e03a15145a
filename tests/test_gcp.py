"""deploy/gcp/funnelpulse-gcp.sh: the exact gcloud commands for each flag (dry-run), and shellcheck."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "deploy" / "gcp" / "funnelpulse-gcp.sh"
BASE = [
    "--project",
    "acme-prj",
    "--region",
    "europe-west1",
    "--bucket",
    "acme-fp",
    "--cluster",
    "fp1",
    "--dry-run",
]
JOB = "gcloud dataproc jobs submit pyspark gs://acme-fp/code/funnelpulse_job.py --project acme-prj --region europe-west1 --cluster fp1 --py-files gs://acme-fp/code/funnelpulse-0.1.0-py3-none-any.whl --properties spark.driver.memory=4g\\,spark.executor.memory=5g -- --warehouse gs://acme-fp/warehouse"


def dry(*args: str, env: dict[str, str] | None = None) -> list[str]:
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return [line[2:] for line in done.stdout.splitlines() if line.startswith("+ ")]


def test_setup_commands() -> None:
    commands = dry(*BASE, "--setup", "--workers", "3")
    assert commands[0] == (
        "gcloud services enable dataproc.googleapis.com storage.googleapis.com run.googleapis.com "
        "artifactregistry.googleapis.com cloudbuild.googleapis.com --project acme-prj"
    )
    assert commands[1] == (
        "gcloud storage buckets create gs://acme-fp --project acme-prj --location europe-west1 "
        "--uniform-bucket-level-access"
    )
    assert commands[2] == f"python3 -m pip wheel --no-deps --wheel-dir {ROOT}/dist {ROOT}"
    assert commands[3] == (
        f"gcloud storage cp {ROOT}/dist/funnelpulse-0.1.0-py3-none-any.whl "
        f"{ROOT}/deploy/spark/funnelpulse_job.py gs://acme-fp/code/"
    )
    assert commands[4].startswith(
        "gcloud dataproc clusters create fp1 --project acme-prj --region europe-west1 "
        "--image-version 2.2-debian12 --num-workers 3 "
    )
    assert "spark:spark.sql.session.timeZone=UTC" in commands[4]
    assert (
        "gs://goog-dataproc-initialization-actions-europe-west1/python/pip-install.sh"
        in commands[4]
    )
    assert len(commands) == 5


def test_upload_ingest_and_batch_commands(tmp_path: Path) -> None:
    commands = dry(*BASE, "--upload", "a b.csv", "c.csv.gz", "--ingest", "--batch")
    assert commands == [
        "gcloud storage cp a\\ b.csv c.csv.gz gs://acme-fp/raw/",
        f"{JOB} ingest gs://acme-fp/raw/",
        f"{JOB} build --engine spark",
        f"{JOB} detect",
    ]


def test_dashboard_status_and_delete_commands() -> None:
    image = "europe-west1-docker.pkg.dev/acme-prj/funnelpulse/dashboard:0.1.0"
    assert dry(*BASE, "--dashboard") == [
        "gcloud artifacts repositories create funnelpulse --repository-format docker --location europe-west1 --project acme-prj",
        f"gcloud builds submit {ROOT} --project acme-prj --config {ROOT}/deploy/gcp/cloudbuild.yaml --substitutions _IMAGE={image}",
        f"gcloud run deploy funnelpulse-dashboard --project acme-prj --region europe-west1 --image {image} --port 8080 "
        "--memory 2Gi --no-allow-unauthenticated --set-env-vars FUNNELPULSE_WAREHOUSE=gs://acme-fp/warehouse",
    ]
    assert dry(*BASE, "--status") == [
        "gcloud dataproc clusters describe fp1 --project acme-prj --region europe-west1 --format "
        "value\\(status.state\\,config.workerConfig.numInstances\\)",
        "gcloud dataproc jobs list --project acme-prj --region europe-west1 --cluster fp1 --limit 5",
        "gcloud storage du --summarize --readable-sizes gs://acme-fp/warehouse",
    ]
    assert dry(*BASE, "--delete", "--delete-bucket") == [
        "gcloud dataproc clusters delete fp1 --project acme-prj --region europe-west1 --quiet",
        "gcloud storage rm --recursive gs://acme-fp",
        "gcloud dataproc clusters list --project acme-prj --region europe-west1 --filter clusterName=fp1 "
        "--format value\\(clusterName\\)",
    ]


def test_configuration_from_environment_and_defaults() -> None:
    env = {"PATH": "/usr/bin:/bin", "FUNNELPULSE_GCP_PROJECT": "envprj"}
    commands = dry("--dry-run", "--batch", env=env)
    assert commands[0].startswith(
        "gcloud dataproc jobs submit pyspark gs://envprj-funnelpulse/code/funnelpulse_job.py "
        "--project envprj --region us-central1 --cluster funnelpulse "
    )


def test_spark_settings_are_passed_to_each_dataproc_job() -> None:
    """The job's Spark properties (memory from flags or FUNNELPULSE_SPARK_*, any --conf) are on
    every submitted job, where they win over the cluster's defaults."""
    env = {"PATH": "/usr/bin:/bin", "FUNNELPULSE_SPARK_EXECUTOR_MEMORY": "7g"}
    args = ["--driver-memory", "6g", "--conf", "spark.sql.shuffle.partitions=128", "--batch"]
    commands = dry(*BASE, *args, env=env)
    properties = (
        "--properties spark.driver.memory=6g\\,spark.executor.memory=7g"
        "\\,spark.sql.shuffle.partitions=128 -- "
    )
    assert len(commands) == 2 and all(properties in c for c in commands), commands


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--setup", "--dry-run"], "set --project"),
        (["--project", "p", "--dry-run"], "give at least one action"),
        (["--project", "p", "--bogus"], "unknown option --bogus"),
        (["--project", "p", "--upload"], "needs at least one file"),
        (["--project", "p", "--workers", "x", "--setup"], "--workers must be a number"),
        (["--project", "p", "--driver-memory", "lots", "--batch"], "memory sizes are like 4g"),
        (["--project", "p", "--conf", "shuffle=3", "--batch"], "--conf needs KEY=VALUE"),
    ],
)
def test_bad_flags_fail_clearly(args: list[str], message: str) -> None:
    done = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )
    assert done.returncode != 0
    assert message in done.stderr


def test_shellcheck_passes() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed: make test installs it with apt"
    done = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
