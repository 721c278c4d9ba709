"""Fit stage throughput: `run_fit` (Ray tasks, one per latents file) against a plain pyarrow
read of the same files, and against the same fit in a plain loop.

    python -m bench.fit [--n ROWS] [--preset demo|paper] [--files 16] [--quick]

Input: latents files in the embed stage's schema (random latents of the preset's size).
- stage: run_fit timed end to end (after a warm-up fit of a small root in the same Ray
  session, timed apart); rows/s and MB/s of the latents files' bytes on disk.
- read: pyarrow.parquet.read_table of the same files and the columns the fit reads.
- plain: the stage's reduce_file per file + merge + fit_all + write, in this process.
Target (the issue: "fit limited by reading the Parquet"): stage MB/s >= 50% of the plain read.
"""
from __future__ import annotations

import os
import tempfile
import time

from bench import common

ATTRS = ("Male", "Eyeglasses")


def plain_read(files: list[str]) -> float:
    import pyarrow.parquet as pq

    start = time.perf_counter()
    for f in files:
        pq.read_table(f, columns=["latent", "yaw", "light", *ATTRS])
    return time.perf_counter() - start


def plain_fit(root: str, files: list[str]) -> dict:
    from headrot import tables
    from headrot import trajectories as tr
    from headrot.layout import RunLayout
    from headrot.stages.fit import lines_table, reduce_file

    config_bins = (-45.0, 45.0, 10.0)
    edges = tr.parse_bins(config_bins)
    start = time.perf_counter()
    merged = tr.merge([reduce_file(f, edges, ATTRS, None) for f in files])
    reduce_s = time.perf_counter() - start
    lines = tr.fit_all(merged, 50, 3)
    tables.write_parquet(RunLayout(root).trajectories_table, lines_table(lines, edges))
    return {"seconds": time.perf_counter() - start, "reduce_s": reduce_s}


def run(n: int, preset: str = "demo", n_files: int = 8, quick: bool = False, workdir: str | None = None) -> dict:
    from headrot.model.unet import PRESETS as UNETS
    from headrot.stages.fit import FitConfig, run_fit

    size = UNETS[preset].image_size
    ray_s = common.ray_init()
    with tempfile.TemporaryDirectory(prefix="bench-fit-", dir=workdir) as tmp:
        warm_root = os.path.join(tmp, "warm")
        common.make_latents(warm_root, 64, size, 2)
        warm_s, _ = common.timed(lambda: run_fit(FitConfig(root=warm_root, attributes=ATTRS)))
        root = os.path.join(tmp, "run")
        files = common.make_latents(root, n, size, n_files)
        mb = sum(os.path.getsize(f) for f in files) / 1e6
        read_s = min(plain_read(files), plain_read(files))  # second read: page cache warm, like the stage's
        stage_s, summary = common.timed(lambda: run_fit(FitConfig(root=root, attributes=ATTRS)))
        plain = plain_fit(os.path.join(tmp, "plain"), files)
    return {
        "preset": preset, "rows": n, "files": n_files, "mb": mb, "quick": quick,
        "ray_rows_per_s": n / stage_s, "ray_mb_per_s": mb / stage_s,
        "read_mb_per_s": mb / read_s, "plain_fit_mb_per_s": mb / plain["seconds"],
        "ratio": common.ratio(mb / stage_s, mb / read_s),
        "ratio_to_plain_fit": common.ratio(mb / stage_s, mb / plain["seconds"]),
        "target_ratio": 0.5,
        "stage_s": stage_s, "stage_reduce_s": summary.get("reduce_s"), "read_s": read_s, "plain": plain,
        "plain_read_share": read_s / plain["seconds"],
        "warmup_s": warm_s, "ray_init_s": ray_s,
    }


def main(argv=None) -> dict:
    # 40,000 rows (~470 MB): enough that the stage's fixed costs (Ray task start, run.json,
    # writing the trajectories) do not hide the per-byte rate the target is about.
    p = common.parser(__doc__, n=40_000, quick_n=1_000)
    p.add_argument("--files", type=int, default=16)
    args = p.parse_args(argv)
    return common.write_result("fit", run(common.size_of(args), args.preset, args.files, args.quick), args.results)


if __name__ == "__main__":
    main()
