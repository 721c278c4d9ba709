"""Reliability: each guarantee proved by a fault that would break it without its protection.

- worker faults: a model actor SIGKILLed mid-shard (Ray restarts it, retries the shard);
- driver faults: the whole job SIGKILLed mid-stage, then rerun (resumes, no duplicates);
- partial writes: a write killed half-way never shows up as a data file;
- storage faults: the S3 server stopped during a write (retried with backoff), or for good
  (a clear error naming the bucket; a rerun completes);
- concurrency: two runs into one root (the second is refused; stale locks are taken over).

Jobs that get killed run in a subprocess with a Ray of their own (unique --temp-dir) in a
session of their own; the test kills exactly those processes, by PID.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from headrot import lock as runlock
from headrot import storage, tables
from headrot.stages.embed import EmbedConfig, run_embed
from headrot.synth.writer import write_synthetic_celeba
from tests.services import plan_s3_server

ROOT = Path(__file__).resolve().parents[1]
N = 40           # images
SHARD = 8        # rows per shard -> 5 shards

# A driver with a Ray of its own: ray.init before the CLI, so the CLI joins it (init_ray).
DRIVER = r"""
import sys, ray
ray.init(num_cpus=2, include_dashboard=False, _temp_dir=sys.argv[1], configure_logging=False,
         object_store_memory=150 * 1024 ** 2)
from headrot.cli import run
run(sys.argv[2:])
"""


# ---------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("celeba")
    write_synthetic_celeba(str(root), N, seed=5, images_per_identity=5)
    return root


def embed_args(data, out, generator) -> list[str]:
    return ["embed", "--data", str(data), "--out", str(out), "--generator", generator,
            "--shard-size", str(SHARD), "--batch-size", str(SHARD), "--steps", "2"]


def embed_config(data, out, generator) -> EmbedConfig:
    """The in-process twin of embed_args (same fingerprint)."""
    return EmbedConfig(data=str(data), out=str(out), generator=generator, shard_size=SHARD,
                       batch_size=SHARD, steps=2)


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def processes_of(driver_pid: int, temp_dir: str) -> set[int]:
    """The driver, every process naming our unique Ray temp dir, and all their descendants."""
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    found = {driver_pid} | {p for p in pids if temp_dir in _cmdline(p)}
    changed = True
    while changed:
        changed = False
        for p in pids:
            if p not in found and _ppid(p) in found:
                found.add(p)
                changed = True
    found.discard(os.getpid())
    return found


def kill_all(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Job:
    """`headrot ...` in a subprocess with its own Ray, in its own session."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None):
        self.temp_dir = tempfile.mkdtemp(prefix="hr9-", dir="/tmp")   # short: Ray's socket paths
        self.log = open(Path(self.temp_dir) / "driver.log", "wb")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        full_env.update({"RAY_DATA_DISABLE_PROGRESS_BARS": "1", **(env or {})})
        self.proc = subprocess.Popen(
            ["nice", "-n", "19", sys.executable, "-c", DRIVER, self.temp_dir, *args],
            cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (Path(self.temp_dir) / "driver.log").read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.stop()

    def kill(self) -> None:
        """SIGKILL the driver and its Ray (the whole job dies at once, like a lost node)."""
        pids = processes_of(self.proc.pid, self.temp_dir)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        kill_all(pids)
        self.proc.wait(30)

    def stop(self) -> None:
        """Whatever this job left running (Ray's daemons outlive a killed driver)."""
        for _ in range(3):
            pids = processes_of(self.proc.pid, self.temp_dir) - {self.proc.pid}
            if not pids:
                break
            kill_all(pids)
            time.sleep(0.5)
        self.log.close()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def jobs():
    """Jobs started by a test; whatever they left running is stopped, their files removed."""
    started: list[Job] = []
    yield started
    for job in started:
        job.cleanup()


def wait_for(predicate, timeout: float, what: str, job: Job | None = None) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if job is not None and job.proc.poll() is not None:
            raise AssertionError(f"job exited ({job.proc.returncode}) before {what}:\n{job.output()[-4000:]}")
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f":\n{job.output()[-4000:]}" if job else ""))
        time.sleep(0.2)


