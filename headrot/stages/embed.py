"""Stage 1, embed: CelebA images -> latents/*.parquet with yaw and light labels.

    index (driver) -> light pass: decode, light features (CPU tasks) -> classifier (driver)
                   -> shards -> decode (CPU tasks) -> embed (model actor pool) -> write (CPU tasks)

One Ray Data row per shard (see sharding.py): the shard's index rows travel as
Arrow IPC bytes and its images as one uint8 buffer, so no block boundary Ray
chooses can split a shard. Each shard writes latents/part-NNNNN.parquet and
rejected/embed-part-NNNNN.parquet, and the shard's sums of the mean-face figure
(latents/_mean_faces/part-NNNNN.npz, before its latents file); a resumed stage redoes only
missing shards and draws the figure from every shard's sums, not only this run's.
"""
from __future__ import annotations

import io
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from headrot import rejects, runs, storage, tables
from headrot.config import to_mapping
from headrot.data import celeba_text
from headrot.data.dataset import decode_batch, select_rows
from headrot.data.images import central_square
from headrot.data.index import Index, read_index
from headrot.latents_schema import latents_table
from headrot.layout import RunLayout
from headrot.lock import locked
from headrot.stages import sharding
from headrot.stages.protocol import Stage, run_stage

log = logging.getLogger(__name__)

STAGE = "embed"
# The aligned CelebA frame the landmarks refer to.
ALIGNED_SIZE = (178, 218)


# ---------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class EmbedConfig:
    data: str                                            # CelebA-layout root: folder or s3://bucket/prefix
    out: str                                             # run root
    method: Literal["network", "inversion", "refine"] = "inversion"
    generator: str | None = None                         # default: <out>/checkpoints/generator/model.pt
    embedder: str | None = None                          # default: <out>/checkpoints/embedder/model.pt (network)
    refine_from: Literal["inversion", "network"] = "inversion"
    light_labels: str | None = None                      # CSV image_id,light; wins where given
    steps: int = 10                                      # DDIM steps inside the embedding (the paper's 10)
    refine_steps: int = 30                               # Adam steps of the refine method
    refine_lr: float = 0.05
    inversion_iterations: tuple[int, int] = (5, 2)       # see headrot.model.embedding.embed
    partitions: tuple[int, ...] | None = None            # None: every partition
    limit: int | None = None                             # first N index rows (after partitions)
    shard_size: int = 512                                # rows per output file
    batch_size: int = 64                                 # images per network call
    max_actors: int | None = None                        # model actors (default: one per GPU, else 1)
    latent_dtype: Literal["float32", "float16"] = "float32"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPUs, fp32 on CPU
    compile: bool = False                                # torch.compile the networks (CUDA graphs on GPU)
    light_image_size: int = 32                           # size of the images light features come from
    seed: int = 0
    # Reconstruction error (recon_error, recon_psnr) of every Nth row of a shard, NaN for the others:
    # the decode that measures it is a diagnostic of `steps` calls a row, a quarter of inversion's
    # cost and 10 of the network embedding's 11 (1: every row; "refine" measures every row anyway).
    reconstruct_every: int = 1
    fail_after_shards: int | None = None                 # testing: the actor raises after N shards

    def __post_init__(self):
        if self.reconstruct_every < 1:
            raise ValueError(f"embed: reconstruct_every must be >= 1 (1: every row), got {self.reconstruct_every}")


def resolve_checkpoints(config: EmbedConfig) -> tuple[str, str | None]:
    generator = config.generator or RunLayout(config.out).model("generator")
    embedder = None
    if config.method == "network" or (config.method == "refine" and config.refine_from == "network"):
        embedder = config.embedder or RunLayout(config.out).model("embedder")
    for what, uri in (("generator", generator), ("embedder", embedder)):
        if uri is not None and not storage.exists(uri):
            raise ValueError(
                f"{what} checkpoint {runs.redact_uri(uri)} not found: train one with "
                f"`headrot train {what} --data ... --out {runs.redact_uri(config.out)}` "
                f"or pass --{what} URI"
            )
    return generator, embedder


# ---------------------------------------------------------------------------
# Landmarks in the model's frame


