"""Memory stays flat: peak RSS of the driver and of each Ray worker for the embed stage at two
sizes (default 1,000 and 10,000 images; --quick 200 and 1,000).

    python -m bench.memory [--sizes 1000 10000] [--data DIR] [--preset tiny] [--quick]

Each size runs in a fresh Python process (peak RSS is per process lifetime) with its own
Ray session: run_embed with a random generator of the preset (default "tiny": memory does
not depend on the model's speed, and 10,000 images then take seconds of model time).
The driver's peak is its getrusage ru_maxrss; workers' peaks come from a thread that
samples every process under the driver (raylet, GCS, workers, actors) every 0.2 s with
psutil (VmHWM where /proc has it). Target: every peak differs by < 10% between the sizes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

from bench import common


class Sampler(threading.Thread):
    """Peak RSS (MB) per child process of this driver, by pid, with its role."""

    def __init__(self, every: float = 0.2):
        super().__init__(daemon=True)
        self.every = every
        self.peaks: dict[int, dict] = {}
        self.stop = threading.Event()

    @staticmethod
    def role(cmd: list[str], name: str) -> str:
        text = " ".join(cmd)
        if name.startswith("ray::") or "default_worker.py" in text:
            return "worker"
        for r in ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor", "runtime_env"):
            if r in text or r in name:
                return r
        return "other"

    def sample(self) -> None:
        import psutil

        for p in psutil.Process().children(recursive=True):
            try:
                with p.oneshot():
                    rss = p.memory_info().rss / 2**20
                    name = p.name()
                    cmd = p.cmdline()
                hwm = None
                try:
                    for line in open(f"/proc/{p.pid}/status"):
                        if line.startswith("VmHWM:"):
                            hwm = int(line.split()[1]) / 1024
                except OSError:
                    pass
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            peak = max(rss, hwm or 0.0)
            entry = self.peaks.setdefault(p.pid, {"role": self.role(cmd, name), "name": name, "peak_mb": 0.0})
            entry["peak_mb"] = max(entry["peak_mb"], peak)
            if name.startswith("ray::"):
                entry["name"] = name  # actors rename themselves once they run

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            time.sleep(self.every)


def one(n: int, data: str, preset: str, batch_size: int) -> dict:
    """Runs in its own process: the embed stage on n images, peaks of every process."""
    from headrot.stages.embed import EmbedConfig, run_embed

    common.ray_init()
    sampler = Sampler()
    sampler.start()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        generator = common.save_generator(os.path.join(tmp, "model"), preset)
        start = time.perf_counter()
        summary = run_embed(EmbedConfig(data=data, out=os.path.join(tmp, "run"), generator=generator,
                                        method="inversion", limit=n, batch_size=batch_size, max_actors=1))
        seconds = time.perf_counter() - start
    sampler.sample()
    sampler.stop.set()
    workers = [e for e in sampler.peaks.values() if e["role"] == "worker"]
    actors = [e for e in workers if "Embed" in e["name"] or "MapWorker" in e["name"]]
    return {
        "n": n, "written": summary["written"], "seconds": seconds,
        "driver_peak_mb": common.peak_rss_mb(),
        "worker_max_peak_mb": max((e["peak_mb"] for e in workers), default=None),
        "actor_max_peak_mb": max((e["peak_mb"] for e in actors), default=None),
        "workers": len(workers),
        "by_role_max_mb": {r: max(e["peak_mb"] for e in sampler.peaks.values() if e["role"] == r)
                           for r in {e["role"] for e in sampler.peaks.values()}},
    }


def run(sizes=(1_000, 10_000), data: str | None = None, preset: str = "tiny", batch_size: int = 64) -> dict:
    data = common.synth_data(max(sizes), data)
    runs = []
    for n in sizes:
        out = subprocess.run([sys.executable, "-m", "bench.memory", "--one", str(n), "--data", data,
                              "--preset", preset, "--batch-size", str(batch_size)],
                             capture_output=True, text=True, check=False)
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode != 0 or not lines:
            raise RuntimeError(f"bench.memory --one {n} failed ({out.returncode}):\n{out.stderr[-3000:]}")
        runs.append(json.loads(lines[-1]))
    small, big = runs[0], runs[-1]
    growth = {k: common.ratio(big[k], small[k]) for k in ("driver_peak_mb", "worker_max_peak_mb", "actor_max_peak_mb")}
    roles = sorted(set(small["by_role_max_mb"]) & set(big["by_role_max_mb"]))
    growth.update({f"{r}_peak_mb": common.ratio(big["by_role_max_mb"][r], small["by_role_max_mb"][r]) for r in roles})
    worst = max(abs(v - 1) for v in growth.values() if v is not None)
    return {"preset": preset, "sizes": list(sizes), "data": data, "runs": runs, "growth": growth,
            "max_growth": worst, "target_max_growth": 0.10, "met": worst < 0.10}


def main(argv=None) -> dict:
    p = common.parser(__doc__, n=0, quick_n=0, presets=("tiny", "demo", "paper"), preset="tiny")
    p.add_argument("--sizes", type=int, nargs=2, default=None)
    p.add_argument("--data", default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--one", type=int, default=None, help=argparse_hidden)
    args = p.parse_args(argv)
    if args.one is not None:
        result = common.clean(one(args.one, args.data, args.preset, args.batch_size))
        print(json.dumps(result))
        return result
    sizes = tuple(args.sizes) if args.sizes else ((200, 1_000) if args.quick else (1_000, 10_000))
    return common.write_result("memory", run(sizes, args.data, args.preset, args.batch_size), args.results)


argparse_hidden = "internal: measure one size in this process and print its JSON"

if __name__ == "__main__":
    main()
