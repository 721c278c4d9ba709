"""Rejection rows: what a stage could not use, and why. Nothing is dropped silently.

Every stage writes its rejections to `<root>/rejected/<stage>-<shard>.parquet`
(columns image_id, stage, reason). The name is deterministic, so a rerun of a
shard replaces its file rather than adding a second one; a shard with no
rejections still writes an empty file, so a rerun also clears stale rows.
"""
from __future__ import annotations

import io
import re
from collections import Counter
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from headrot import storage

REJECTED_SCHEMA = pa.schema([("image_id", pa.string()), ("stage", pa.string()), ("reason", pa.string())])
REJECTED_DIR = "rejected"


# ---------------------------------------------------------------------------
# Building and writing


def as_table(rows: pa.Table | Mapping[str, Any] | Iterable[Mapping[str, Any]], stage: str) -> pa.Table:
    """Rows as a REJECTED_SCHEMA table: a pa.Table, a dict of columns or a list of dicts.

    `stage` fills the stage column where the rows have none. Extra columns are dropped.
    """
    if isinstance(rows, pa.Table):
        columns = {name: rows.column(name).to_pylist() for name in rows.column_names}
    elif isinstance(rows, Mapping):
        columns = {k: list(v) for k, v in rows.items()}
    else:
        rows = list(rows)
        columns = {k: [r.get(k) for r in rows] for k in ("image_id", "stage", "reason")}
        if rows and all(r.get("stage") is None for r in rows):
            columns.pop("stage")
    for needed in ("image_id", "reason"):
        if needed not in columns:
            raise ValueError(f"rejection rows need an {needed!r} column; got {sorted(columns)}")
    n = len(columns["image_id"])
    stages = columns.get("stage") or [stage] * n
    return pa.table(
        {
            "image_id": pa.array([str(v) for v in columns["image_id"]], pa.string()),
            "stage": pa.array([s if s else stage for s in stages], pa.string()),
            "reason": pa.array([str(v) for v in columns["reason"]], pa.string()),
        },
        schema=REJECTED_SCHEMA,
    )


def rejected_uri(root: str, stage: str, shard: int | str) -> str:
    shard_name = f"{shard:05d}" if isinstance(shard, int) else str(shard)
    name = f"{storage.safe_name(stage, 'stage')}-{storage.safe_name(shard_name, 'shard')}.parquet"
    return storage.join(root, REJECTED_DIR, name)


def write_rejected(root: str, stage: str, shard: int | str, table_or_rows) -> str:
    """Write `<root>/rejected/<stage>-<shard>.parquet` (shard ints as 5 digits); returns its URI."""
    table = as_table(table_or_rows, stage)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    uri = rejected_uri(root, stage, shard)
    storage.write_bytes(uri, buffer.getvalue())
    return uri


# ---------------------------------------------------------------------------
# Reading and summarising


def read_rejected(root: str) -> pa.Table:
    """All rejection rows under `<root>/rejected/`, in file-name order (empty if none)."""
    return read_rejected_files(storage.list_files(storage.join(root, REJECTED_DIR), ".parquet"))


def read_rejected_files(uris: Iterable[str]) -> pa.Table:
    """The rejection rows of the named files, in the order given (empty if none); a missing
    file raises FileNotFoundError (a stage reads its own files by name: see embed._account)."""
    tables = [pq.read_table(io.BytesIO(storage.read_bytes(uri))).select(REJECTED_SCHEMA.names)
              .cast(REJECTED_SCHEMA) for uri in uris]
    if not tables:
        return REJECTED_SCHEMA.empty_table()
    return pa.concat_tables(tables)


# Specific parts of a reason (file lines, quoted values, ids, numbers) vary per row;
# without them the reasons of one kind group together.
_SPECIFICS = [
    (re.compile(r"'[^']*'|\"[^\"]*\""), "'…'"),
    (re.compile(r"\bline \d+"), "line N"),
    (re.compile(r"\b\d+(\.\d+)?\b"), "N"),
]


def reason_kind(reason: str) -> str:
    """A reason without its specifics, e.g. "x.txt line N: expected N numbers, got N"."""
    kind = reason.split(";")[0].strip()
    kind = re.sub(r"\bduplicate id \S+", "duplicate id", kind)
    kind = re.sub(r"(missing file:?) \S+", r"\1", kind)
    for pattern, replacement in _SPECIFICS:
        kind = pattern.sub(replacement, kind)
    return kind


def count_by_reason(table: pa.Table, exact: bool = False) -> dict[str, int]:
    """{stage: reason kind -> count}, most frequent first. `exact=True` keeps reasons whole."""
    if table.num_rows == 0:
        return {}
    stages = table.column("stage").to_pylist()
    reasons = table.column("reason").to_pylist()
    counts = Counter(f"{s}: {r if exact else reason_kind(r)}" for s, r in zip(stages, reasons))
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
