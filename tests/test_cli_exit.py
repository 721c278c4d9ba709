"""How the `headrot` process ends: main's exit code, with Ray shut down and output flushed,
without the interpreter teardown in which pyarrow can abort (headrot.cli.exit_process)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def headrot(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "headrot", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_success_and_bad_input_exit_codes(tmp_path):
    done = headrot("synth", "--out", str(tmp_path / "data"), "--n", "12")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "data" / "truth.parquet").exists()
    bad = headrot("fit", "--root", str(tmp_path / "nowhere"))
    assert bad.returncode == 2
    assert "headrot fit: error:" in bad.stderr
    usage = headrot("render", "--no-such-flag")
    assert usage.returncode == 2 and "usage:" in usage.stderr


def _running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


PROBE = r"""
import atexit, json, sys
import ray
ray.init(num_cpus=1, include_dashboard=False, configure_logging=False)
node = ray._private.worker._global_node
pids = [p.process.pid for procs in node.all_processes.values() for p in procs]
atexit.register(lambda: print("interpreter teardown ran"))
print(json.dumps(pids))
print("buffered, not yet flushed", end="")
from headrot.cli import exit_process
exit_process(3)
"""


@pytest.mark.slow
def test_exit_process_shuts_ray_down_flushes_and_skips_teardown():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[-1] == "buffered, not yet flushed"          # stdout flushed before os._exit
    assert "interpreter teardown ran" not in out.stdout       # atexit (and the teardown) skipped
    pids = json.loads(lines[-2])
    assert pids
    deadline = time.time() + 20
    alive = pids
    while alive and time.time() < deadline:                  # the local cluster it started is gone
        alive = [p for p in pids if _running(p)]
        time.sleep(0.2)
    assert not alive, f"Ray processes still running after exit_process: {alive}"
