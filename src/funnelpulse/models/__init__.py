"""The SQL models (DuckDB dialect), one file per silver/gold table."""
