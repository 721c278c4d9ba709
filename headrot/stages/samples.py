"""Stage 1b, samples: the generator's own samples, labelled, for the fit's `samples` direction source.

    labeller (one Ray task; cached in checkpoints/labeller/pose.npz): a pose CNN of its own seed,
    identities and architecture that reads yaw and light azimuth from pixels; beside it (a second
    task) calibration's reader, the same network of another seed (checkpoints/labeller/reader.npz),
    and the local steps' steering networks, more seeds (checkpoints/labeller/steer-<seed>.npz)
    -> shards of sample indices (driver) -> SampleShards (model actor pool): x_T from each
       sample's own seed, 10-step DDIM, the labeller's yaw and light, colour statistics
    -> write_shard (CPU task): samples/part-NNNNN.parquet -> samples/_SUCCESS last.

Why (bench/NOTES.md, issue 14): the direction along which the generator turns heads is
found from its response to x_T ~ N(0, I), not from the data's inverted latents. The labeller
is the method's own estimator; the evaluation uses another one (headrot.labels.pose).

Idempotent like embed: a shard's file appears whole or not at all, a rerun does only the
missing shards, and a complete stage with the same fingerprint does nothing.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from headrot import runs, storage, tables
from headrot.config import to_mapping
from headrot.labels import nuisance
from headrot.layout import RunLayout
from headrot.lock import locked
from headrot.stages import sharding
from headrot.stages.protocol import Stage, run_stage

log = logging.getLogger(__name__)

STAGE = "samples"
# Sample i's x_T comes from torch.Generator(NOISE_SEED_BASE * (seed + 1) + i): far from the
# small integers the training and the tests draw from.
NOISE_SEED_BASE = 1_000_000_007
# The nuisance statistics: the colour regions, then the labeller's light azimuth.
NUISANCES = (*nuisance.NAMES, "light_azimuth")


# ---------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class SamplesConfig:
    root: str                                             # run root (samples/ and the labeller go here)
    n: int = 3000                                         # samples; the pose direction's noise falls as 1/sqrt(n);
                                                          # 0: the networks below only (what -cal and local renders
                                                          # read), for a fit without the samples source
    seed: int = 0                                         # which samples (see NOISE_SEED_BASE)
    shard_size: int = 500                                 # samples per output file
    generator: str | None = None                          # default <root>/checkpoints/generator/model.pt
    steps: int = 10                                       # DDIM steps (the paper's 10)
    batch_size: int = 64                                  # samples per network call
    max_actors: int | None = None                         # model actors (default: one per GPU, else 1)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    yaw_from: Literal["cnn", "mediapipe"] = "cnn"          # samples' yaw: the labeller CNN (synthetic heads) or,
                                                          # for real faces, mediapipe's landmarks (extra [landmarks])
    labeller_seed: int = 2_000_003                        # the labeller's identities: not the judge's, not the data's
    labeller_identities: int = 300
    labeller_epochs: int = 20
    labeller_width: int = 8
    # Calibration's reader: a second labeller, the same settings but its own seed (identities).
    # The local steps follow the labeller's gradient, and a move along a network's gradient is
    # partly adversarial to it: on the demo the labeller read the requested 30 degrees where a
    # fresh network of the same kind, and the evaluation's judge, read 22 (bench/NOTES.md). A
    # reader the steps were not computed from reads what the render shows. None: the labeller reads.
    reader_seed: int | None = 2_000_101
    # The local steps' steering networks: more of the labeller's kind, each of its own seed. The
    # steps follow the mean reading of the labeller and these (headrot.labels.pose.MeanReading),
    # whose adversarial directions average down. (): the labeller alone. Each costs one more
    # labeller's training here (~40 s on one core at the demo's size).
    steer_seeds: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.n != 0 and self.n < 10:
            raise ValueError(f"samples: n must be >= 10 (a direction needs many samples), or 0 for the "
                             f"labeller and reader alone, got {self.n}")
        if self.shard_size < 1 or self.batch_size < 1 or self.steps < 1:
            raise ValueError("samples: shard_size, batch_size and steps must be >= 1")
        if self.reader_seed is not None and self.reader_seed == self.labeller_seed:
            raise ValueError(f"samples: reader_seed {self.reader_seed} is the labeller's: the reader must be "
                             "another network (another seed), or null to read with the labeller")
        taken = {self.labeller_seed, self.reader_seed}
        if len(set(self.steer_seeds)) != len(self.steer_seeds) or taken & set(self.steer_seeds):
            raise ValueError(f"samples: steer_seeds {list(self.steer_seeds)} must be distinct and differ from "
                             f"labeller_seed {self.labeller_seed} and reader_seed {self.reader_seed}: each "
                             "steering network is a network of its own, and calibration's reader must not "
                             "be one the steps follow")
        if self.yaw_from == "mediapipe":
            from headrot.labels.pose import MEDIAPIPE_HINT, mediapipe_available

            if not mediapipe_available():
                raise ValueError(f"samples: yaw_from mediapipe needs mediapipe, which is not installed: "
                                 f"{MEDIAPIPE_HINT} (or pip install 'headrot[landmarks]')")

    def generator_uri(self) -> str:
        return self.generator or RunLayout(self.root).model("generator")

    def labeller_uri(self) -> str:
        return RunLayout(self.root).labeller


def labeller_config(config: SamplesConfig, size: int):
    """The method's pose-and-light CNN (headrot.labels.pose), independent of the evaluation's."""
    from headrot.labels.pose import PoseConfig

    return PoseConfig(size=size, seed=config.labeller_seed, n_identities=config.labeller_identities,
                      epochs=config.labeller_epochs, width=config.labeller_width, arch="maxpool4", light=True)


def reader_config(config: SamplesConfig, size: int):
    """Calibration's reader: the labeller's settings with its own seed (None: no reader)."""
    from dataclasses import replace

    if config.reader_seed is None:
        return None
    return replace(labeller_config(config, size), seed=config.reader_seed)


def steerer_configs(config: SamplesConfig, size: int) -> list:
    """The local steps' steering networks: the labeller's settings, one per `steer_seeds`."""
    from dataclasses import replace

    return [replace(labeller_config(config, size), seed=seed) for seed in config.steer_seeds]


def steerer_keys(root: str) -> list[dict]:
    """The PoseConfig keys of the steering networks the samples stage trained ([]: none)."""
    done = storage.completion(RunLayout(root).samples)
    return list((done or {}).get("steerers") or [])


def labeller_key(root: str, which: str = "labeller") -> dict | None:
    """The PoseConfig key of the labeller (or, `which="reader"`, of calibration's reader) the
    samples stage trained (None: no samples stage in `root`, or no reader): what the render stage
    loads it by, and what the evaluation's judge must differ from."""
    done = storage.completion(RunLayout(root).samples)
    return None if done is None else done.get(which)


def load_labeller(uri: str, key: dict):
    """The labeller the samples stage trained, from its recorded PoseConfig key."""
    from headrot.labels.pose import PoseConfig, YawEstimator

    fields = {k: v for k, v in key.items() if k in PoseConfig.__dataclass_fields__}
    labeller = YawEstimator.load(uri, PoseConfig(**fields))
    if labeller is None:
        raise ValueError(f"labeller {runs.redact_uri(uri)} is missing or was trained with other settings: "
                         "rerun `headrot samples` (delete samples/ first)")
    return labeller


def fit_labeller(uri: str, pose_config) -> dict:
    """Ray task: train (or load) the labeller and cache it at `uri`; its metrics."""
    from headrot.labels.pose import load_or_fit

    labeller, cached = load_or_fit(uri, pose_config)
    return {**labeller.metrics, "cached": cached}


# ---------------------------------------------------------------------------
# The model actor


class SampleShards:
    """Model actor: loads the generator and the labeller once; generates one shard per call.
    Built from its config alone, so callable without Ray: SampleShards(config)(batch)."""

    def __init__(self, config: SamplesConfig, torch_threads: int | None = None):
        self.config = config
        self.acc, self.model, self.model_config, self.batch_size = sharding.generator_actor(
            config.generator_uri(), config.precision, config.compile, torch_threads, config.batch_size)
        key = labeller_config(config, self.model_config.image_size).key()
        self.labeller = load_labeller(config.labeller_uri(), key)
        self.actor = sharding.actor_name()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from headrot.model.sampler import noise_for_seeds, reverse_diffusion
        from headrot.report.grid import to_uint8

        start, stop = int(batch["start"][0]), int(batch["stop"][0])
        size = self.model_config.image_size
        ids = np.arange(start, stop, dtype=np.int64)
        seeds = NOISE_SEED_BASE * (self.config.seed + 1) + ids
        z = noise_for_seeds(seeds.tolist(), (3, size, size))
        images = np.zeros((len(ids), size, size, 3), np.uint8)
        with torch.inference_mode():
            for s in range(0, len(ids), self.batch_size):
                with self.acc.busy.timing(), self.acc.autocast():
                    x = self.acc.to_device(z[s:s + self.batch_size])
                    images[s:s + self.batch_size] = to_uint8(reverse_diffusion(self.model, x, steps=self.config.steps))
        read = self.labeller.predict_all(images)
        yaw = read[:, 0]
        if self.config.yaw_from == "mediapipe":
            from headrot.labels.pose import mediapipe_yaw

            # Landmarks -> yaw by CelebA's own formula; a sample with no face found has a NaN yaw,
            # which the fit counts out of the bins (rows_out_of_bins) rather than guessing.
            yaw = mediapipe_yaw(images)
        table = samples_table(ids, seeds, z.numpy(), yaw, read[:, 1], nuisance.image_statistics(images))
        return {"shard": batch["shard"], "table": np.array([tables.to_ipc(table)], dtype=object),
                "busy": np.array([json.dumps({"actor": self.actor, **self.acc.busy.snapshot()})], dtype=object)}


def samples_table(ids, seeds, latents, yaw, light_azimuth, stats) -> pa.Table:
    """One row per sample (schema in docs/CONTRACTS.md samples/)."""
    from headrot.labels.light import CENTER_HALF_WIDTH_DEG, classes_from_azimuth

    nuisances = np.concatenate([np.asarray(stats, np.float32), np.asarray(light_azimuth, np.float32)[:, None]], 1)
    return pa.table({
        "sample_id": pa.array(ids, pa.int64()),
        "seed": pa.array(seeds, pa.int64()),
        "latent": tables.tensor_column(np.asarray(latents, np.float32)),
        "yaw": pa.array(np.asarray(yaw, np.float32), pa.float32()),
        "light": pa.array(classes_from_azimuth(np.asarray(light_azimuth), CENTER_HALF_WIDTH_DEG).tolist(), pa.string()),
        "light_score": pa.array(np.asarray(light_azimuth, np.float32), pa.float32()),
        "nuisance": tables.tensor_column(nuisances),
    })


def write_shard(row: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """CPU task: write samples/<shard>.parquet (whole, last)."""
    table = tables.from_ipc(row["table"])
    tables.write_parquet(storage.join(out_dir, f"{row['shard']}.parquet"), table)
    return {"shard": row["shard"], "rows": table.num_rows, "busy": row.get("busy", "{}")}


# ---------------------------------------------------------------------------
# The stage


@locked(lambda config: config.root, STAGE)  # one writer per run root (headrot/lock.py)
def run_samples(config: SamplesConfig) -> dict[str, Any]:
    """Generate (or resume, or skip when complete) the labelled samples; returns the summary."""
    from headrot.model.checkpoint import load_model

    if not storage.exists(config.generator_uri()):
        raise ValueError(f"generator checkpoint {runs.redact_uri(config.generator_uri())} not found: "
                         "train one with `headrot train generator` or pass --generator")
    _, model_config, _ = load_model(config.generator_uri(), "generator")
    pose = labeller_config(config, model_config.image_size)
    digest = runs.fingerprint({
        "generator": runs.hash_uris([config.generator_uri()]),
        "config": {k: v for k, v in to_mapping(config).items()
                   if k not in ("root", "generator", "batch_size", "max_actors", "compile")},
    })
    out_dir = RunLayout(config.root).samples
    shards = sharding.split_rows(config.n, config.shard_size)
    todo = sharding.pending(out_dir, [name for name, _, _ in shards])
    stage = Stage(STAGE, config.root, out_dir, digest, to_mapping(config), "rows", "samples", pending=todo)
    return run_stage(stage, lambda: _generate(config, pose, out_dir, shards, set(todo)))


def _generate(config: SamplesConfig, pose, out_dir: str, shards, todo: set[str]) -> dict[str, Any]:
    """The work: the labeller (a Ray task), the model actor pool over the missing shards; the summary."""
    import ray

    started = time.time()
    reader_pose = reader_config(config, pose.size)
    steer_poses = steerer_configs(config, pose.size)
    fit = ray.remote(num_cpus=1)(fit_labeller)
    # Every network trains at once (one CPU each, as the cluster affords), before the model actors start.
    layout = RunLayout(config.root)
    jobs = [fit.remote(config.labeller_uri(), pose)]
    if reader_pose:
        jobs.append(fit.remote(layout.reader, reader_pose))
    steer_jobs = [fit.remote(layout.steerer(p.seed), p) for p in steer_poses]
    metrics, steer_metrics = ray.get(jobs), ray.get(steer_jobs)
    labeller, reader = metrics[0], (metrics[1] if reader_pose else None)
    log.info("samples: labeller %s; reader %s; %d steering networks; %d shards, %d to do", labeller, reader,
             len(steer_poses), len(shards), len(todo))
    work = [{"shard": name, "start": a, "stop": b} for name, a, b in shards if name in todo]
    summaries = []
    if work:
        plan = sharding.plan_pool(config.max_actors)
        ds = ray.data.from_items(work, override_num_blocks=len(work))
        ds = plan.map_batches(ds, SampleShards, batch_size=1, fn_constructor_kwargs={
            "config": config, "torch_threads": plan.torch_threads})
        ds = ds.map(write_shard, fn_kwargs={"out_dir": out_dir}, num_cpus=0.25)
        progress = sharding.Progress("samples", len(work), sum(w["stop"] - w["start"] for w in work))
        for summary in ds.iter_rows():
            summaries.append(summary)
            progress.update(1, int(summary["rows"]))
    summary = _summary(config, pose, labeller, reader_pose, reader, out_dir, shards, summaries, started)
    return {**summary, "steerers": [p.key() for p in steer_poses], "steerer_metrics": steer_metrics}


def _summary(config: SamplesConfig, pose, labeller, reader_pose, reader, out_dir, shards, summaries,
             started) -> dict[str, Any]:
    # The stage's own accounting: every planned shard's file, by name (a listing may miss the
    # files Ray's write tasks have just written: issue 13); a missing one fails the read.
    files = [storage.join(out_dir, f"{name}.parquet") for name, _, _ in shards]
    rows = sum(tables.count_rows(uri) for uri in files)
    if rows != config.n:
        raise RuntimeError(f"samples: {rows} rows written, {config.n} wanted; not marking the stage complete")
    # n 0: the networks alone, no file to read the labels from.
    yaw = tables.read_parquet_files(files, columns=["yaw", "light"]) if files else None
    lights = yaw.column("light").to_pylist() if yaw is not None else []
    elapsed = time.time() - started
    return {
        "rows": rows,
        "shards": len(shards),
        "shards_this_run": len(summaries),
        "labeller": pose.key(),
        "labeller_metrics": labeller,
        "reader": reader_pose.key() if reader_pose else None,
        "reader_metrics": reader,
        "nuisances": list(NUISANCES),
        # NaN: no face found (mediapipe); None: no samples (n 0)
        "yaw_sd": round(float(np.nanstd(yaw.column("yaw").to_numpy())), 3) if yaw is not None else None,
        "light_counts": {k: lights.count(k) for k in sorted(set(lights))},
        "samples_per_s": round(sum(int(s["rows"]) for s in summaries) / elapsed, 2) if summaries else None,
        "model_busy_fraction": sharding.busy_fraction(s["busy"] for s in summaries),
        "seconds": round(elapsed, 1),
    }
