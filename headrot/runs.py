"""A run root's bookkeeping: run.json, input fingerprints and stage claims.

run.json records, per stage, the resolved config, the library versions and a
fingerprint of the stage's inputs (data files, checkpoints, upstream stages,
config). A stage refuses to write into a root whose earlier outputs came from
other inputs: mixing them would silently produce a dataset no one asked for.
"""
from __future__ import annotations

import hashlib
import json
import logging
import platform
import re
import time
from typing import Any, Iterable

from headrot import storage, tables

log = logging.getLogger(__name__)

RUN_JSON = "run.json"


# ---------------------------------------------------------------------------
# Fingerprints


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_uris(uris: Iterable[str]) -> str:
    """sha256 over the named objects' contents (missing ones hash as absent)."""
    h = hashlib.sha256()
    for uri in uris:
        h.update(redact_uri(uri).rsplit("/", 1)[-1].encode() + b"\0")
        if storage.exists(uri):
            h.update(hashlib.sha256(storage.read_bytes(uri)).digest())
        else:
            h.update(b"<absent>")
    return h.hexdigest()


def fingerprint(parts: dict[str, Any]) -> str:
    """One stable digest of a stage's inputs (strings, numbers, nested dicts)."""
    return hash_bytes(json.dumps(parts, sort_keys=True, default=str).encode())[:16]


# ---------------------------------------------------------------------------
# Redaction: nothing secret ever reaches run.json, logs or reports

_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")


def redact_uri(uri: str) -> str:
    """Drop any user:password@ part of a URI (credentials never belong in a URI we record)."""
    return _USERINFO.sub(r"\1", uri)


# ---------------------------------------------------------------------------
# run.json


def versions() -> dict[str, str]:
    import numpy
    import pyarrow
    import ray
    import torch

    import headrot

    return {
        "headrot": headrot.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "pyarrow": pyarrow.__version__,
        "numpy": numpy.__version__,
    }


def read_run_json(root: str) -> dict[str, Any]:
    uri = storage.join(root, RUN_JSON)
    return storage.read_json(uri) if storage.exists(uri) else {"stages": {}}


def claim_stage(root: str, stage: str, digest: str, config: dict[str, Any], out_dir: str,
                replace: bool = False) -> bool:
    """Record that `stage` in `root`, writing `out_dir`, is made from inputs with fingerprint `digest`.

    Returns True when the stage was already recorded with the same fingerprint
    (a rerun or a resume), False when it is new. Raises ValueError when `out_dir`
    still holds outputs made from different inputs; once the user has deleted them,
    the new inputs take over the record (there is nothing left to mix with).
    `replace`: a stage that rewrites every file it owns in `out_dir` (evaluate) takes the
    record over at once: nothing of the old inputs can stay mixed with the new.
    """
    run = read_run_json(root)
    stages = run.setdefault("stages", {})
    previous = stages.get(stage)
    if previous is not None and previous.get("fingerprint") != digest and replace:
        log.info("%s: replacing its record of other inputs (fingerprint %s, now %s)",
                 stage, previous.get("fingerprint"), digest)
        previous = None
    if previous is not None and previous.get("fingerprint") != digest:
        if storage.list_files(out_dir) or storage.completion(out_dir) is not None:
            raise ValueError(
                f"{redact_uri(root)} already holds a '{stage}' stage made from other inputs "
                f"(fingerprint {previous.get('fingerprint')}, now {digest}: the data, a model or the "
                f"config changed). Use a new --out root, or delete {redact_uri(out_dir)} "
                "(and the outputs of the stages after it) to redo it."
            )
        log.info("%s: %s is empty; redoing it from new inputs (fingerprint %s, was %s)",
                 stage, redact_uri(out_dir), digest, previous.get("fingerprint"))
        previous = None
    stages[stage] = {
        "fingerprint": digest,
        "config": _redact(config),
        "versions": versions(),
        "claimed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    storage.write_json(storage.join(root, RUN_JSON), run)
    return previous is not None


def completed(stage: str, out_dir: str, digest: str, count_key: str, noun: str) -> dict[str, Any] | None:
    """The summary of `out_dir` marked `skipped` when its _SUCCESS carries `digest` (the stage
    is complete and its inputs unchanged: nothing to do), else None."""
    done = storage.completion(out_dir)
    if done is None or done.get("fingerprint") != digest:
        return None
    log.info("%s: %s is complete (%d %s); nothing to do", stage, redact_uri(out_dir), done.get(count_key, 0), noun)
    return {**done, "skipped": True}


# ---------------------------------------------------------------------------
# Reading a complete stage: the rows a reader sees are the rows the stage made


class StageMismatch(RuntimeError):
    """A complete stage's folder shows other rows than the stage recorded in its _SUCCESS."""


def stage_files(stage_dir: str, reader: str, producer: str, rows_key: str) -> list[str]:
    """The data files of a complete stage, once the rows in them match its _SUCCESS.

    The stage recorded, from its own accounting, how many rows (summary[rows_key]) in how many
    files (summary["shards"]) it made. A reader computing on whatever a listing shows would
    silently use fewer rows (a listing that lags or misses a file: issue 13) or more (a file
    added after the stage completed). Every reader of a stage's output goes through here and
    reads exactly the files returned; `reader` and `producer` are the stages' names, for the
    messages. Rows are counted from the files' footers, before any work."""
    where = redact_uri(stage_dir)
    summary = storage.completion(stage_dir)
    if summary is None:
        raise ValueError(f"{where} is not complete (no _SUCCESS): run `headrot {producer}` first")
    files = storage.list_files(stage_dir, ".parquet")
    rows = sum(tables.count_rows(f) for f in files)
    want_rows, want_files = summary.get(rows_key), summary.get("shards", len(files))
    if rows != want_rows or len(files) != want_files:
        raise StageMismatch(
            f"{reader}: {where} holds {rows} rows in {len(files)} files as listed now, but its "
            f"_SUCCESS records {want_rows} rows ('{rows_key}') in {want_files} files ('shards'); "
            f"{reader} will not compute on other rows than `headrot {producer}` made. Rerun the same "
            "command: on an object store whose listing lagged, it will have caught up. If the "
            f"counts still differ, {where} was changed after it was completed: delete it and the "
            f"outputs of the stages after it, and rerun `headrot {producer}`.")
    return files


def _redact(obj: Any) -> Any:
    if isinstance(obj, str):
        return redact_uri(obj)
    if isinstance(obj, dict):
        return {k: _redact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_redact(v) for v in obj]
    return obj
