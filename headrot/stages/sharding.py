"""The shape shared by the embed and render stages: shards through Ray Data.

A shard is a fixed group of input rows with a deterministic name (part-00000...).
Each stage runs  shard list -> CPU prepare -> model actor pool -> CPU write,
one Ray Data row per shard, so a shard's output file is written by exactly one
task and its name never depends on how Ray batched or retried the work:
a retried or resumed shard overwrites the same file, never duplicates it.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from headrot import storage

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Shard names and what is left to do


def shard_name(index: int) -> str:
    return f"part-{index:05d}"


def split_rows(n_rows: int, shard_size: int) -> list[tuple[str, int, int]]:
    """[(name, start, stop)] covering range(n_rows) in order."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [
        (shard_name(i), start, min(start + shard_size, n_rows))
        for i, start in enumerate(range(0, n_rows, shard_size))
    ]


def pending(out_dir: str, names: Iterable[str], suffix: str = ".parquet") -> list[str]:
    """Names whose output file is not there yet (a file that exists is complete: see tables.py)."""
    done = {uri.rsplit("/", 1)[-1][: -len(suffix)] for uri in storage.list_files(out_dir, suffix)}
    return [n for n in names if n not in done]


# ---------------------------------------------------------------------------
# Sizing the model actor pool from the cluster


@dataclass(frozen=True)
class PoolPlan:
    """How many model actors, what each reserves, and how many torch threads each runs."""

    min_actors: int
    max_actors: int
    num_gpus: float
    num_cpus: float
    torch_threads: int

    def map_batches(self, ds, fn, **kwargs):
        """ds.map_batches(fn, ..., **this plan's pool arguments)."""
        import warnings

        with warnings.catch_warnings():
            # Ray 2.60 deprecates extra remote args (max_restarts...) in favour of its
            # defaults, which agree with ours today; we keep them explicit until the
            # pinned Ray drops them (2.64), so a changed default cannot lose shards.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*is deprecated")
            return ds.map_batches(fn, **kwargs, **self.map_batches_args())

    def map_batches_args(self) -> dict[str, Any]:
        import ray

        args: dict[str, Any] = {
            "compute": ray.data.ActorPoolStrategy(min_size=self.min_actors, max_size=self.max_actors),
            "num_cpus": self.num_cpus,
            # A killed actor (preempted node, OOM, SIGKILL) is restarted and its
            # in-flight shard retried; shard outputs are idempotent, so a retry
            # can never duplicate rows. Ray Data's defaults happen to agree today;
            # we set them on purpose so a change of default cannot lose shards.
            "max_restarts": -1,
            "max_task_retries": -1,
        }
        if self.num_gpus:
            args["num_gpus"] = self.num_gpus
        return args


def plan_pool(max_actors: int | None = None, prefer_gpu: bool = True) -> PoolPlan:
    """One actor per GPU when the cluster has GPUs; otherwise CPU actors that leave room
    for the decode/write tasks (an actor pool reserving every CPU starves them and the
    stage hangs without an error)."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = float(resources.get("CPU", 1))
    if prefer_gpu and gpus > 0:
        n = gpus if max_actors is None else min(gpus, max_actors)
        return PoolPlan(min_actors=1, max_actors=n, num_gpus=1, num_cpus=1, torch_threads=2)
    # CPU: each actor reserves half a CPU but runs as many torch threads as the node
    # has cores divided among the actors (the model dominates; prepare/write are light).
    n = max(1, min(max_actors or 1, int(cpus // 1)))
    threads = max(1, (os.cpu_count() or 1) // n)
    return PoolPlan(min_actors=1, max_actors=n, num_gpus=0, num_cpus=0.5, torch_threads=threads)


# ---------------------------------------------------------------------------
# Progress: Ray's bars on a terminal, periodic lines in a job log


@dataclass
class Progress:
    stage: str
    total_shards: int
    total_rows: int
    log_every_s: float = 10.0
    shards_done: int = 0
    rows_done: int = 0
    started: float = field(default_factory=time.time)
    _last: float = 0.0

    def update(self, shards: int, rows: int) -> None:
        self.shards_done += shards
        self.rows_done += rows
        now = time.time()
        if now - self._last >= self.log_every_s or self.shards_done == self.total_shards:
            self._last = now
            rate = self.rows_done / max(now - self.started, 1e-9)
            left = self.total_rows - self.rows_done
            eta = f"{left / rate:,.0f}s" if rate > 0 and left > 0 else "-"
            log.info(
                "%s: %d/%d shards, %d/%d rows, %.1f rows/s, ETA %s",
                self.stage, self.shards_done, self.total_shards,
                self.rows_done, self.total_rows, rate, eta,
            )

    def rate(self) -> float:
        return self.rows_done / max(time.time() - self.started, 1e-9)


def fault_point(calls: int, stage: str) -> None:
    """Fault injection for the reliability tests (tests/test_reliability.py); a no-op unless
    HEADROT_FAULT="kill|hang[@stage]:N:/path/marker" is in a model actor's environment. On its N-th
    shard the actor creates the marker (O_EXCL, so only once per marker: a restarted actor
    goes on) and then SIGKILLs itself (a worker fault) or hangs (holds the job mid-stage so
    the test can kill the driver). With "@stage" only that stage's actors fault (a whole
    `headrot run` passes through embed's actors before render's)."""
    spec = os.environ.get("HEADROT_FAULT")
    if not spec:
        return
    action, n, marker = spec.split(":", 2)
    action, _, only = action.partition("@")
    if calls != int(n) or (only and only != stage):
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    if action == "kill":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    while action == "hang":
        time.sleep(1)


def actor_name() -> str:
    """host:pid of this process: tells a model actor's running totals from another's."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def busy_fraction(snapshots: Iterable[str]) -> float | None:
    """Model time / wall time over a pool, from each shard's JSON snapshot of its actor's
    running totals ({"actor", "model_s", "wall_s"}, headrot.model.accel.BusyMeter): the
    last (largest) snapshot of each actor counts. On a GPU this is the GPU busy fraction:
    below ~0.9 the decode or write tasks, not the model, set the pace."""
    last: dict[str, dict] = {}
    for text in snapshots:
        snap = json.loads(text) if text else {}
        if "actor" in snap and snap["wall_s"] >= last.get(snap["actor"], {}).get("wall_s", -1.0):
            last[snap["actor"]] = snap
    wall = sum(s["wall_s"] for s in last.values())
    return round(sum(s["model_s"] for s in last.values()) / wall, 4) if wall > 0 else None


def generator_actor(uri: str, precision: str, compile: bool, torch_threads: int | None, batch_size: int):
    """What a generator model actor sets up once: (acc, model, model_config, batch size): torch
    threads, the device's Inference settings, the checkpoint prepared for it, and the batch size
    that fits its memory (headrot.model.accel)."""
    import torch

    from headrot.model.accel import Inference, probe_batch_size
    from headrot.model.checkpoint import load_model

    set_torch_threads(torch_threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    acc = Inference.for_device(device, precision, compile)
    model, model_config, _ = load_model(uri, "generator", map_location=device)
    model = acc.prepare(model)
    return acc, model, model_config, probe_batch_size(model, acc, model_config.image_size, batch_size)


def set_torch_threads(n: int | None) -> None:
    """Torch's threads for a model actor: its CPU share (None: leave torch's default, e.g. a
    model actor called in the driver's own process, without Ray)."""
    import torch

    if n is None:
        return
    torch.set_num_threads(max(1, n))
    # Interop threads only matter for parallel graph ops; keep them from oversubscribing.
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process


def ceil_div(a: int, b: int) -> int:
    return int(math.ceil(a / b))
