"""Evaluate's driver memory stays flat: peak RSS of the evaluate stage's driver (and its Ray
workers) at 1x and 10x the demo's renders (32 and 320 sources x 9 methods x 7 deltas: 2,016
and 20,160 renders; --quick 8 and 80 sources).

    python -m bench.evaluate_memory [--sources 32 320] [--quick]

The rotated/ folder is fabricated, not rendered: a synthetic dataset (headrot's synth writer),
each source's preprocessed image as every method's render at every delta (what no_move
renders), written by the render stage's own writer (headrot.stages.render.write_shard: the
exact rotated schema, PNG bytes, one shard per 32 sources like the demo's) with a _SUCCESS
like the render stage's. Evaluate then does its real work on it: one measure task per shard
(ground truth, identity galleries, the judge), the aggregate on the driver.

Each size is fabricated first, then evaluated in a fresh Python process (peak RSS is per
process lifetime), which does nothing else. The judge is
fitted once beforehand (small settings; memory does not depend on its quality) and its cache
copied into each run, and the galleries hold 2 identities: what grows with the renders is
what is measured, not the one-off fit. Target: driver peak within 10% between the sizes.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench import common

METHODS = ("local-ortho-norm-cal", "samples-ortho-norm-cal", "samples-norm", "samples", "headrot",
           "no_move", "light_agnostic", "single_direction", "centroid_path")   # the demo's 9 when measured
DELTAS = (-30, -20, -10, 0, 10, 20, 30)
SIZE = 64                 # the demo model's image size
SHARD_SOURCES = 32        # sources per rotated shard (the demo renders 32 sources: one shard)
POSE = dict(pose_identities=16, pose_per_identity=2, pose_heldout=4, pose_epochs=1, gallery_max=2)


def fabricate(root: str, data: str, n_sources: int) -> int:
    """<root>/rotated/ of n_sources x METHODS x DELTAS renders, a _SUCCESS like render's; returns renders."""
    import pyarrow as pa

    from headrot import runs, storage, tables
    from headrot.data.images import decode_face
    from headrot.stages.render import write_shard
    from headrot.synth.writer import read_truth

    truth = read_truth(data).slice(0, n_sources).to_pylist()
    out, total, shards = storage.join(root, "rotated"), 0, 0
    for s in range(0, n_sources, SHARD_SOURCES):
        rows = truth[s:s + SHARD_SOURCES]
        faces = [decode_face(storage.read_bytes(storage.join(data, "img_align_celeba", r["image_id"])), SIZE)
                 for r in rows]
        grid = [(r, f, m, d) for r, f in zip(rows, faces) for m in METHODS for d in DELTAS]
        meta = pa.table({
            "source_id": pa.array([r["image_id"] for r, *_ in grid], pa.string()),
            "delta": pa.array([d for *_, d in grid], pa.int16()),
            "target_yaw": pa.array([r["yaw"] + d for r, _, _, d in grid], pa.float32()),
            "method": pa.array([m for _, _, m, _ in grid], pa.string()),
            "trajectory_key": pa.array(["light=" + r["light"] for r, *_ in grid], pa.string()),
            "fallback": pa.array(["none"] * len(grid), pa.string()),
            "partition": pa.array([r["partition"] for r, *_ in grid], pa.int8()),
            "identity": pa.array([r["identity"] for r, *_ in grid], pa.int32()),
            "yaw": pa.array([r["yaw"] for r, *_ in grid], pa.float32()),
            "light": pa.array([r["light"] for r, *_ in grid], pa.string()),
            "step_scale": pa.array([1.0] * len(grid), pa.float32()),
            "labeller_yaw_change": pa.array([float("nan")] * len(grid), pa.float32()),
        })
        images = np.stack([f for _, f, _, _ in grid])
        write_shard({"shard": f"part-{shards:05d}", "n": len(grid), "size": SIZE, "images": images.tobytes(),
                     "meta": tables.to_ipc(meta), "rejected": "[]"}, root, out, "parquet")
        total, shards = total + len(grid), shards + 1
    storage.mark_complete(out, {"fingerprint": f"bench-{n_sources}", "renders": total, "shards": shards})
    runs.claim_stage(root, "embed", "bench", {"data": data, "out": root}, storage.join(root, "latents"))
    return total