def landmarks_in_crop(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Aligned-image landmark coordinates [N,10] -> coordinates in the S x S preprocessed image."""
    left, top, right, _ = central_square(*ALIGNED_SIZE)
    scale = size / (right - left)
    out = np.asarray(landmarks, dtype=np.float32).copy()
    # Pixel centres sit on whole coordinates in both frames, so the map is affine about
    # centres (x + 0.5) * scale - 0.5, not corners: without it landmarks land ~0.4 px right
    # at 32 px, which biased the light heuristic by several degrees.
    out[:, 0::2] = (out[:, 0::2] - left + 0.5) * scale - 0.5
    out[:, 1::2] = (out[:, 1::2] - top + 0.5) * scale - 0.5
    return out


def _landmarks(table: pa.Table) -> np.ndarray:
    col = table.column("landmarks").combine_chunks()
    return col.flatten().to_numpy().reshape(len(table), 10).astype(np.float32)


# ---------------------------------------------------------------------------
# Light pass: features from every image, then one classifier over all of them


def light_pass(index_rows: pa.Table, config: EmbedConfig) -> pa.Table:
    """image_id, light, light_score, light_source for every row (rejected images get none)."""
    import ray

    from headrot.labels import light as lightlib
    from headrot.labels.yaw import yaw_from_landmarks

    size = config.light_image_size
    ids, feats, yaws, known = [], [], [], []
    blocks = [index_rows.slice(s, 1024) for s in range(0, index_rows.num_rows, 1024)] or [index_rows]

    def features(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = decode_batch(batch, size)
        ok = batch["reject_reason"] == ""
        marks = np.stack(batch["landmarks"]).astype(np.float32)
        yaw = yaw_from_landmarks(marks)
        f = lightlib.light_features(batch["image"], landmarks_in_crop(marks, size), yaw)
        return {"image_id": batch["image_id"][ok], "features": f[ok], "yaw": yaw[ok],
                "light_label": batch["light_label"][ok]}

    ds = ray.data.from_arrow(blocks).select_columns(["image_id", "path", "landmarks", "light_label"])
    ds = ds.map_batches(features, batch_size=256, batch_format="numpy", num_cpus=1)
    for batch in ds.iter_batches(batch_size=4096, batch_format="numpy"):
        ids.append(batch["image_id"])
        feats.append(batch["features"])
        yaws.append(batch["yaw"])
        known.append(batch["light_label"])
    if not ids:
        return pa.table({"image_id": pa.array([], pa.string()), "light": pa.array([], pa.string()),
                         "light_score": pa.array([], pa.float32()), "light_source": pa.array([], pa.string())})
    ids = np.concatenate(ids)
    feats = np.concatenate(feats)
    yaws = np.concatenate(yaws)
    known = np.array([k if isinstance(k, str) else "" for k in np.concatenate(known)], dtype=object)
    labeler = lightlib.LightLabeler(seed=config.seed).fit(feats, yaws, known)
    labels, scores, sources = labeler.predict(feats, yaws, known)
    return pa.table({
        "image_id": pa.array(ids.astype(str), pa.string()),
        "light": pa.array(np.asarray(labels, dtype=str), pa.string()),
        "light_score": pa.array(np.asarray(scores, dtype=np.float32), pa.float32()),
        "light_source": pa.array(np.asarray(sources, dtype=str), pa.string()),
    })


# ---------------------------------------------------------------------------
# The shard pipeline: plain functions and one callable class


def prepare_shard(row: dict[str, Any], size: int) -> dict[str, Any]:
    """CPU task: decode and crop every image of a shard."""
    rows = tables.from_ipc(row["rows"])
    decoded = decode_batch({"path": np.array(rows.column("path").to_pylist(), dtype=object)}, size)
    return {
        "shard": row["shard"],
        "rows": row["rows"],
        "images": decoded["image"].tobytes(),
        "reasons": "\n".join(decoded["reject_reason"].tolist()),
        "n": rows.num_rows,
    }


class EmbedShards:
    """Model actor: loads the networks once, embeds one shard per call (batch_size=1). Built from
    its config alone, so callable without Ray: EmbedShards(config)(batch)."""

    def __init__(self, config: EmbedConfig, torch_threads: int | None = None):
        import torch

        from headrot.model.accel import Inference, probe_batch_size
        from headrot.model.checkpoint import load_model

        generator_uri, embedder_uri = resolve_checkpoints(config)
        sharding.set_torch_threads(torch_threads)
        self.config = config
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.acc = Inference.for_device(self.device, config.precision, config.compile)
        generator, generator_config, _ = load_model(generator_uri, "generator", map_location=self.device)
        self.size = size = generator_config.image_size
        self.generator = self.acc.prepare(generator)
        self.calls = 0
        self.actor = sharding.actor_name()
        self.embedder = None
        if embedder_uri is not None:
            embedder, _, _ = load_model(embedder_uri, "embedder", map_location=self.device)
            self.embedder = self.acc.prepare(embedder)
        # The probe measures a forward pass: right for inversion and the embedder network; refine
        # back-propagates through the 10 generator calls (~10x the activations), so it keeps the
        # configured batch.
        self.batch_size = config.batch_size if config.method == "refine" else \
            probe_batch_size(self.generator, self.acc, size, config.batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from headrot.model.embedding import embed, psnr

        self.calls += 1
        sharding.fault_point(self.calls, STAGE)  # tests only (HEADROT_FAULT); a no-op otherwise
        if self.config.fail_after_shards is not None and self.calls > self.config.fail_after_shards:
            raise RuntimeError(f"embed: simulated failure after {self.config.fail_after_shards} shards")
        n = int(batch["n"][0])
        images = np.frombuffer(batch["images"][0], dtype=np.uint8).reshape(n, self.size, self.size, 3)
        reasons = str(batch["reasons"][0]).split("\n") if n else []
        good = np.flatnonzero(np.array([r == "" for r in reasons], dtype=bool))
        latents = np.zeros((len(good), 3, self.size, self.size), dtype=np.float32)
        errors = np.zeros(len(good), dtype=np.float32)
        psnrs = np.zeros(len(good), dtype=np.float32)
        # By the row's place in its shard, so the same rows are measured whatever was rejected.
        measured = good % self.config.reconstruct_every == 0
        bs = self.batch_size
        for start in range(0, len(good), bs):
            sel = good[start:start + bs]
            with self.acc.busy.timing(), self.acc.autocast():
                # uint8 over the bus (4x fewer bytes than float32), scaled on the device.
                x = self.acc.to_device(images[sel]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
                result = embed(
                    x, self.config.method, self.generator, embedder=self.embedder,
                    steps=self.config.steps, refine_steps=self.config.refine_steps,
                    refine_lr=self.config.refine_lr, refine_from=self.config.refine_from,
                    inversion_iterations=self.config.inversion_iterations,
                    reconstruct=None if measured[start:start + bs].all() else
                    torch.from_numpy(measured[start:start + bs]),
                )
                latents[start:start + len(sel)] = result.latents.float().cpu().numpy()
                errors[start:start + len(sel)] = result.recon_error.float().cpu().numpy()
                if result.reconstructions is not None:
                    psnrs[start:start + len(sel)] = psnr(result.reconstructions.float(), x).float().cpu().numpy()
        return {
            "shard": batch["shard"], "rows": batch["rows"], "images": batch["images"],
            "reasons": batch["reasons"], "n": batch["n"],
            "latents": np.array([latents.tobytes()], dtype=object),
            "recon_error": np.array([errors.tobytes()], dtype=object),
            "recon_psnr": np.array([psnrs.tobytes()], dtype=object),
            "busy": np.array([json.dumps({"actor": self.actor, **self.acc.busy.snapshot()})], dtype=object),
        }


# Yaw bins of the mean-face figure (the paper's figure groups poses like this).
MEAN_FACE_EDGES = (-45.0, -27.0, -9.0, 9.0, 27.0, 45.0)


def write_shard(row: dict[str, Any], root: str, size: int, latent_dtype: str) -> dict[str, Any]:
    """CPU task: assemble the shard's latents table, write it and its rejections; return a summary."""
    from headrot.labels.yaw import yaw_from_landmarks

    rows = tables.from_ipc(row["rows"])
    n = int(row["n"])
    reasons = row["reasons"].split("\n") if n else []
    images = np.frombuffer(row["images"], dtype=np.uint8).reshape(n, size, size, 3)
    good = np.array([r == "" for r in reasons], dtype=bool)
    latents = np.frombuffer(row["latents"], dtype=np.float32).reshape(-1, 3, size, size)
    kept = rows.filter(pa.array(good)) if n else rows
    marks = _landmarks(kept) if kept.num_rows else np.zeros((0, 10), np.float32)
    yaw = yaw_from_landmarks(marks).astype(np.float32) if kept.num_rows else np.zeros(0, np.float32)
    out = latents_table(kept, yaw, latents, np.frombuffer(row["recon_error"], np.float32),
                        np.frombuffer(row["recon_psnr"], np.float32), latent_dtype)
    bad = [(rows.column("image_id")[i].as_py(), reasons[i]) for i in np.flatnonzero(~good)]
    layout = RunLayout(root)
    rejects.write_rejected(root, STAGE, row["shard"],
                           {"image_id": [b[0] for b in bad], "reason": [b[1] for b in bad]})
    sums, counts = mean_face_sums(images[good], kept.column("light").to_pylist() if kept.num_rows else [], yaw)
    write_mean_face_sums(layout.mean_face_sums(row["shard"]), sums, counts)
    # The latents file last: a shard whose file exists is done (sharding.pending), so its
    # rejections and mean-face sums must already be there when a kill lands between the writes.
    tables.write_parquet(layout.shard(layout.latents, row["shard"]), out)
    return {
        "shard": row["shard"], "rows": n, "written": int(out.num_rows),
        "rejected": json_counter(Counter(r.split(":")[0] for r in reasons if r)),
        "busy": row.get("busy", "{}"),
    }


# ---------------------------------------------------------------------------
# The mean-face figure (the paper's): sums per (light class, yaw bin), per shard


def mean_face_sums(images: np.ndarray, lights: list[str], yaw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sums [L, B, S, S, 3] float64, counts [L, B]) of the images [N, S, S, 3] (N may be 0: a
    shard whose every image was rejected) by light class and yaw bin."""
    size = images.shape[1]
    bins = np.digitize(yaw, MEAN_FACE_EDGES[1:-1])
    sums = np.zeros((3, len(MEAN_FACE_EDGES) - 1, size, size, 3), dtype=np.float64)
    counts = np.zeros((3, len(MEAN_FACE_EDGES) - 1), dtype=np.int64)
    for i, light in enumerate(lights):
        li = celeba_text.LIGHT_CLASSES.index(light)
        sums[li, bins[i]] += images[i]
        counts[li, bins[i]] += 1
    return sums, counts


def write_mean_face_sums(uri: str, sums: np.ndarray, counts: np.ndarray) -> None:
    # float32 holds a shard's integer sums exactly (< 2**24 = 65,793 images of 255); compressed,
    # because most (light, bin) cells of a shard are empty.
    buf = io.BytesIO()
    np.savez_compressed(buf, sums=sums.astype(np.float32), counts=counts)
    storage.write_bytes(uri, buf.getvalue())


def read_mean_face_sums(layout: RunLayout, shards: list[str], size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The sums over every planned shard, whoever wrote it; and the shards without sums (written
    by a headrot that kept none: the stage's summary counts them, `mean_faces.shards_without_sums`)."""
    n_bins = len(MEAN_FACE_EDGES) - 1
    sums, counts = np.zeros((3, n_bins, size, size, 3)), np.zeros((3, n_bins), np.int64)
    missing = []
    for shard in shards:
        try:
            with np.load(io.BytesIO(storage.read_bytes(layout.mean_face_sums(shard))), allow_pickle=False) as f:
                sums += f["sums"]
                counts += f["counts"]
        except FileNotFoundError:
            missing.append(shard)
    return sums, counts, missing


def json_counter(counter: Counter) -> str:
    return json.dumps(dict(counter))


# ---------------------------------------------------------------------------
# The stage


def _data_fingerprint(data: str, light_labels: str | None) -> str:
    root = data.rstrip("/")
    files = [storage.join(root, f) for f in (
        celeba_text.ATTRIBUTES_FILE, celeba_text.LANDMARKS_FILE,
        celeba_text.PARTITION_FILE, celeba_text.IDENTITY_FILE, celeba_text.LIGHT_FILE)]
    if light_labels:
        files.append(light_labels)
    return runs.hash_uris(files)


@locked(lambda config: config.out, STAGE)   # one writer per run root (headrot/lock.py)
def run_embed(config: EmbedConfig) -> dict[str, Any]:
    """Run (or resume) the embed stage; returns its summary (also in latents/_SUCCESS)."""
    generator_uri, embedder_uri = resolve_checkpoints(config)
    digest = runs.fingerprint({
        "data": _data_fingerprint(config.data, config.light_labels),
        "generator": runs.hash_uris([generator_uri]),
        "embedder": runs.hash_uris([embedder_uri]) if embedder_uri else None,
        "config": {k: v for k, v in to_mapping(config).items()
                   if k not in ("out", "max_actors", "batch_size", "fail_after_shards", "compile")},
    })
    # No `pending` here: the shards come from the index, read only when there is work to do.
    stage = Stage(STAGE, config.out, RunLayout(config.out).latents, digest, to_mapping(config),
                  "written", "rows written")
    return run_stage(stage, lambda: _embed(config, generator_uri))


def _embed(config: EmbedConfig, generator_uri: str) -> dict[str, Any]:
    """The work: the index, the light pass, the pipeline over the missing shards; the summary."""
    from headrot.model.checkpoint import load_model

    started = time.time()
    layout = RunLayout(config.out)
    size = load_model(generator_uri, "generator")[1].image_size
    # Index: text-level rejections are written once, before any image work.
    index: Index = read_index(config.data, light_labels=config.light_labels)
    rejects.write_rejected(config.out, "read", "index", index.rejected)
    rows = select_rows(index, config.partitions, config.limit).sort_by("image_id")
    log.info("embed: %d rows to embed (%d rejected by the index) from %s",
             rows.num_rows, index.n_rejected, runs.redact_uri(config.data))
    # Light labels: one classifier over the whole selection, kept beside the latents.
    if storage.exists(layout.light_labels):
        labels = tables.read_parquet(layout.light_labels)
    else:
        labels = light_pass(rows, config)
        tables.write_parquet(layout.light_labels, labels)
    rows = _join_labels(rows, labels)
    shards = sharding.split_rows(rows.num_rows, config.shard_size)
    todo = set(sharding.pending(layout.latents, [name for name, _, _ in shards]))
    log.info("embed: %d shards, %d to do", len(shards), len(todo))
    work = [(name, a, b) for name, a, b in shards if name in todo]
    summaries = _run_pipeline(config, rows, work, size) if work else []
    return _finish(config, rows, index, shards, summaries, size, started)


def _run_pipeline(config: EmbedConfig, rows: pa.Table, work, size: int) -> list[dict[str, Any]]:
    """decode (CPU tasks) -> EmbedShards (model actor pool) -> write_shard (CPU tasks); the shards' summaries."""
    import ray

    plan = sharding.plan_pool(config.max_actors)
    items = [{"shard": name, "rows": tables.to_ipc(rows.slice(a, b - a))} for name, a, b in work]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map(prepare_shard, fn_kwargs={"size": size}, num_cpus=0.5)
    ds = plan.map_batches(
        ds, EmbedShards, batch_size=1,
        fn_constructor_kwargs={"config": config, "torch_threads": plan.torch_threads},
    )
    ds = ds.map(write_shard, fn_kwargs={"root": config.out, "size": size,
                                        "latent_dtype": config.latent_dtype}, num_cpus=0.25)
    progress = sharding.Progress("embed", len(items), sum(b - a for _, a, b in work))
    summaries = []
    for summary in ds.iter_rows():
        summaries.append(summary)
        progress.update(1, int(summary["rows"]))
    return summaries


def _join_labels(rows: pa.Table, labels: pa.Table) -> pa.Table:
    """Attach light, light_score, light_source to every index row (rows with no label: the
    image was rejected while decoding; they get 'center' / 0 / 'none' and are rejected again)."""
    lookup = {i: k for k, i in enumerate(labels.column("image_id").to_pylist())}
    pos = [lookup.get(i, -1) for i in rows.column("image_id").to_pylist()]
    def take(col: str, default):
        values = labels.column(col).to_pylist()
        return [values[p] if p >= 0 else default for p in pos]
    rows = rows.append_column("light", pa.array(take("light", "center"), pa.string()))
    rows = rows.append_column("light_score", pa.array(take("light_score", 0.0), pa.float32()))
    return rows.append_column("light_source", pa.array(take("light_source", "none"), pa.string()))


def _account(root: str, shard_names: list[str]) -> tuple[int, pa.Table]:
    """(rows written, rejection rows) over every shard the stage planned, whoever wrote it (this
    run or an interrupted one): the stage's own accounting. Each file is read back by its name,
    not found by listing the folder, so what decides _SUCCESS is the plan, not what a listing
    shows (issue 13); a planned shard whose file is missing is an error naming it."""
    latents = RunLayout(root).latents
    written = sum(_planned(storage.join(latents, f"{name}.parquet"), tables.count_rows)
                  for name in shard_names)
    # Index-level rejections (written once, before the shards), then each shard's.
    names = [rejects.rejected_uri(root, "read", "index")] + \
        [rejects.rejected_uri(root, STAGE, name) for name in shard_names]
    rejected = [_planned(uri, lambda u: rejects.read_rejected_files([u])) for uri in names]
    return written, pa.concat_tables(rejected)


def _planned(uri: str, read):
    """read(uri) of a file the stage planned; a missing one is an error naming it."""
    try:
        return read(uri)
    except FileNotFoundError:
        raise RuntimeError(f"embed: {runs.redact_uri(uri)} is missing after the work: not marking the "
                           "stage complete. Rerun the same command; it redoes only missing shards "
                           "(if this file stays missing, delete its shard's latents file first)") from None


def _finish(config, rows, index, shards, summaries, size, started) -> dict[str, Any]:
    layout = RunLayout(config.out)
    names = [name for name, _, _ in shards]
    written, rejected = _account(config.out, names)
    elapsed = time.time() - started
    n_new = sum(int(s["rows"]) for s in summaries)
    summary = {
        "rows_in": int(rows.num_rows + index.n_rejected),
        "written": written,
        "rejected": int(rejected.num_rows),
        "rejected_by_reason": rejects.count_by_reason(rejected),
        "shards": len(shards),
        "shards_this_run": len(summaries),
        "images_per_s": round(n_new / elapsed, 2) if elapsed > 0 else None,
        "model_busy_fraction": sharding.busy_fraction(s["busy"] for s in summaries),
        "seconds": round(elapsed, 1),
        "method": config.method,
        "image_size": size,
    }
    if summary["written"] + summary["rejected"] != summary["rows_in"]:
        # Every input row must be accounted for; a mismatch is a bug, never a success.
        raise RuntimeError(f"embed: rows in {summary['rows_in']} != written {summary['written']} "
                           f"+ rejected {summary['rejected']}; not marking the stage complete")
    summary["mean_faces"] = write_mean_faces(layout, names, size)
    return summary


def write_mean_faces(layout: RunLayout, shards: list[str], size: int) -> dict[str, Any]:
    """report/mean_faces.png from every planned shard's sums (a resumed stage included); what it counts."""
    from headrot.report.mean_faces import mean_face_grid

    sums, counts, missing = read_mean_face_sums(layout, shards, size)
    if missing:
        log.warning("embed: %d shards (e.g. %s) have no mean-face sums (written by an older headrot): "
                    "report/mean_faces.png leaves their images out", len(missing), missing[0])
    image = mean_face_grid(sums, counts, celeba_text.LIGHT_CLASSES, MEAN_FACE_EDGES)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    storage.write_bytes(layout.report_file("mean_faces.png"), buf.getvalue())
    return {"images": int(counts.sum()), "shards_without_sums": len(missing)}
