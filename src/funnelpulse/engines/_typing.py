"""Spark's types for annotations: real classes for the type checker, while pyspark stays an
optional extra at run time (modules use `from __future__ import annotations`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession
    from pyspark.sql.types import StructType
else:
    SparkDataFrame = SparkSession = StructType = Any

__all__ = ["SparkDataFrame", "SparkSession", "StructType"]
