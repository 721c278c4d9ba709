"""The CelebA images as a Ray Dataset: index rows plus the preprocessed `image`.

The index (small: ~50 columns x 200k rows) is built on the driver and split into
blocks; a CPU `map_batches` stage (tasks) fetches each batch's bytes in one
grouped call through headrot.storage's filesystem (s3fs fetches them
concurrently) and decodes them with `decode_face`. A bad image stays in the
stream with a zero image and its `reject_reason`; the consumer writes it to
rejected/. Index-level rejections are in `Index.rejected`, not in the stream.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headrot import storage
from headrot.data.images import ImageError, decode_face, read_failure_reason
from headrot.data.index import Index, read_index

# Rows per decode batch. ~0.15 s of decoding on one core at 64x64: long enough to
# amortise a task and a grouped S3 fetch, short enough to stream.
BATCH_SIZE = 256
# Index rows per block: each block is one decode task's input.
BLOCK_ROWS = 1024


# ---------------------------------------------------------------------------
# Bytes


def fetch_many(uris: Sequence[str]) -> dict[str, bytes | BaseException]:
    """Bytes of many files in one grouped call: uri -> bytes, or the exception for that file.

    Missing files come back as FileNotFoundError; the caller decides what is a
    rejection. All uris must share one scheme (one run root).
    """
    if not uris:
        return {}
    fs, _ = storage.filesystem(uris[0])
    paths = {fs._strip_protocol(u): u for u in uris}
    found = fs.cat(list(paths), on_error="return")
    if not isinstance(found, dict):  # a single path comes back bare
        found = {next(iter(paths)): found}
    return {paths[p]: value for p, value in found.items()}


# ---------------------------------------------------------------------------
# The decode stage (plain function; the Ray stage wraps it)


def decode_batch(
    batch: dict[str, np.ndarray],
    size: int,
    fetch: Callable[[Sequence[str]], dict[str, bytes | BaseException]] = fetch_many,
) -> dict[str, np.ndarray]:
    """Add `image` [B, S, S, 3] uint8 and `reject_reason` [B] str to a batch with a `path` column.

    A file that is missing or cannot be decoded gets a zero image and its reason;
    other read errors (network, permissions) raise, so Ray retries the task
    instead of rejecting good images.
    """
    paths = [str(p) for p in batch["path"]]
    images = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    reasons = np.full(len(paths), "", dtype=object)
    fetched = fetch(sorted(set(paths)))
    for i, uri in enumerate(paths):
        data = fetched.get(uri, FileNotFoundError(uri))
        if isinstance(data, BaseException):
            if not isinstance(data, (FileNotFoundError, IsADirectoryError)):
                raise OSError(f"reading {uri}: {data}") from data
            reasons[i] = read_failure_reason(uri, data)
            continue
        try:
            images[i] = decode_face(data, size)
        except ImageError as exc:
            reasons[i] = exc.reason
    out = dict(batch)
    out["image"] = images
    out["reject_reason"] = reasons.astype(str)
    return out


class DecodeFaces:
    """Ray Data callable: `decode_batch` with a fixed size (picklable for tasks)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, batch: pa.Table) -> pa.Table:
        # Arrow in, Arrow out: the index columns pass through with their exact
        # types (fixed-size landmarks, nullable light_label) untouched.
        from ray.data.extensions import ArrowTensorArray

        decoded = decode_batch({"path": batch.column("path").to_numpy(zero_copy_only=False)}, self.size)
        batch = batch.append_column("image", ArrowTensorArray.from_numpy(decoded["image"]))
        return batch.append_column("reject_reason", pa.array(decoded["reject_reason"].tolist(), pa.string()))


# ---------------------------------------------------------------------------
# Selection and the dataset


