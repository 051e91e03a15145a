"""Delta tables written by Spark without delta-spark: executors write Parquet, the driver commits
(tables.commit), so no jars are needed on the Spark side. Used by the build and by Spark's ingest."""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa

from .. import tables
from ..errors import WarehouseError
from ._typing import SparkDataFrame, StructType

_ARROW_TYPES = {
    "string": pa.string(),
    "bigint": pa.int64(),
    "int": pa.int32(),
    "smallint": pa.int16(),
    "tinyint": pa.int8(),
    "double": pa.float64(),
    "float": pa.float32(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", "UTC"),
    "timestamp_ntz": pa.timestamp("us"),
}


def arrow_schema(struct: StructType) -> pa.Schema:
    """The Arrow schema of a flat Spark schema, every field nullable (as the DuckDB engine's are)."""
    fields = []
    for field in struct.fields:
        name = field.dataType.simpleString()
        if name not in _ARROW_TYPES:
            raise WarehouseError(f"Column {field.name} has type {name}, which tables do not store")
        fields.append(pa.field(field.name, _ARROW_TYPES[name]))
    return pa.schema(fields)


def write_delta(
    frame: SparkDataFrame,
    path: str,
    partition_by: str | None = None,
    replace: tables.Replace = None,
    cluster: bool = True,
) -> int:
    """Write a DataFrame as Delta without delta-spark: executors write Parquet into a staging
    folder of the table, the driver moves the files into place and commits them (with the
    removal of the files they replace) in one Delta transaction. Returns the rows written.

    `cluster` shuffles rows so each partition value is written by one task (few, large files);
    without it each task writes its own files (no shuffle: for input already in date order).
    """
    import uuid

    import pyarrow.parquet as pq
    from pyarrow import fs

    schema = arrow_schema(frame.schema)
    columns = [partition_by] if partition_by else []
    filesystem, root = (
        fs.FileSystem.from_uri(path)
        if "://" in path
        else (fs.LocalFileSystem(), os.path.abspath(path))
    )
    staging = f"{root.rstrip('/')}/_staging-{uuid.uuid4().hex}"
    staging_uri = staging if "://" not in path else f"{path.split('://', 1)[0]}://{staging}"
    if partition_by and cluster:
        frame = frame.repartition(partition_by)
    writer = frame.write.mode("overwrite")
    if partition_by:
        writer = writer.partitionBy(partition_by)
    try:
        writer.parquet(staging_uri)

        def move_into_place() -> list[Any]:
            adds = []
            found = filesystem.get_file_info(fs.FileSelector(staging, recursive=True))
            for info in found:
                if info.type != fs.FileType.File or not info.base_name.endswith(".parquet"):
                    continue
                relative = info.path[len(staging) + 1 :]
                target = f"{root.rstrip('/')}/{relative}"
                filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
                filesystem.move(info.path, target)
                meta = pq.read_metadata(target, filesystem=filesystem)
                if meta.num_rows == 0:  # Spark writes an empty file for an empty result
                    filesystem.delete_file(target)
                    continue
                adds.append(tables.add_action(relative, info.size, meta, columns))
            return adds

        return tables.commit(path, schema, move_into_place, columns, replace)
    finally:
        if filesystem.get_file_info(staging).type == fs.FileType.Directory:
            filesystem.delete_dir(staging)
