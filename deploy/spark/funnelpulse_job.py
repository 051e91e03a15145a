"""spark-submit entry point: the `funnelpulse` CLI inside the cluster's Spark session.

    spark-submit --master yarn --py-files funnelpulse-0.1.0-py3-none-any.whl \\
        deploy/spark/funnelpulse_job.py --warehouse gs://BUCKET/warehouse ingest gs://BUCKET/raw/
    spark-submit ... deploy/spark/funnelpulse_job.py --warehouse gs://BUCKET/warehouse build
    spark-submit ... deploy/spark/funnelpulse_job.py --warehouse gs://BUCKET/warehouse detect

ingest, build and detect run on Spark here (their --engine defaults to spark).

The session spark-submit configured (master, executors, jars) is created first, so the engine
uses it as it is instead of starting a local one.
"""

import sys

from pyspark.sql import SparkSession

from funnelpulse.cli import main

if __name__ == "__main__":
    SparkSession.builder.appName("funnelpulse").getOrCreate()
    args = sys.argv[1:]
    # Inside spark-submit the steps that have a Spark form run on Spark unless told otherwise.
    if any(step in args for step in ("ingest", "build", "detect")) and "--engine" not in args:
        args += ["--engine", "spark"]
    sys.argv = ["funnelpulse", *args]
    main()
