#!/usr/bin/env bash
# FunnelPulse on Google Cloud: Dataproc for the Spark pipeline, Cloud Storage for the warehouse,
# Cloud Run for the dashboard. Nothing is hard-coded: project, region, bucket and cluster come
# from flags or FUNNELPULSE_GCP_* environment variables. --dry-run prints every command instead
# of running it.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: deploy/gcp/funnelpulse-gcp.sh [options] ACTION...

Actions (run in the order given):
  --setup            enable APIs, create the bucket and the Dataproc cluster, upload the code
  --upload FILE...   copy raw REES46 files to gs://BUCKET/raw/ (then ingest them with --ingest)
  --ingest           ingest gs://BUCKET/raw/* into the warehouse (Spark on the cluster)
  --batch            build silver and gold with Spark on the cluster, then detect anomalies
  --dashboard        build the dashboard image and deploy it to Cloud Run
  --status           show the cluster, recent jobs and the warehouse size
  --delete           delete the cluster (and with --delete-bucket the bucket), then verify

Options:
  --project ID       GCP project            (env FUNNELPULSE_GCP_PROJECT, required)
  --region REGION    region                 (env FUNNELPULSE_GCP_REGION, default us-central1)
  --bucket NAME      bucket without gs://   (env FUNNELPULSE_GCP_BUCKET, default PROJECT-funnelpulse)
  --cluster NAME     Dataproc cluster       (env FUNNELPULSE_GCP_CLUSTER, default funnelpulse)
  --workers N        worker count           (env FUNNELPULSE_GCP_WORKERS, default 2)
  --driver-memory S  Spark driver heap of each job    (env FUNNELPULSE_SPARK_DRIVER_MEMORY,
                     default 4g: the n2-standard-4 master has 16 GB)
  --executor-memory S  Spark executor heap           (env FUNNELPULSE_SPARK_EXECUTOR_MEMORY,
                     default 5g: two executors fit on each n2-standard-4 worker)
  --conf KEY=VALUE   any other spark.* property of each job (repeat)
  --delete-bucket    with --delete: also remove the bucket and everything in it
  --dry-run          print the commands, run nothing
  -h, --help         this help
USAGE
}

PROJECT="${FUNNELPULSE_GCP_PROJECT:-}"
REGION="${FUNNELPULSE_GCP_REGION:-us-central1}"
BUCKET="${FUNNELPULSE_GCP_BUCKET:-}"
CLUSTER="${FUNNELPULSE_GCP_CLUSTER:-funnelpulse}"
WORKERS="${FUNNELPULSE_GCP_WORKERS:-2}"
DRIVER_MEMORY="${FUNNELPULSE_SPARK_DRIVER_MEMORY:-4g}"
EXECUTOR_MEMORY="${FUNNELPULSE_SPARK_EXECUTOR_MEMORY:-5g}"
SPARK_CONF=()
DRY_RUN=0
DELETE_BUCKET=0
ACTIONS=()
UPLOADS=()
VERSION="0.1.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