def one(root: str) -> dict:
    """Runs in its own process: evaluate a fabricated root; peaks of the driver and of every worker."""
    from bench.memory import Sampler
    from headrot.stages.evaluate import EvaluateConfig, run_evaluate

    common.ray_init()
    sampler = Sampler()
    sampler.start()
    start = time.perf_counter()
    report = run_evaluate(EvaluateConfig(root=root, **POSE))
    seconds = time.perf_counter() - start
    sampler.sample()
    sampler.stop.set()
    workers = [e for e in sampler.peaks.values() if e["role"] == "worker"]
    n = report["summary"]["n_renders"]
    return {"sources": report["summary"]["n_sources"], "renders": n,
            "estimator_cached": report["pose_estimator"]["cached"], "seconds": seconds,
            "renders_per_s": n / seconds, "driver_peak_mb": common.peak_rss_mb(),
            "worker_max_peak_mb": max((e["peak_mb"] for e in workers), default=None), "workers": len(workers)}


def fit_estimator(data: str, folder: str) -> str:
    """The judge for these settings, fitted once (evaluate's own cache file format)."""
    from headrot.labels.pose import PoseConfig, load_or_fit
    from headrot.stages.evaluate import EvaluateConfig

    cfg = EvaluateConfig(root=folder, **POSE)
    uri = os.path.join(folder, "yaw_estimator.npz")
    load_or_fit(uri, PoseConfig(size=SIZE, seed=cfg.pose_seed, n_identities=cfg.pose_identities,
                                per_identity=cfg.pose_per_identity, n_heldout=cfg.pose_heldout,
                                epochs=cfg.pose_epochs))
    return uri


def run(sizes=(32, 320)) -> dict:
    from headrot.synth.writer import write_synthetic_celeba

    work = tempfile.mkdtemp(prefix="bench-evaluate-data-")
    try:
        data = os.path.join(work, "data")
        write_synthetic_celeba(data, n=max(sizes), seed=7, images_per_identity=4)
        estimator = fit_estimator(data, work)
        runs = []
        for n in sizes:
            # Fabricated here: the measured process only evaluates.
            root = os.path.join(work, f"run-{n}")
            fabricate(root, data, n)
            os.makedirs(os.path.join(root, "report"))
            shutil.copy(estimator, os.path.join(root, "report", "yaw_estimator.npz"))
            out = subprocess.run([sys.executable, "-m", "bench.evaluate_memory", "--one", root],
                                 capture_output=True, text=True, check=False)
            lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
            if out.returncode != 0 or not lines:
                raise RuntimeError(f"bench.evaluate_memory --one {n} failed ({out.returncode}):\n{out.stderr[-3000:]}")
            runs.append(json.loads(lines[-1]))
            shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    small, big = runs[0], runs[-1]
    growth = {k: common.ratio(big[k], small[k]) for k in ("driver_peak_mb", "worker_max_peak_mb")}
    return {"sizes": list(sizes), "renders": [r["renders"] for r in runs], "runs": runs, "growth": growth,
            "driver_growth": growth["driver_peak_mb"], "target_max_growth": 0.10,
            "met": abs(growth["driver_peak_mb"] - 1) < 0.10}


def main(argv=None) -> dict:
    p = common.parser(__doc__, n=0, quick_n=0, presets=("tiny",), preset="tiny")
    p.add_argument("--sources", type=int, nargs=2, default=None, help="sources at 1x and 10x (default 32 320)")
    p.add_argument("--one", default=None, help="internal: evaluate this fabricated root in this process")
    args = p.parse_args(argv)
    if args.one is not None:
        result = common.clean(one(args.one))
        print(json.dumps(result))
        return result
    sizes = tuple(args.sources) if args.sources else ((8, 80) if args.quick else (32, 320))
    return common.write_result("evaluate_memory", run(sizes), args.results)


if __name__ == "__main__":
    main()
