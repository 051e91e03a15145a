"""Real time: the embedded stream engine and its inputs, what both engines share (windows,
live buckets), replay, and a local broker. The Spark stream is in engines/spark_stream.py."""
