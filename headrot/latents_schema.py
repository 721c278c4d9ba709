"""The latents table (latents/part-NNNNN.parquet): one schema, built in one place.

The embed stage writes it; the benchmarks and the tests that fabricate latents build theirs
through the same function, so a column added here reaches all three.

    image_id      string      the CelebA file name
    partition     int8        list_eval_partition (0 train, 1 val, 2 test)
    identity      int32       identity_CelebA
    <attribute>   bool        each CelebA attribute of the index (40 on real data)
    landmarks     float32[10] the 5 aligned landmarks (x, y)
    light         string      left | center | right
    light_score   float32     the light classifier's score (or 1 for a given label)
    light_source  string      labels | classifier | none
    yaw           float32     degrees, from the landmarks (headrot.labels.yaw)
    latent        float32 or float16 tensor [3, S, S]: x_T of the 10-step DDIM
    recon_error   float32     mean |G(x_T) - x| of the embedding (NaN when not measured:
                              the embed stage's reconstruct_every)
    recon_psnr    float32     PSNR of G(x_T) against the image (dB; NaN when not measured)
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from headrot import tables

# Index columns the latents keep (besides the attributes, which are the bool columns).
INDEX_COLUMNS = ("image_id", "partition", "identity", "landmarks", "light", "light_score", "light_source")
# Index columns the latents drop: where the image was, and the user's raw light label
# (its verdict is in light / light_source).
DROPPED = ("path", "light_label")


def latents_table(rows: pa.Table, yaw: np.ndarray, latents: np.ndarray, recon_error: np.ndarray,
                  recon_psnr: np.ndarray, latent_dtype: str = "float32") -> pa.Table:
    """The latents rows of `rows` (index rows with light labels, one per latent) and their embedding."""
    missing = [c for c in INDEX_COLUMNS if c not in rows.column_names]
    if missing:
        raise ValueError(f"latents table: the index rows lack columns {missing}")
    if not len(yaw) == len(latents) == len(recon_error) == len(recon_psnr) == rows.num_rows:
        raise ValueError(f"latents table: {rows.num_rows} rows but {len(yaw)} yaws, {len(latents)} latents, "
                         f"{len(recon_error)} errors, {len(recon_psnr)} PSNRs")
    out = rows.drop_columns([c for c in DROPPED if c in rows.column_names])
    out = out.append_column("yaw", pa.array(np.asarray(yaw, np.float32), pa.float32()))
    out = out.append_column("latent", tables.tensor_column(np.asarray(latents).astype(latent_dtype)))
    out = out.append_column("recon_error", pa.array(np.asarray(recon_error, np.float32), pa.float32()))
    return out.append_column("recon_psnr", pa.array(np.asarray(recon_psnr, np.float32), pa.float32()))


def index_rows(image_ids, partition, identity, attributes: dict[str, np.ndarray], landmarks: np.ndarray,
               light, light_score=None, light_source: str = "labels") -> pa.Table:
    """Index rows as the embed stage has them before embedding (for benches and tests that
    fabricate latents without images)."""
    n = len(image_ids)
    columns = {
        "image_id": pa.array(list(image_ids), pa.string()),
        "partition": pa.array(np.asarray(partition), pa.int8()),
        "identity": pa.array(np.asarray(identity), pa.int32()),
        **{a: pa.array(np.asarray(v, bool), pa.bool_()) for a, v in attributes.items()},
        "landmarks": pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(landmarks, np.float32).reshape(-1)), 10),
        "light": pa.array(list(light), pa.string()),
        "light_score": pa.array(np.ones(n, np.float32) if light_score is None else np.asarray(light_score, np.float32)),
        "light_source": pa.array([light_source] * n, pa.string()),
    }
    return pa.table(columns)