def latent_ids(root: str) -> list[str]:
    return tables.read_parquet_dir(storage.join(root, "latents")).column("image_id").to_pylist()


# ---------------------------------------------------------------------------
# 1. Worker faults


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_actor_sigkilled_mid_shard_is_restarted_and_every_row_written_once(dataset, generator_ckpt, tmp_path, jobs):
    """PoolPlan's max_restarts/max_task_retries: the killed actor's shard is retried."""
    out = tmp_path / "run"
    marker = tmp_path / "killed"
    job = Job(embed_args(dataset, out, generator_ckpt), env={"HEADROT_FAULT": f"kill:2:{marker}"})
    jobs.append(job)
    rc = job.wait(480)
    output = job.output()
    assert rc == 0, output[-5000:]
    assert marker.exists(), "the actor was never killed"
    killed_pid = int(marker.read_text())
    assert not Path(f"/proc/{killed_pid}").exists() or "ray::" not in _cmdline(killed_pid)
    ids = latent_ids(str(out))
    assert len(ids) == len(set(ids)) == N                       # every row, exactly once
    done = storage.completion(storage.join(str(out), "latents"))
    assert done is not None and done["written"] == N and done["shards"] == N // SHARD
    assert not (out / runlock.LOCK).exists()                    # released at the end


# ---------------------------------------------------------------------------
# 2 + 8. Driver faults (and a second run refused while the first holds the root)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_job_killed_mid_stage_resumes_only_missing_shards(ray_cluster, dataset, generator_ckpt, tmp_path, jobs):
    out = tmp_path / "run"
    latents = out / "latents"
    marker = tmp_path / "hung"
    # The pool's single actor hangs on its 4th shard: the 3 shards before it are done, and their
    # writes (a separate Ray Data task after the actor) land soon after the marker, not before it.
    # Wait for all 3, so nothing of the live job is still in flight when the directory is listed.
    job = Job(embed_args(dataset, out, generator_ckpt), env={"HEADROT_FAULT": f"hang:4:{marker}"})
    jobs.append(job)
    try:
        wait_for(lambda: marker.exists() and len(list(latents.glob("part-*.parquet"))) >= 3,
                 420, "the job to hang mid-stage with 3 shards written", job)

        # 8: while the job runs, a second run into the same root is refused, naming root and owner.
        lock_owner = json.loads((out / runlock.LOCK).read_text())
        assert lock_owner["pid"] == job.proc.pid
        with pytest.raises(runlock.LockHeld) as info:
            run_embed(embed_config(dataset, out, generator_ckpt))
        message = str(info.value)
        assert str(out) in message and f"pid {job.proc.pid}" in message and "'embed'" in message
        before = sorted(p.name for p in latents.iterdir())

        job.kill()
    finally:
        job.stop()
    assert sorted(p.name for p in latents.iterdir()) == before   # the refused run wrote nothing

    # Killed mid-stage: some shards, no _SUCCESS anywhere it does not belong.
    written = sorted(latents.glob("part-*.parquet"))
    assert len(written) == 3 < N // SHARD
    assert not (latents / storage.SUCCESS).exists()
    for f in written:                                            # every file there is whole
        tables.read_parquet(str(f))
    # A write the kill cut short would be a temporary: plant one; nothing may read it.
    (latents / ".tmp-0123456789abcdef").write_bytes(b"PAR1 half a file")
    assert all(".tmp-" not in u for u in storage.list_files(str(latents)))

    # The rerun takes over the dead job's lock and redoes only the missing shards.
    assert (out / runlock.LOCK).exists()
    summary = run_embed(embed_config(dataset, out, generator_ckpt))
    assert summary["shards_this_run"] == N // SHARD - len(written)
    ids = latent_ids(str(out))
    assert len(ids) == len(set(ids)) == N
    assert summary["written"] == N and (latents / storage.SUCCESS).exists()
    assert not (out / runlock.LOCK).exists()