die() { echo "Error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --project) PROJECT="${2:?--project needs a value}"; shift 2 ;;
    --region) REGION="${2:?--region needs a value}"; shift 2 ;;
    --bucket) BUCKET="${2:?--bucket needs a value}"; shift 2 ;;
    --cluster) CLUSTER="${2:?--cluster needs a value}"; shift 2 ;;
    --workers) WORKERS="${2:?--workers needs a value}"; shift 2 ;;
    --driver-memory) DRIVER_MEMORY="${2:?--driver-memory needs a value}"; shift 2 ;;
    --executor-memory) EXECUTOR_MEMORY="${2:?--executor-memory needs a value}"; shift 2 ;;
    --conf)
      case "${2:-}" in
        spark.*=?*) SPARK_CONF+=("$2"); shift 2 ;;
        *) die "--conf needs KEY=VALUE with a spark.* key, e.g. --conf spark.sql.shuffle.partitions=128" ;;
      esac
      ;;
    --dry-run) DRY_RUN=1; shift ;;
    --delete-bucket) DELETE_BUCKET=1; shift ;;
    --setup|--ingest|--batch|--dashboard|--status|--delete) ACTIONS+=("${1#--}"); shift ;;
    --upload)
      ACTIONS+=("upload"); shift
      while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do UPLOADS+=("$1"); shift; done
      [ ${#UPLOADS[@]} -gt 0 ] || die "--upload needs at least one file"
      ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done

[ ${#ACTIONS[@]} -gt 0 ] || { usage >&2; die "give at least one action, e.g. --setup"; }
[ -n "$PROJECT" ] || die "set --project or FUNNELPULSE_GCP_PROJECT"
case "$WORKERS" in ''|*[!0-9]*) die "--workers must be a number" ;; esac
for size in "$DRIVER_MEMORY" "$EXECUTOR_MEMORY"; do
  [[ "$size" =~ ^[1-9][0-9]*[kKmMgGtT]$ ]] || die "memory sizes are like 4g or 512m, not '$size'"
done
# The job's Spark properties: they win over the cluster's defaults for this job only, and the
# engine uses the session they configure as it is (its progress line shows them).
PROPERTIES="spark.driver.memory=${DRIVER_MEMORY},spark.executor.memory=${EXECUTOR_MEMORY}"
for entry in "${SPARK_CONF[@]+"${SPARK_CONF[@]}"}"; do
  case "$entry" in *,*) die "--conf $entry: a value cannot hold a comma here" ;; esac
  PROPERTIES="${PROPERTIES},${entry}"
done
BUCKET="${BUCKET:-${PROJECT}-funnelpulse}"
WAREHOUSE="gs://${BUCKET}/warehouse"
CODE="gs://${BUCKET}/code"
WHEEL="funnelpulse-${VERSION}-py3-none-any.whl"
IMAGE="${REGION}-docker.pkg.dev/${PROJECT}/funnelpulse/dashboard:${VERSION}"

run() {
  # Print the command (quoted so it can be pasted); run it unless --dry-run.
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if [ "$DRY_RUN" -eq 0 ]; then "$@"; fi
}

submit() {
  run gcloud dataproc jobs submit pyspark "${CODE}/funnelpulse_job.py" \
    --project "$PROJECT" --region "$REGION" --cluster "$CLUSTER" \
    --py-files "${CODE}/${WHEEL}" --properties "$PROPERTIES" \
    -- --warehouse "$WAREHOUSE" "$@"
}

do_setup() {
  run gcloud services enable dataproc.googleapis.com storage.googleapis.com run.googleapis.com \
    artifactregistry.googleapis.com cloudbuild.googleapis.com --project "$PROJECT"
  run gcloud storage buckets create "gs://${BUCKET}" --project "$PROJECT" --location "$REGION" \
    --uniform-bucket-level-access
  run python3 -m pip wheel --no-deps --wheel-dir "${ROOT}/dist" "$ROOT"
  run gcloud storage cp "${ROOT}/dist/${WHEEL}" "${ROOT}/deploy/spark/funnelpulse_job.py" "${CODE}/"
  run gcloud dataproc clusters create "$CLUSTER" --project "$PROJECT" --region "$REGION" \
    --image-version 2.2-debian12 --num-workers "$WORKERS" \
    --master-machine-type n2-standard-4 --worker-machine-type n2-standard-4 \
    --properties "spark:spark.sql.session.timeZone=UTC,spark:spark.sql.shuffle.partitions=64" \
    --metadata "PIP_PACKAGES=duckdb>=2.0 deltalake>=1.0 pyarrow>=16 sqlglot>=25 click>=8.1 rich>=13 scipy>=1.11 pytz" \
    --initialization-actions "gs://goog-dataproc-initialization-actions-${REGION}/python/pip-install.sh"
}

do_upload() {
  run gcloud storage cp "${UPLOADS[@]}" "gs://${BUCKET}/raw/"
}

do_ingest() {
  # Ingest runs in the driver's Python (DuckDB); each raw file is staged on its local disk first.
  submit ingest "gs://${BUCKET}/raw/"
}

do_batch() {
  submit build --engine spark
  submit detect
}

do_dashboard() {
  run gcloud artifacts repositories create funnelpulse --repository-format docker \
    --location "$REGION" --project "$PROJECT"
  run gcloud builds submit "$ROOT" --project "$PROJECT" \
    --config "${ROOT}/deploy/gcp/cloudbuild.yaml" --substitutions "_IMAGE=${IMAGE}"
  run gcloud run deploy funnelpulse-dashboard --project "$PROJECT" --region "$REGION" \
    --image "$IMAGE" --port 8080 --memory 2Gi --no-allow-unauthenticated \
    --set-env-vars "FUNNELPULSE_WAREHOUSE=${WAREHOUSE}"
}

do_status() {
  run gcloud dataproc clusters describe "$CLUSTER" --project "$PROJECT" --region "$REGION" \
    --format "value(status.state,config.workerConfig.numInstances)"
  run gcloud dataproc jobs list --project "$PROJECT" --region "$REGION" --cluster "$CLUSTER" --limit 5
  run gcloud storage du --summarize --readable-sizes "$WAREHOUSE"
}

do_delete() {
  run gcloud dataproc clusters delete "$CLUSTER" --project "$PROJECT" --region "$REGION" --quiet
  if [ "$DELETE_BUCKET" -eq 1 ]; then
    run gcloud storage rm --recursive "gs://${BUCKET}"
  fi
  # Verify nothing billable is left behind.
  if [ "$DRY_RUN" -eq 1 ]; then
    run gcloud dataproc clusters list --project "$PROJECT" --region "$REGION" \
      --filter "clusterName=${CLUSTER}" --format "value(clusterName)"
    return
  fi
  left=$(gcloud dataproc clusters list --project "$PROJECT" --region "$REGION" \
    --filter "clusterName=${CLUSTER}" --format "value(clusterName)")
  [ -z "$left" ] || die "cluster ${CLUSTER} still exists; check the Dataproc console"
  if [ "$DELETE_BUCKET" -eq 1 ] && gcloud storage ls "gs://${BUCKET}" >/dev/null 2>&1; then
    die "bucket gs://${BUCKET} still exists"
  fi
  echo "Deleted: cluster ${CLUSTER}$([ "$DELETE_BUCKET" -eq 1 ] && echo " and bucket gs://${BUCKET}")"
}

for action in "${ACTIONS[@]}"; do
  "do_${action}"
done
