"""Write a synthetic dataset in exactly the CelebA layout, plus truth.parquet.

Files (DESIGN.md "The CelebA layout"): img_align_celeba/NNNNNN.jpg,
list_attr_celeba.txt, list_landmarks_align_celeba.txt, list_eval_partition.txt,
identity_CelebA.txt; and truth.parquet with each image's pose, light and the
identity's parameters, so evaluation can re-render any identity at any yaw under
the same light (`render_face(IdentityParams.from_dict(row["params"]), ...)`).

Deterministic: the same config gives byte-identical files. Each identity's poses
come from its own stream (default_rng([seed, identity, 1])), so they do not
depend on how many images are written.
"""
from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from headrot import storage
from headrot.config import from_mapping, to_mapping
from headrot.labels.yaw import LANDMARK_NAMES
from headrot.synth.identity import ATTRIBUTE_NAMES, IdentityParams, celeba_attributes, sample_identity
from headrot.synth.render import render_face

# Light classes from the continuous azimuth (degrees, < 0 = image-left). Beyond
# +-20 deg one side of the face is plainly brighter than the other (Lambertian:
# the two cheeks' normals, ~+-45 deg, differ in cos by > 0.25); inside it the
# face reads as frontally lit, as the paper's 'center' class.
LIGHT_LEFT_BELOW = -20.0
LIGHT_RIGHT_ABOVE = 20.0

PARTITION_SHARES = (0.8, 0.1, 0.1)  # train / val / test, by identity as CelebA


@dataclass(frozen=True)
class SynthConfig:
    n: int = 1000
    seed: int = 0
    images_per_identity: int = 20          # CelebA: 202,599 images of 10,177 people, ~20 each
    yaw_range: tuple[float, float] = (-45.0, 45.0)
    light_range: tuple[float, float] = (-75.0, 75.0)
    pitch_max: float = 5.0                 # |pitch| <= this, uniform
    roll_max: float = 4.0                  # |roll| <= this: exercises the yaw estimator's roll removal
    width: int = 178
    height: int = 218
    jpeg_quality: int = 95

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.images_per_identity < 1:
            raise ValueError(f"images_per_identity must be >= 1, got {self.images_per_identity}")
        lo, hi = self.yaw_range
        if not -80 <= lo <= hi <= 80:
            raise ValueError(f"yaw_range must satisfy -80 <= lo <= hi <= 80, got {self.yaw_range}")
        if self.width < 16 or self.height < 16:
            raise ValueError(f"image size too small: {self.width}x{self.height}")


def light_class(azimuth_deg) -> np.ndarray:
    """'left' | 'center' | 'right' for light azimuths (degrees)."""
    az = np.asarray(azimuth_deg, dtype=float)
    return np.where(az < LIGHT_LEFT_BELOW, "left", np.where(az > LIGHT_RIGHT_ABOVE, "right", "center"))


# ---------------------------------------------------------------------------
# The plan: who is in which image, in which pose and light


def plan(config: SynthConfig) -> list[dict]:
    """One dict per image, in file order: image_id, identity, yaw, pitch, roll, light_azimuth, partition."""
    k = config.images_per_identity
    n_ids = math.ceil(config.n / k)
    # Identity partition: shuffle identities, then 80 / 10 / 10 (at least one each when >= 3).
    rng = np.random.default_rng([config.seed, 0])
    order = rng.permutation(n_ids)
    n_val = max(1, round(n_ids * PARTITION_SHARES[1])) if n_ids >= 3 else 0
    n_test = max(1, round(n_ids * PARTITION_SHARES[2])) if n_ids >= 3 else 0
    partition = np.zeros(n_ids, dtype=np.int8)
    partition[order[n_ids - n_val - n_test:n_ids - n_test]] = 1
    partition[order[n_ids - n_test:]] = 2

    lo, hi = config.yaw_range
    a_lo, a_hi = config.light_range
    slots = []
    for i in range(n_ids):
        identity = i + 1
        r = np.random.default_rng([config.seed, identity, 1])
        # Stratified yaw: each identity covers the whole range, every yaw bin is populated.
        strata = r.permutation(k)
        yaw = lo + (strata + r.random(k)) / k * (hi - lo)
        light = r.uniform(a_lo, a_hi, k)
        pitch = r.uniform(-config.pitch_max, config.pitch_max, k)
        roll = r.uniform(-config.roll_max, config.roll_max, k)
        for j in range(k):
            slots.append(dict(identity=identity, yaw=float(yaw[j]), pitch=float(pitch[j]),
                              roll=float(roll[j]), light_azimuth=float(light[j]),
                              partition=int(partition[i])))
    slots = slots[: config.n]
    # CelebA interleaves people; so do we.
    shuffled = [slots[i] for i in rng.permutation(len(slots))]
    for idx, row in enumerate(shuffled):
        row["image_id"] = f"{idx + 1:06d}.jpg"
    return shuffled


# ---------------------------------------------------------------------------
# Text files in CelebA's formats


def _attr_file(rows: list[dict], attrs: dict[int, dict[str, int]]) -> str:
    lines = [f"{len(rows)}", " ".join(ATTRIBUTE_NAMES) + " "]
    for row in rows:
        a = attrs[row["identity"]]
        lines.append(row["image_id"] + " " + " ".join(f"{a[name]:2d}" for name in ATTRIBUTE_NAMES))
    return "\n".join(lines) + "\n"


