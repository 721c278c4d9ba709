"""Shared pieces of the stage benchmarks: machine facts, the matmul rate, Ray, inputs, results.

Every benchmark reports ratios measured in the same run on the same machine:
the Ray stage against a plain single-process loop (PIL + torch, no Ray) doing the
same work, and both against the FLOP bound = matmul FLOP/s / model FLOPs per image.
Warm-up (Ray start, first actor, first torch call) is timed apart and reported, never
mixed into a rate.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
PRESETS = ("demo", "paper")


# ---------------------------------------------------------------------------
# Machine


def cores() -> int:
    """CPUs this process may run on (affinity, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    import pyarrow
    import torch

    try:
        import ray
        ray_version = ray.__version__
    except ImportError:  # pragma: no cover
        ray_version = None
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover
        load = None
    return {
        "cpu": cpu_model(),
        "cores": cores(),
        "host_cpus": os.cpu_count(),
        "load_avg_1m": None if load is None else round(load, 2),
        "nice": os.nice(0),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "ray": ray_version,
        "pyarrow": pyarrow.__version__,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def set_threads(n: int | None = None) -> int:
    """torch intra-op threads = the cores (the plain loops' setting, the same as one CPU actor's)."""
    from headrot.stages.sharding import set_torch_threads

    n = n or cores()
    set_torch_threads(n)
    return n


def matmul_flops(seconds: float = 2.0) -> float:
    """FLOP/s of float32 1024^2 matmuls on all cores, measured now (the FLOP bound's denominator)."""
    from headrot.model.flops import measure_matmul_flops

    set_threads()
    return max(measure_matmul_flops(seconds / 2), measure_matmul_flops(seconds / 2))


def model_flops(preset: str) -> float:
    from headrot.model.flops import count_flops
    from headrot.model.unet import PRESETS as UNETS

    return count_flops(UNETS[preset])


def flop_bound(flops_per_s: float, flops_per_image: float) -> float:
    """images/s if the machine ran the model's convolutions at its matmul rate."""
    return flops_per_s / flops_per_image


# ---------------------------------------------------------------------------
# Timing


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def rate(items: float, seconds: float) -> float:
    return items / seconds if seconds > 0 else math.inf


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return round(a / b, 3)


def peak_rss_mb() -> float:
    """This process's peak RSS so far (MB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


# ---------------------------------------------------------------------------
# Models and counting network calls


class CountingNet:
    """Wraps a network and counts forward calls and images passed through (for calls per image)."""

    def __init__(self, net):
        self.net = net
        self.calls = 0
        self.images = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        self.images += int(args[0].shape[0])
        return self.net(*args, **kwargs)


def random_unet(preset: str, seed: int = 0, channels_last: bool = False):
    import torch

    from headrot.model.unet import PRESETS as UNETS
    from headrot.model.unet import UNet

    torch.manual_seed(seed)
    net = UNet(UNETS[preset]).eval().requires_grad_(False)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def save_generator(root: str, preset: str, seed: int = 0) -> str:
    """A randomly initialised generator of the preset at <root>/checkpoints/generator/model.pt
    (speed does not depend on training)."""
    from headrot.layout import RunLayout
    from headrot.model.checkpoint import save_model
    from headrot.model.unet import PRESETS as UNETS

    uri = RunLayout(root).model("generator")
    save_model(uri, "generator", random_unet(preset, seed), UNETS[preset])
    return uri


# ---------------------------------------------------------------------------
# Inputs


def alternate_rounds(stage, plain, rounds: int) -> tuple[dict, dict, list[dict], list[dict]]:
    """Run stage(r) and plain(r) alternately `rounds` times; each returns a dict with
    "images_per_s". Returns (best stage, best plain, all stage rounds, all plain rounds).

    Alternating and keeping each side's best round stops a neighbour's burst on a shared VM
    from landing on one side only (the rate drifts 10-20% within minutes here)."""
    stage_rounds, plain_rounds = [], []
    for r in range(rounds):
        stage_rounds.append(stage(r))
        plain_rounds.append(plain(r))
    best = lambda runs: max(runs, key=lambda x: x["images_per_s"])  # noqa: E731
    return best(stage_rounds), best(plain_rounds), stage_rounds, plain_rounds


def synth_data(n: int, data: str | None = None, seed: int = 0) -> str:
    """A CelebA-layout folder with >= n images: `data` when given, else a cached synthetic set."""
    if data:
        return data
    cache = Path(os.environ.get("HEADROT_BENCH_DATA", Path(tempfile.gettempdir()) / "headrot-bench-data"))
    for existing in sorted(cache.glob("synth-*")) if cache.exists() else []:
        try:
            have = int(existing.name.split("-")[1])
        except ValueError:
            continue
        if have >= n and (existing / "list_eval_partition.txt").exists():
            return str(existing)
    from headrot.synth.writer import write_synthetic_celeba

    out = cache / f"synth-{n}"
    write_synthetic_celeba(str(out), n, seed=seed)
    return str(out)


ATTRIBUTES = ("Male", "Eyeglasses", "Smiling")


def make_latents(root: str, n: int, size: int, n_files: int, seed: int = 0, dtype: str = "float32") -> list[str]:
    """latents/part-NNNNN.parquet under root in the embed stage's schema (random latents with a
    planted yaw slope per light), marked complete; returns the file URIs."""
    from headrot import storage, tables
    from headrot.latents_schema import index_rows, latents_table
    from headrot.layout import RunLayout

    rng = np.random.default_rng(seed)
    uris = []
    per_file = [len(a) for a in np.array_split(np.arange(n), n_files)]
    start = 0
    for i, m in enumerate(per_file):
        yaw = rng.uniform(-44, 44, m).astype(np.float32)
        light = rng.choice(["left", "center", "right"], m)
        slope = np.where(light == "left", 0.01, -0.01).reshape(-1, 1, 1, 1)
        latents = rng.standard_normal((m, 3, size, size)).astype(np.float32) + slope * yaw.reshape(-1, 1, 1, 1)
        rows = index_rows([f"{start + j:06d}.jpg" for j in range(m)], rng.integers(0, 3, m), rng.integers(0, 500, m),
                          {a: rng.random(m) < 0.5 for a in ATTRIBUTES}, rng.uniform(60, 120, (m, 10)), light)
        table = latents_table(rows, yaw, latents, np.zeros(m), np.full(m, 30.0), dtype)
        uri = RunLayout(root).shard(RunLayout(root).latents, f"part-{i:05d}")
        tables.write_parquet(uri, table)
        uris.append(uri)
        start += m
    storage.mark_complete(RunLayout(root).latents, {"written": n, "shards": len(uris)})
    return uris


# ---------------------------------------------------------------------------
# Ray


def ray_init(num_cpus: int | None = None) -> float:
    """One local Ray session per benchmark process; returns the seconds ray.init took."""
    import ray

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    if ray.is_initialized():
        return 0.0
    start = time.perf_counter()
    ray.init(
        num_cpus=num_cpus or cores(),
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}},
    )
    try:  # quieter Ray Data on the console
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
    except Exception:  # pragma: no cover - attribute names vary by Ray version
        pass
    return time.perf_counter() - start


# ---------------------------------------------------------------------------
# CLI and results


def parser(description: str, n: int, quick_n: int, presets: tuple[str, ...] = PRESETS,
           preset: str = "demo") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=None, help=f"images (default {n}; --quick {quick_n})")
    p.add_argument("--preset", choices=presets, default=preset, help="U-Net preset (random weights)")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run in seconds")
    p.add_argument("--results", default=str(RESULTS), help="folder for <name>.json ('' to not write)")
    p.set_defaults(_n=n, _quick_n=quick_n)
    return p


def size_of(args: argparse.Namespace) -> int:
    return args.n if args.n is not None else (args._quick_n if args.quick else args._n)


def clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, floats rounded to 4 significant digits, inf/nan to None."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.4g}")
    return value


def write_result(name: str, result: dict[str, Any], results_dir: str | os.PathLike | None = RESULTS) -> dict[str, Any]:
    """Add the machine facts, print the JSON, write <results_dir>/<name>.json; returns the dict."""
    out = clean({"benchmark": name, **result, "machine": machine_info()})
    text = json.dumps(out, indent=2)
    print(text)
    if results_dir:
        folder = Path(results_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.json").write_text(text + "\n")
    return out


def calls_per_image(method: str = "inversion", steps: int = 10, **embed_kwargs) -> float:
    """Network calls per image of `embed(method)` (or of a `steps`-step render when method is
    "render"), counted with a wrapper on the tiny preset (the count does not depend on the net)."""
    import torch

    from headrot.model.embedding import embed
    from headrot.model.sampler import reverse_diffusion

    net = CountingNet(random_unet("tiny"))
    x = torch.zeros(2, 3, 16, 16)
    with torch.inference_mode():
        if method == "render":
            reverse_diffusion(net, x, steps=steps)
        else:
            embed(x, method, net, steps=steps, **embed_kwargs)
    return net.images / x.shape[0]


def tune_threads(preset: str, batch: int, channels_last: bool = False, calls: int = 2) -> tuple[int, dict[int, float]]:
    """The torch thread count (1..cores) with the most forward images/s at this batch, and each
    count's rate. Under a competing load, more threads than free cores can be many times slower
    (OpenMP barriers wait for a descheduled thread), so the plain loops pick it by measurement."""
    import torch

    from headrot.model.unet import PRESETS as UNETS

    size = UNETS[preset].image_size
    net = random_unet(preset, channels_last=channels_last)
    x = torch.randn(batch, 3, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    v = torch.full((batch, 1, 1, 1), 0.5)
    rates = {}
    with torch.inference_mode():
        for threads in range(1, cores() + 1):
            set_threads(threads)
            net(x, v)
            start = time.perf_counter()
            for _ in range(calls):
                net(x, v)
            rates[threads] = calls * batch / (time.perf_counter() - start)
    best = max(rates, key=rates.get)
    set_threads(best)
    return best, rates


def ray_worker_threads(num_cpus: float = 0.5, torch_threads: int | None = None) -> dict[str, Any]:
    """What a Ray worker like the stages' CPU actors sees: OMP_NUM_THREADS and torch's thread
    count after the stage's set_torch_threads(torch_threads)."""
    import ray

    @ray.remote(num_cpus=num_cpus)
    def probe(n):
        import os as _os

        import torch as _torch

        from headrot.stages.sharding import set_torch_threads

        before = _torch.get_num_threads()
        set_torch_threads(n)
        return {"omp_num_threads_env": _os.environ.get("OMP_NUM_THREADS"), "nice": _os.nice(0),
                "torch_threads_before": before, "torch_threads_after": _torch.get_num_threads()}

    return ray.get(probe.remote(torch_threads or cores()))
