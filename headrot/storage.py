"""Where a run's files live: a local folder or an s3:// prefix, behind one small API.

Everything that touches the run root goes through here, so that
- paths can never leave the root (ids from input files are untrusted: `safe_name`),
- the same code reads and writes local folders and object storage (fsspec/s3fs),
- credentials come only from the environment or the instance role: nothing here
  accepts, logs or stores a key.

For S3-compatible servers set AWS_ENDPOINT_URL (botocore reads it; so does s3fs).
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from typing import Any, Callable, TypeVar

import fsspec
import pyarrow.fs as pafs

SUCCESS = "_SUCCESS"
log = logging.getLogger(__name__)
T = TypeVar("T")

# One path component: letters, digits, dot, dash, underscore; no leading dot
# (which also rules out '.' and '..').
_SAFE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")


# ---------------------------------------------------------------------------
# URIs and filesystems


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(fsspec filesystem, path inside it) for a local path or URI such as s3://bucket/prefix."""
    if uri.startswith("s3://") or uri.startswith("s3a://"):
        fs = fsspec.filesystem("s3", **_s3_options())
        return fs, fs._strip_protocol(uri)
    if is_remote(uri):
        # Other object stores (gs://, az://...): the same rule as s3, see _NO_LISTINGS_CACHE.
        return fsspec.core.url_to_fs(uri, **_NO_LISTINGS_CACHE)
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def arrow_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The same storage as a pyarrow filesystem (what Ray Data and pyarrow.parquet take)."""
    fs, path = filesystem(uri)
    if not is_remote(uri):
        return pafs.LocalFileSystem(), os.path.abspath(path)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


# Listings are never cached: every listing and existence check asks the store what is there
# now. A run root is written by many processes (Ray's write tasks, a rerun, another headrot
# process), and fsspec's listings cache is per process: invalidating a path after our own
# writes cannot see theirs. With the cache on, a resumed stage's totals came from the listing
# taken before its work (issue 13: "rows in 1200 != written 1024"), and s3fs answers `info`
# and `exists` from a cached parent listing too, so even a file read by name was "missing".
# The cost is one LIST or HEAD per call, small beside the data a stage moves. fsspec caches
# filesystem instances per option set, so the option is part of every set headrot builds
# (arrow_filesystem wraps these same instances for pyarrow and Ray Data).
_NO_LISTINGS_CACHE: dict[str, Any] = {"use_listings_cache": False}


def _s3_options() -> dict[str, Any]:
    # Credentials: never passed here. botocore finds them in the environment,
    # the shared config files or the instance / pod role, in its usual order.
    options: dict[str, Any] = dict(_NO_LISTINGS_CACHE)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    # fsspec caches one instance per set of options (here: per endpoint), so the
    # connection pool is reused across calls; botocore refreshes role credentials
    # inside it on its own.
    return options


# ---------------------------------------------------------------------------
# Paths inside a run root


def safe_name(name: str, what: str = "name") -> str:
    """Refuse a path component that could escape its folder or surprise a filesystem."""
    if not isinstance(name, str) or not _SAFE.fullmatch(name):
        raise ValueError(
            f"unsafe {what} {name!r}: only letters, digits, '.', '_' and '-' are allowed "
            "(no slashes, no leading dot)"
        )
    return name


def join(root: str, *parts: str) -> str:
    """root/part/part... where every part is a checked component (see safe_name)."""
    for part in parts:
        for piece in part.split("/"):
            safe_name(piece, "path component")
    return "/".join([root.rstrip("/"), *parts])


# ---------------------------------------------------------------------------
# Whole-object reads and writes


# ---------------------------------------------------------------------------
# Retries: an object store that drops off for a while (restart, network blip)
# must not fail a long job. Connection-level errors are retried with capped
# exponential backoff; anything else (missing object, access denied) is not.


class StorageUnavailable(OSError):
    """The object store stayed unreachable through every retry."""


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                        FileExistsError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError, HTTPClientError
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return True
    if _server_busy(exc):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and _transient(cause)


# S3's own "try again" answers: a 5xx, or these codes (AWS's SDKs retry them too). A store that is
# restarting lists its buckets a moment before it serves their objects (SeaweedFS answered such a
# GetObject with 500 InternalError in CI): the same outage as a refused connection.
_BUSY_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}


def _server_busy(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    response = exc.response or {}
    status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
    return status >= 500 or (response.get("Error") or {}).get("Code") in _BUSY_CODES


def _retrying(what: str, uri: str, fn: Callable[[], T]) -> T:
    """fn(), retried on transient errors for remote URIs: HEADROT_IO_ATTEMPTS tries (default 6),
    waits of 0.5 s doubling up to HEADROT_IO_BACKOFF_MAX_S (default 10 s)."""
    if not is_remote(uri):
        return fn()
    attempts = max(1, int(os.environ.get("HEADROT_IO_ATTEMPTS", "6")))
    cap = float(os.environ.get("HEADROT_IO_BACKOFF_MAX_S", "10"))
    started = time.time()
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if not _transient(exc):
                raise
            if attempt == attempts:
                bucket = uri.split("://", 1)[1].split("/", 1)[0]
                endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS"
                raise StorageUnavailable(
                    f"storage: {what} {_redacted(uri)} failed: bucket '{bucket}' at {endpoint} was "
                    f"unreachable for {attempts} attempts over {time.time() - started:.0f}s "
                    f"({type(exc).__name__}: {exc}). Files written before this point are complete "
                    "and kept; the stage is not marked _SUCCESS. Rerun the same command once the "
                    "store is back: it redoes only what is missing."
                ) from exc
            wait = min(cap, 0.5 * 2 ** (attempt - 1))
            log.warning("storage: %s %s failed (%s); retry %d/%d in %.1fs",
                        what, _redacted(uri), type(exc).__name__, attempt, attempts - 1, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def _redacted(uri: str) -> str:
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1", uri)


def write_bytes(uri: str, data: bytes) -> None:
    """Write one object whole. Local files go through a temporary name and a rename,
    so a reader never sees half a file; an S3 PUT is atomic by itself (retried while
    the store is unreachable)."""
    _retrying("writing", uri, lambda: _write_bytes(uri, data))


def _write_bytes(uri: str, data: bytes) -> None:
    fs, path = filesystem(uri)
    parent = path.rsplit("/", 1)[0]
    if not is_remote(uri):
        fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        with fs.open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    else:
        with fs.open(path, "wb") as f:
            f.write(data)


def read_bytes(uri: str) -> bytes:
    def read() -> bytes:
        fs, path = filesystem(uri)
        with fs.open(path, "rb") as f:
            return f.read()
    return _retrying("reading", uri, read)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return _retrying("checking", uri, lambda: fs.exists(path))


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def _listing(uri: str, kind: str) -> list[str]:
    """Full URIs of the entries of `kind` (file | directory) directly under `uri`; [] if absent.
    Asks the store every time (no listings cache on remote filesystems: see `filesystem`)."""
    fs, path = filesystem(uri)
    try:
        entries = _retrying("listing", uri, lambda: fs.ls(path, detail=True))
    except FileNotFoundError:
        return []
    scheme = uri.split("://", 1)[0] + "://" if is_remote(uri) else ""
    return [scheme + e["name"].rstrip("/") for e in entries if e.get("type") == kind]


def _name(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


def list_files(uri: str, suffix: str = "") -> list[str]:
    """Full URIs of the files directly under `uri` ending in `suffix`, sorted; [] if absent.
    Hidden names (`.tmp-*` partial writes, `_SUCCESS`, `_LOCK`, `_mean_faces/`) are not listed."""
    return sorted(u for u in _listing(uri, "file")
                  if _name(u).endswith(suffix) and not _name(u).startswith((".", "_")))


def list_dirs(uri: str, prefix: str = "") -> list[str]:
    """Full URIs of the folders directly under `uri` whose names start with `prefix`, sorted."""
    return sorted(u for u in _listing(uri, "directory") if _name(u).startswith(prefix))


# ---------------------------------------------------------------------------
# Stage completion markers


def mark_complete(stage_uri: str, summary: dict[str, Any]) -> None:
    """Write <stage>/_SUCCESS last: a stage folder with it is complete."""
    write_json(join(stage_uri, SUCCESS), summary)


def completion(stage_uri: str) -> dict[str, Any] | None:
    """The summary a complete stage recorded, or None when the stage is not complete."""
    uri = join(stage_uri, SUCCESS)
    if not exists(uri):
        return None
    return read_json(uri)
