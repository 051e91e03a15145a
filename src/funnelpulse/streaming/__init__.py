"""Real time: the Kafka/file stream job, the Kafka reader for Spark, replay, and a local broker."""
