"""Anomaly detection over the gold tables: seasonal scoring, root cause, incidents and alerts."""
