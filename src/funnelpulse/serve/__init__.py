"""`funnelpulse serve`: files landing, the live stream, the dashboard and the API as one
supervised service with health and metrics endpoints (see service.py)."""