def _landmark_file(rows: list[dict], landmarks: np.ndarray) -> str:
    lines = [f"{len(rows)}", " ".join(LANDMARK_NAMES)]
    for row, lm in zip(rows, landmarks):
        lines.append(row["image_id"] + " " + "".join(f"{int(v):5d}" for v in lm))
    return "\n".join(lines) + "\n"


def _simple_file(rows: list[dict], key: str) -> str:
    return "".join(f"{row['image_id']} {row[key]}\n" for row in rows)


def round_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """The integer landmarks written to the file (CelebA's are integers)."""
    return np.floor(np.asarray(landmarks) + 0.5).astype(np.int64)


# ---------------------------------------------------------------------------
# The writer


def write_synthetic_celeba(out_dir: str, n: int, seed: int = 0, **options) -> dict:
    """Render n images and write the CelebA layout + truth.parquet under out_dir (local or s3://).

    options: the other SynthConfig fields (images_per_identity, yaw_range, light_range,
    pitch_max, roll_max, width, height, jpeg_quality). Returns a summary dict.
    """
    config = from_mapping(SynthConfig, {"n": n, "seed": seed, **options}, where="synth")
    start = time.perf_counter()
    rows = plan(config)
    identities = sorted({row["identity"] for row in rows})
    params = {i: sample_identity(config.seed, i) for i in identities}
    attrs = {i: celeba_attributes(p) for i, p in params.items()}

    landmarks = np.zeros((len(rows), 10))
    render_s = 0.0
    for idx, row in enumerate(rows):
        t0 = time.perf_counter()
        img, lm = render_face(params[row["identity"]], row["yaw"], row["light_azimuth"],
                              pitch=row["pitch"], roll=row["roll"], width=config.width, height=config.height)
        render_s += time.perf_counter() - t0
        landmarks[idx] = lm
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=config.jpeg_quality)
        storage.write_bytes(storage.join(out_dir, "img_align_celeba", row["image_id"]), buf.getvalue())

    ints = round_landmarks(landmarks)
    for row in rows:
        row["light"] = str(light_class(row["light_azimuth"]))
    files = {
        "list_attr_celeba.txt": _attr_file(rows, attrs),
        "list_landmarks_align_celeba.txt": _landmark_file(rows, ints),
        "list_eval_partition.txt": _simple_file(rows, "partition"),
        "identity_CelebA.txt": _simple_file(rows, "identity"),
    }
    for name, text in files.items():
        storage.write_bytes(storage.join(out_dir, name), text.encode())
    storage.write_bytes(storage.join(out_dir, "truth.parquet"), _truth_parquet(config, rows, landmarks, params))

    seconds = time.perf_counter() - start
    counts = np.bincount([row["partition"] for row in rows], minlength=3)
    return {
        "out_dir": out_dir,
        "images": len(rows),
        "identities": len(identities),
        "partitions": {"train": int(counts[0]), "val": int(counts[1]), "test": int(counts[2])},
        "lights": {c: sum(row["light"] == c for row in rows) for c in ("left", "center", "right")},
        "seconds": round(seconds, 3),
        "render_seconds": round(render_s, 3),
        "images_per_s": round(len(rows) / seconds, 1),
        "config": to_mapping(config),
    }


def _truth_parquet(config: SynthConfig, rows: list[dict], landmarks: np.ndarray, params: dict) -> bytes:
    table = pa.table({
        "image_id": pa.array([r["image_id"] for r in rows], pa.string()),
        "identity": pa.array([r["identity"] for r in rows], pa.int32()),
        "yaw": pa.array([r["yaw"] for r in rows], pa.float64()),
        "pitch": pa.array([r["pitch"] for r in rows], pa.float64()),
        "roll": pa.array([r["roll"] for r in rows], pa.float64()),
        "light_azimuth": pa.array([r["light_azimuth"] for r in rows], pa.float64()),
        "light": pa.array([r["light"] for r in rows], pa.string()),
        "partition": pa.array([r["partition"] for r in rows], pa.int8()),
        "landmarks": pa.FixedSizeListArray.from_arrays(pa.array(landmarks.ravel(), pa.float32()), 10),
        "seed": pa.array([config.seed] * len(rows), pa.int64()),
        "width": pa.array([config.width] * len(rows), pa.int32()),
        "height": pa.array([config.height] * len(rows), pa.int32()),
        "params": pa.array([params[r["identity"]].to_dict() for r in rows]),
    })
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def read_truth(data_uri: str) -> pa.Table:
    """truth.parquet of a synthetic dataset; re-render a row with `rerender(row)`."""
    return pq.read_table(io.BytesIO(storage.read_bytes(storage.join(data_uri, "truth.parquet"))))


def rerender(row: dict, yaw_deg: float | None = None, light_azimuth_deg: float | None = None) -> np.ndarray:
    """Re-render one truth row (as from table.to_pylist()), optionally at another yaw or light."""
    params = IdentityParams.from_dict(row["params"])
    img, _ = render_face(
        params,
        row["yaw"] if yaw_deg is None else yaw_deg,
        row["light_azimuth"] if light_azimuth_deg is None else light_azimuth_deg,
        pitch=row["pitch"], roll=row["roll"], width=row["width"], height=row["height"],
    )
    return img
