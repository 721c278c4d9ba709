"""The path users take onto a cluster, for real: `ray start --head`, `ray job submit
--working-dir .`, a job that writes to S3, and the objects in the bucket.

The head is a separate `ray start` (not the session's in-process Ray) on ports and a
temp dir of its own, so it never meets another Ray on the host; it is stopped by the
PIDs it started (never `ray stop`). It gets the S3 endpoint and keys from its
environment, as a cloud node gets them from its role: nothing goes through the
runtime_env, which Ray stores in the job's metadata.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.services import free_port

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))

# The job this test submits, run from the uploaded working dir: the whole pipeline, small.
JOB = "python jobs/pipeline.py --config tests/configs/submit.yaml --out {bucket}/run"
EXPECTED = "run/rotated/"

def _entrypoint(bucket: str) -> str:
    return JOB.format(bucket=bucket)


# ---------------------------------------------------------------------------
# A Ray head of our own


def _port_range(n: int) -> int:
    """A first port p with p..p+n-1 free now (worker ports)."""
    for _ in range(100):
        p = free_port()
        if p + n >= 65535:
            continue
        try:
            for q in range(p, p + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", q))
        except OSError:
            continue
        return p
    raise RuntimeError("no free port range")


def _processes_of(temp_dir: str) -> list:
    """Every process this head started: those whose command line names our unique temp
    dir (gcs_server, raylet, dashboard, agents, log monitor) and all their descendants
    (workers rename themselves `ray::...`, so only the tree finds them)."""
    import psutil

    roots = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(temp_dir in part for part in proc.info["cmdline"] or []):
                roots.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found = {p.pid: p for p in roots}
    for root in roots:
        try:
            for child in root.children(recursive=True):
                found[child.pid] = child
        except psutil.NoSuchProcess:
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def _stop(temp_dir: str) -> None:
    import psutil

    for _ in range(3):  # a raylet may start a worker while we stop it: look again
        procs = _processes_of(temp_dir)
        if not procs:
            return
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)


@pytest.fixture
def ray_head(s3_server, request):
    """`ray start --head` on ports nobody else uses; yields the dashboard address."""
    temp_dir = tempfile.mkdtemp(prefix="hr-ray-", dir="/tmp")  # short: Ray's socket paths are long
    # Registered before anything can start: stop what this head started, then its files.
    request.addfinalizer(lambda: (_stop(temp_dir), shutil.rmtree(temp_dir, ignore_errors=True)))
    worker_ports = _port_range(16)
    ports = {
        "port": free_port(),
        "node-manager-port": free_port(),
        "object-manager-port": free_port(),
        "ray-client-server-port": free_port(),
        "dashboard-port": free_port(),
        "dashboard-agent-listen-port": free_port(),
        "dashboard-agent-grpc-port": free_port(),
        "runtime-env-agent-port": free_port(),
        "metrics-export-port": free_port(),
        "min-worker-port": worker_ports,
        "max-worker-port": worker_ports + 15,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    # The node's credentials: from its environment, as from a role (set by conftest).
    assert env["AWS_ENDPOINT_URL"] == s3_server.endpoint
    env["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"
    # `python` in an entrypoint is the node's python: here, this venv's (as if activated).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # Ray 2.60 turns token auth on when ~/.ray/auth_token exists (any local ray.init makes
    # one): give this head and its clients a throwaway token of their own, so the test
    # neither depends on nor touches the user's file, and runs the way clusters should.
    token = os.urandom(32).hex()
    token_path = Path(temp_dir) / "auth_token"
    token_path.write_text(token)
    token_path.chmod(0o600)
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    env.pop("RAY_AUTH_TOKEN", None)
    cmd = [
        RAY, "start", "--head", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
        *(f"--{k}={v}" for k, v in ports.items()),
        "--num-cpus=2", "--num-gpus=0", "--include-dashboard=true", "--disable-usage-stats",
        f"--object-store-memory={200 * 1024 ** 2}", f"--temp-dir={temp_dir}",
    ]
    started = subprocess.run(cmd, env=env, cwd=temp_dir, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, f"ray start failed:\n{started.stdout}\n{started.stderr}"
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    yield {"address": address, "env": env, "temp_dir": temp_dir, "token": token}


# ---------------------------------------------------------------------------
# The test


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ray_job_submit_writes_to_s3(ray_head, s3_server, s3_bucket):
    from ray.job_submission import JobStatus, JobSubmissionClient

    t0 = time.monotonic()
    excludes = yaml.safe_load((ROOT / "jobs" / "runtime_env.yaml").read_text())["excludes"]
    runtime_env = {"excludes": excludes, "env_vars": {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}}
    submission_id = "headrot-test-" + os.urandom(4).hex()

    submit = [
        RAY, "job", "submit", "--address", ray_head["address"], "--submission-id", submission_id,
        "--working-dir", ".", "--runtime-env-json", json.dumps(runtime_env), "--no-wait",
        "--", *shlex.split(_entrypoint(s3_bucket)),
    ]
    done = subprocess.run(submit, cwd=ROOT, env=ray_head["env"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"ray job submit failed:\n{done.stdout}\n{done.stderr}"

    client = JobSubmissionClient(ray_head["address"], headers={"Authorization": f"Bearer {ray_head['token']}"})
    deadline = time.monotonic() + 600
    while (status := client.get_job_status(submission_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                                   JobStatus.STOPPED}:
        assert time.monotonic() < deadline, f"job still {status} after 600 s"
        time.sleep(1)
    logs = client.get_job_logs(submission_id)
    assert status == JobStatus.SUCCEEDED, f"job {status}:\n{logs[-5000:]}"

    # No credentials in what Ray stored about the job.
    info = client.get_job_info(submission_id)
    assert s3_server.secret_key not in json.dumps(info.runtime_env or {})
    assert s3_server.secret_key not in json.dumps(info.metadata or {})

    # The objects the job wrote, read back with the test's own client.
    fs = s3_server.fs()
    written = [p for p in fs.find(f"{s3_bucket}/{EXPECTED}")]
    names = {p.rsplit("/", 1)[-1] for p in written}
    assert "_SUCCESS" in names, written
    # The rotated dataset in the bucket: every (source, delta, method) exactly once.
    import pyarrow.parquet as pq

    parts = [p for p in written if p.endswith(".parquet")]
    table = pq.ParquetDataset(parts, filesystem=fs).read()
    keys = list(zip(table.column("source_id").to_pylist(), table.column("delta").to_pylist(),
                    table.column("method").to_pylist()))
    assert len(keys) == len(set(keys)) == 4 * 3 * 2
    print(f"\nray job submit -> SUCCEEDED -> {len(written)} objects in {time.monotonic() - t0:.1f} s")
