"""One writer per run root: `<root>/_LOCK`.

Two jobs writing into the same root at once would interleave shard files, race
on run.json and could mark a stage `_SUCCESS` over the other's half-written
work. Every entry point that writes a root (`run_pipeline`, `run_embed`,
`run_fit`, `run_render`) holds this lock for its whole run; a second job is
refused with a message naming the root and the owner (host, pid, what, since).

    {"host", "pid", "what", "token", "started", "heartbeat"}   (JSON, no secrets)

- Local roots: the lock file is created with O_CREAT|O_EXCL (exactly one creator
  wins). Takeover of a stale lock happens under flock() on the root folder, so
  two local processes can never both take over.
- s3:// roots: a conditional PUT (`If-None-Match: *`, s3fs `mode="create"`; AWS S3
  and SeaweedFS honour it): exactly one creator wins; the winner then reads the
  lock back and checks its token. Takeover of a stale lock re-reads the owner's
  token just before deleting it and then competes in the same conditional PUT;
  the one window left is between that re-read and the delete (milliseconds), in
  which a second taker could delete a lock the first had just created: both
  takers must have judged the same lock stale within that window.
- Stale: the owner runs on this host and its pid is gone (a killed driver), or
  its heartbeat (refreshed every STALE_AFTER_S / 4 by a daemon thread) is older
  than STALE_AFTER_S (another host that died). Env HEADROT_LOCK_STALE_S
  (default 600) sets it; HEADROT_LOCK_WAIT_S (default 0) makes a second job wait
  that long for the lock instead of failing at once.
- Ours: a lock naming this very process that no thread holds any more (its release
  failed, e.g. the store was down) is stale too.
- Re-entrant per thread: `run_pipeline` holds it while its stages take it again.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Callable, Iterator

from headrot import storage
from headrot.runs import redact_uri

log = logging.getLogger(__name__)

LOCK = "_LOCK"


def stale_after_s() -> float:
    return float(os.environ.get("HEADROT_LOCK_STALE_S", "600"))


def wait_s() -> float:
    return float(os.environ.get("HEADROT_LOCK_WAIT_S", "0"))


class LockHeld(ValueError):
    """The root is held by another live run (a ValueError: the CLI prints it as one line)."""


# (root key, thread id) -> [depth, RunLock]
_HELD: dict[tuple[str, int], list] = {}
_HELD_GUARD = threading.Lock()
# Tokens of the locks this process holds right now (any thread).
_LIVE_TOKENS: set[str] = set()


def _key(root: str) -> str:
    return root.rstrip("/") if storage.is_remote(root) else os.path.realpath(root)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    def __init__(self, root: str, what: str):
        self.root = root.rstrip("/")
        self.uri = storage.join(self.root, LOCK)
        self.what = what
        self.token = uuid.uuid4().hex
        self.owner: dict[str, Any] = {
            "host": socket.gethostname(), "pid": os.getpid(), "what": what, "token": self.token,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- record ----------------------------------------------------------------

    def _record(self) -> bytes:
        return json.dumps({**self.owner, "heartbeat": time.time()}, sort_keys=True).encode()

    def _read(self) -> tuple[dict[str, Any] | None, float | None]:
        """(owner record or None when unreadable, modification time) of the current lock;
        (None, None) when there is no lock."""
        fs, path = storage.filesystem(self.uri)
        try:
            data = storage.read_bytes(self.uri)
        except FileNotFoundError:
            return None, None
        try:
            mtime = fs.modified(path).timestamp()
        except (FileNotFoundError, OSError, NotImplementedError):
            mtime = time.time()
        try:
            record = json.loads(data)
            if not isinstance(record, dict):
                record = None
        except ValueError:
            record = None
        return record, mtime

    def _stale(self, record: dict[str, Any] | None, mtime: float) -> bool:
        if record is None:
            # Created but not yet written (or its writer died in between): give it a moment.
            return time.time() - mtime > 5.0
        if record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int):
            if not _pid_alive(record["pid"]):
                return True
            if record["pid"] == os.getpid():
                # Ours, but not held by any thread: a release that failed (store down).
                return record.get("token") not in _LIVE_TOKENS
        beat = record.get("heartbeat")
        beat = beat if isinstance(beat, (int, float)) else mtime
        return time.time() - beat > stale_after_s()

    # -- create / remove -------------------------------------------------------

    def _create(self) -> bool:
        """Create the lock if absent; True when this process made it."""
        data = self._record()
        if not storage.is_remote(self.uri):
            _, path = storage.filesystem(self.uri)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return True
        fs, path = storage.filesystem(self.uri)
        try:
            fs.pipe_file(path, data, mode="create")   # PUT with If-None-Match: *
        except (FileExistsError, OSError) as exc:
            if isinstance(exc, FileExistsError) or "pre-condition" in str(exc).lower() \
                    or "precondition" in str(exc).lower():
                return False
            raise
        record, _ = self._read()                      # read back: is it ours?
        return bool(record and record.get("token") == self.token)

    def _remove_if(self, token: str | None) -> None:
        record, _ = self._read()
        if record is not None and record.get("token") != token:
            return
        fs, path = storage.filesystem(self.uri)
        try:
            fs.rm(path)
        except FileNotFoundError:
            pass

    @contextlib.contextmanager
    def _local_guard(self) -> Iterator[None]:
        if storage.is_remote(self.uri):
            yield
            return
        fd = os.open(self.root, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    # -- public ----------------------------------------------------------------

    def acquire(self) -> None:
        if not storage.is_remote(self.root):
            os.makedirs(self.root, exist_ok=True)
        # Registered before the lock can exist: a record with this token is never judged
        # "ours but not held" by another thread of this process.
        _LIVE_TOKENS.add(self.token)
        try:
            self._acquire()
        except BaseException:
            _LIVE_TOKENS.discard(self.token)
            raise
        self._thread = threading.Thread(target=self._heartbeat, name="headrot-lock", daemon=True)
        self._thread.start()

    def _acquire(self) -> None:
        deadline = time.time() + wait_s()
        while True:
            with self._local_guard():
                if self._create():
                    break
                record, mtime = self._read()
                if record is None and mtime is None:
                    continue                          # released meanwhile: try again
                if self._stale(record, mtime):
                    log.warning("lock: taking over the stale lock of %s (%s)", redact_uri(self.root),
                                _describe(record))
                    self._remove_if(record.get("token") if record else None)
                    continue
            if time.time() >= deadline:
                raise LockHeld(
                    f"{redact_uri(self.root)} is in use by another headrot run ({_describe(record)}); "
                    f"refusing to write into it at the same time. Wait for that run to end, use another "
                    f"--out root, or, if it is dead, delete {redact_uri(self.uri)} (a lock without a "
                    f"heartbeat for {stale_after_s():.0f}s, or of a dead pid on this host, is taken over "
                    "automatically)."
                )
            time.sleep(min(2.0, max(0.1, deadline - time.time())))

    def _heartbeat(self) -> None:
        every = max(0.5, stale_after_s() / 4)
        while not self._stop.wait(every):
            try:
                record, _ = self._read()
                if not record or record.get("token") != self.token:
                    log.error("lock: %s is no longer ours (%s)", redact_uri(self.uri), _describe(record))
                    return
                storage.write_bytes(self.uri, self._record())
            except Exception as exc:  # a missed beat is not fatal; staleness allows several
                log.warning("lock: heartbeat of %s failed: %s", redact_uri(self.uri), exc)

    def release(self) -> None:
        _LIVE_TOKENS.discard(self.token)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self._remove_if(self.token)
        except Exception as exc:  # never mask the run's own error; a rerun takes the lock over
            log.warning("lock: could not remove %s: %s", redact_uri(self.uri), exc)


def _describe(record: dict[str, Any] | None) -> str:
    if not record:
        return "owner unknown: the lock file is unreadable"
    beat = record.get("heartbeat")
    ago = f", last heartbeat {time.time() - beat:.0f}s ago" if isinstance(beat, (int, float)) else ""
    return (f"'{record.get('what')}' on host {record.get('host')}, pid {record.get('pid')}, "
            f"since {record.get('started')}{ago}")


@contextlib.contextmanager
def run_lock(root: str, what: str) -> Iterator[None]:
    """Hold `<root>/_LOCK` for the duration (re-entrant in the same thread)."""
    key = (_key(root), threading.get_ident())
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None:
            held[0] += 1
    if held is not None:
        try:
            yield
        finally:
            with _HELD_GUARD:
                held[0] -= 1
        return
    lock = RunLock(root, what)
    lock.acquire()
    with _HELD_GUARD:
        _HELD[key] = [1, lock]
    try:
        yield
    finally:
        with _HELD_GUARD:
            _HELD.pop(key, None)
        lock.release()


def locked(root_of: Callable[[Any], str], what: str):
    """Decorator for a stage entry point `fn(config)`: hold the root's lock while it runs."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(config, *args, **kwargs):
            with run_lock(root_of(config), what):
                return fn(config, *args, **kwargs)
        return inner
    return wrap