def test_a_write_cut_short_is_never_a_data_file(tmp_path, monkeypatch):
    """Local writes go to `.tmp-*` and are renamed when whole: a crash mid-write leaves no
    file under the real name (so `pending` redoes the shard) and list_files skips the temporary."""
    stage = tmp_path / "run" / "latents"
    table = pa.table({"image_id": [f"{i:06d}.jpg" for i in range(1000)]})
    uri = storage.join(str(stage), "part-00000.parquet")

    from fsspec.implementations.local import LocalFileSystem

    real_open = LocalFileSystem.open

    class Killed(BaseException):
        pass

    def dying_open(self, path, mode="rb", **kw):
        f = real_open(self, path, mode, **kw)
        if "w" in mode:
            real_write = f.write

            def write(data):
                real_write(data[: len(data) // 2])
                f.flush()
                raise Killed()   # the process "dies" half-way through the bytes
            f.write = write
        return f

    monkeypatch.setattr(LocalFileSystem, "open", dying_open)
    with pytest.raises(Killed):
        tables.write_parquet(uri, table)
    monkeypatch.undo()
    assert not Path(uri).exists()
    leftovers = [p.name for p in stage.iterdir()]
    assert leftovers and all(n.startswith(".tmp-") for n in leftovers)
    assert storage.list_files(str(stage), ".parquet") == []
    from headrot.stages.sharding import pending

    assert pending(str(stage), ["part-00000"]) == ["part-00000"]
    tables.write_parquet(uri, table)                             # the redo
    assert storage.list_files(str(stage), ".parquet") == [uri]
    assert tables.read_parquet(uri).num_rows == 1000


# ---------------------------------------------------------------------------
# 3. Storage faults: our own S3 server, stopped and started


@pytest.fixture
def own_s3(tmp_path, monkeypatch):
    server = plan_s3_server(tmp_path / "s3")
    server.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
    monkeypatch.setenv("HEADROT_IO_BACKOFF_MAX_S", "2")
    bucket = server.make_bucket("faults")
    yield server, bucket
    server.stop()


def _parquet_bytes(n: int) -> pa.Table:
    return pa.table({"image_id": [f"{i:06d}.jpg" for i in range(n)], "x": np.arange(n, dtype=np.float32)})


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_s3_outage_during_writes_is_retried_with_backoff(own_s3, monkeypatch):
    server, bucket = own_s3
    monkeypatch.setenv("HEADROT_IO_ATTEMPTS", "8")    # up to ~11 s of backoff, plus botocore's own
    root = storage.join(bucket, "run")
    tables.write_parquet(storage.join(root, "latents", "part-00000.parquet"), _parquet_bytes(10))

    server.stop()
    restarter = threading.Timer(12.0, server.start)   # the store comes back while we retry
    restarter.start()
    try:
        t0 = time.time()
        tables.write_parquet(storage.join(root, "latents", "part-00001.parquet"), _parquet_bytes(20))
        storage.mark_complete(storage.join(root, "latents"), {"rows": 30})
        waited = time.time() - t0
    finally:
        restarter.join()
    assert waited > 11.0                                 # it really waited for the outage
    files = storage.list_files(storage.join(root, "latents"), ".parquet")
    assert [f.rsplit("/", 1)[-1] for f in files] == ["part-00000.parquet", "part-00001.parquet"]
    assert tables.read_parquet(files[1]).num_rows == 20
    assert storage.completion(storage.join(root, "latents")) == {"rows": 30}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_s3_down_for_good_fails_clearly_and_a_rerun_completes(own_s3, monkeypatch):
    server, bucket = own_s3
    monkeypatch.setenv("HEADROT_IO_ATTEMPTS", "2")
    root = storage.join(bucket, "run")
    stage = storage.join(root, "latents")
    names = ["part-00000", "part-00001", "part-00002"]

    def run_stage() -> None:
        """A driver-side stage in miniature: pending shards, one file each, then _SUCCESS."""
        from headrot.stages.sharding import pending

        with runlock.run_lock(root, "test"):
            for name in pending(stage, names):
                tables.write_parquet(storage.join(stage, f"{name}.parquet"), _parquet_bytes(5))
                if name == "part-00000":
                    server.stop()                        # the store goes away for good
            storage.mark_complete(stage, {"rows": 15})

    with pytest.raises(storage.StorageUnavailable) as info:
        run_stage()
    message = str(info.value)
    assert "bucket 'faults'" in message and "part-00001.parquet" in message
    assert "Rerun" in message and "not marked _SUCCESS" in message
    assert server.secret_key not in message

    server.start()
    assert storage.completion(stage) is None             # nothing marked complete
    assert [f.rsplit("/", 1)[-1] for f in storage.list_files(stage)] == ["part-00000.parquet"]
    # The rerun (the lock left behind by the failed run is ours: same host, live pid -> it was
    # released or is taken over) writes only the missing shards and completes.
    run_stage_calls = []
    real_write = tables.write_parquet
    monkeypatch.setattr(tables, "write_parquet", lambda uri, t, **kw: (run_stage_calls.append(uri),
                                                                       real_write(uri, t, **kw))[1])
    server_stop = server.stop
    monkeypatch.setattr(server, "stop", lambda: None)     # no outage this time
    run_stage()
    monkeypatch.setattr(server, "stop", server_stop)
    assert [u.rsplit("/", 1)[-1] for u in run_stage_calls] == ["part-00001.parquet", "part-00002.parquet"]
    assert storage.completion(stage) == {"rows": 15}


def test_only_connection_errors_are_retried(monkeypatch):
    """A missing object or a refused key is an answer, not an outage: no retries, no waiting."""
    calls = []

    def missing():
        calls.append(1)
        raise FileNotFoundError("s3://b/x")

    monkeypatch.setattr(storage.time, "sleep", lambda s: calls.append(("sleep", s)))
    with pytest.raises(FileNotFoundError):
        storage._retrying("reading", "s3://b/x", missing)
    assert calls == [1]

    from botocore.exceptions import EndpointConnectionError

    calls.clear()
    monkeypatch.setenv("HEADROT_IO_ATTEMPTS", "5")

    def down():
        calls.append(1)
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1/b/x")

    with pytest.raises(storage.StorageUnavailable, match="bucket 'b'"):
        storage._retrying("writing", "s3://b/x", down)
    sleeps = [c[1] for c in calls if isinstance(c, tuple)]
    assert calls.count(1) == 5 and sleeps == [0.5, 1.0, 2.0, 4.0]    # exponential backoff
    monkeypatch.setenv("HEADROT_IO_BACKOFF_MAX_S", "1.5")
    calls.clear()
    with pytest.raises(storage.StorageUnavailable):
        storage._retrying("writing", "s3://b/x", down)
    assert [c[1] for c in calls if isinstance(c, tuple)] == [0.5, 1.0, 1.5, 1.5]   # capped


def test_the_stores_try_again_answers_are_retried_and_its_refusals_are_not(monkeypatch):
    """S3 answers "try again" with a 5xx (a restarting SeaweedFS gave 500 InternalError in CI):
    retried like a refused connection, as s3fs hands it over (an OSError caused by the ClientError).
    A refusal (403, 404, a bad request) is an answer."""
    from botocore.exceptions import ClientError
    from s3fs.errors import translate_boto_error

    def answer(code, status, message="m"):
        return translate_boto_error(ClientError(
            {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
            "GetObject"))

    busy = [answer("InternalError", 500, "We encountered an internal error, please try again."),
            answer("SlowDown", 503), answer("ServiceUnavailable", 503), answer("NotImplementedHere", 502)]
    refused = [answer("AccessDenied", 403), answer("NoSuchKey", 404), answer("InvalidArgument", 400)]
    assert all(storage._transient(e) for e in busy), busy
    assert not any(storage._transient(e) for e in refused), refused

    calls = []
    monkeypatch.setattr(storage.time, "sleep", lambda s: calls.append(("sleep", s)))

    def flaky():
        calls.append(1)
        if calls.count(1) < 3:
            raise busy[0]
        return b"data"

    assert storage._retrying("reading", "s3://b/x", flaky) == b"data"
    assert calls == [1, ("sleep", 0.5), 1, ("sleep", 1.0), 1]


# ---------------------------------------------------------------------------
# 8. Concurrency: the run-root lock


HOLDER = r"""
import sys, time
from headrot.lock import run_lock
with run_lock(sys.argv[1], "holder"):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(root: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, root], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_refused_while_first_holds_root_then_dead_owner_taken_over(tmp_path):
    root = str(tmp_path / "run")
    holder = _holder(root)
    try:
        with pytest.raises(runlock.LockHeld) as info:
            with runlock.run_lock(root, "second"):
                pass
        assert root in str(info.value) and f"pid {holder.pid}" in str(info.value)
        assert "'holder'" in str(info.value)
    finally:
        os.kill(holder.pid, signal.SIGKILL)                # the holder dies without releasing
        holder.wait(10)
    assert (tmp_path / "run" / runlock.LOCK).exists()
    with runlock.run_lock(root, "third"):                  # dead pid on this host: taken over
        owner = json.loads((tmp_path / "run" / runlock.LOCK).read_text())
        assert owner["pid"] == os.getpid() and owner["what"] == "third"
        with runlock.run_lock(root, "nested"):             # re-entrant: a pipeline's stages
            pass
        assert (tmp_path / "run" / runlock.LOCK).exists()
    assert not (tmp_path / "run" / runlock.LOCK).exists()


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.slow)])
def test_exactly_one_of_many_concurrent_runs_gets_the_root(tmp_path, request, where):
    root = str(tmp_path / "run") if where == "local" else request.getfixturevalue("s3_bucket") + "/run"
    winners, refused = [], []
    start = threading.Barrier(6)

    def contender(i):
        lock = runlock.RunLock(root, f"contender-{i}")
        start.wait()
        try:
            lock.acquire()
        except runlock.LockHeld:
            refused.append(i)
            return
        winners.append(lock)

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert len(winners) == 1 and len(refused) == 5
        owner = json.loads(storage.read_bytes(storage.join(root, runlock.LOCK)))
        assert owner["token"] == winners[0].token
    finally:
        for w in winners:
            w.release()
    assert not storage.exists(storage.join(root, runlock.LOCK))


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.slow)])
def test_lock_of_another_host_taken_over_only_when_its_heartbeat_is_stale(tmp_path, request, where, monkeypatch):
    root = str(tmp_path / "run") if where == "local" else request.getfixturevalue("s3_bucket") + "/run"
    monkeypatch.setenv("HEADROT_LOCK_STALE_S", "60")
    uri = storage.join(root, runlock.LOCK)
    other = {"host": "some-other-node", "pid": 1, "what": "embed", "token": "t-other", "started": "x"}
    storage.write_bytes(uri, json.dumps({**other, "heartbeat": time.time() - 5}).encode())
    with pytest.raises(runlock.LockHeld, match="some-other-node"):
        with runlock.run_lock(root, "mine"):
            pass
    storage.write_bytes(uri, json.dumps({**other, "heartbeat": time.time() - 600}).encode())
    with runlock.run_lock(root, "mine"):
        assert json.loads(storage.read_bytes(uri))["what"] == "mine"
    assert not storage.exists(uri)


def test_heartbeat_keeps_a_long_run_fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADROT_LOCK_STALE_S", "2")       # beat every 0.5 s
    root = str(tmp_path / "run")
    with runlock.run_lock(root, "long"):
        first = json.loads((tmp_path / "run" / runlock.LOCK).read_text())["heartbeat"]
        time.sleep(1.6)
        later = json.loads((tmp_path / "run" / runlock.LOCK).read_text())["heartbeat"]
        assert later > first