def select_rows(index: Index, partitions: Iterable[int] | None = None, limit: int | None = None) -> pa.Table:
    """The index rows in the given partitions (0 train, 1 val, 2 test), the first `limit` of them."""
    table = index.table
    if partitions is not None:
        wanted = sorted({int(p) for p in partitions})
        bad = [p for p in wanted if p not in (0, 1, 2)]
        if bad:
            raise ValueError(f"partitions must be among 0 (train), 1 (val), 2 (test); got {bad}")
        table = table.filter(pc.is_in(table.column("partition"), pa.array(wanted, pa.int8())))
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        table = table.slice(0, limit)
    return table


def images_from_index(
    index: Index,
    size: int,
    partitions: Iterable[int] | None = None,
    limit: int | None = None,
    batch_size: int = BATCH_SIZE,
    num_cpus: float = 1.0,
):
    """`image_dataset` for an index already read (so its `.rejected` stays at hand)."""
    import ray

    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    table = select_rows(index, partitions, limit)
    # Several blocks, so several decode tasks run at once (one block = one task).
    block_rows = max(batch_size, min(BLOCK_ROWS, -(-table.num_rows // 8) or 1))
    # take() copies: a slice would keep the whole index's buffers alive in each block
    # (and, depending on the serializer, ship them with every block).
    blocks = [table.take(np.arange(start, min(start + block_rows, table.num_rows)))
              for start in range(0, table.num_rows, block_rows)]
    ds = ray.data.from_arrow(blocks or [table])
    # A plain callable: the stage runs as tasks, which release their CPU between
    # blocks (an actor pool holding every CPU would starve the consumer).
    return ds.map_batches(
        DecodeFaces(size),
        batch_size=int(batch_size),
        batch_format="pyarrow",
        num_cpus=num_cpus,
    )


def image_dataset(
    data_uri: str,
    size: int,
    partitions: Iterable[int] | None = None,
    limit: int | None = None,
    light_labels: str | None = None,
    batch_size: int = BATCH_SIZE,
    num_cpus: float = 1.0,
):
    """The index rows of `data_uri` plus `image` (uint8 [S,S,3]) and `reject_reason` (str).

    Rows rejected while decoding stay in the stream (zero image, non-empty reason);
    rows rejected by the index are not in it: use `read_index` + `images_from_index`
    to get both.
    """
    index = read_index(data_uri, light_labels=light_labels)
    return images_from_index(index, size, partitions, limit, batch_size=batch_size, num_cpus=num_cpus)


# ---------------------------------------------------------------------------
# What exists: the `headrot inspect` summary


def inspect_images(
    index: Index,
    size: int,
    partitions: Iterable[int] | None = None,
    limit: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> dict:
    """Decode the selected images through the Ray Dataset and summarise rows and rejections.

    Nothing is materialised: batches stream through and only counts are kept.
    """
    import time
    from collections import Counter

    from headrot.rejects import count_by_reason, reason_kind

    selected = select_rows(index, partitions, limit)
    ds = images_from_index(index, size, partitions, limit, batch_size=batch_size)
    decoded = Counter()
    reasons = Counter()
    names = {0: "train", 1: "val", 2: "test"}
    start = time.perf_counter()
    n = 0
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="pyarrow"):
        n += batch.num_rows
        for partition, reason in zip(batch.column("partition").to_pylist(), batch.column("reject_reason").to_pylist()):
            if reason:
                reasons[reason_kind(reason)] += 1
            else:
                decoded[names[partition]] += 1
    elapsed = time.perf_counter() - start
    summary = index.summary()
    summary.update({
        "size": size,
        "selected": selected.num_rows,
        "images": {
            "read": n,
            "ok": sum(decoded.values()),
            "rejected": sum(reasons.values()),
            "ok_per_partition": {name: decoded.get(name, 0) for name in names.values()},
            "rejected_by_reason": dict(reasons.most_common()),
        },
        "seconds": round(elapsed, 3),
        "images_per_s": round(n / elapsed, 1) if elapsed > 0 else None,
    })
    summary["rejected_by_reason"] = count_by_reason(index.rejected)
    return summary
