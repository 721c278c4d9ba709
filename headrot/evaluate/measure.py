"""measure: one rotated/ shard -> its per-render metrics table (a Ray task; no image leaves it).

    read the shard's renders -> decode them and their sources (preprocessed like the model's input)
    -> synthetic: the judge's yaw (and its reading of the ground truth), PSNR / SSIM against the
       ground-truth render, identity top-1
       in a gallery of the set's identities in the same pose and light (headrot.evaluate.truth)
    -> real: the judge's yaw from mediapipe when installed
    -> every render of method no_move or at delta 0: PSNR / SSIM against its source
    -> every render: the share of its pixels in colours its source lacks (headrot.colour), a
       colour fault detector that needs no ground truth: a true turn shows the same hair, skin
       and background from another side (the demo's ground-truth turns: at most 0.6%)
    -> one row per render (METRICS), in the shard's row order.

The judge (headrot.labels.pose.YawEstimator) is fitted once by the driver and reaches each
task as its cached file; ground truth is rendered inside the task, for the shard's sources.
A metric that cannot be measured is NaN. Rows are independent of how renders are grouped
into shards: headrot.evaluate.aggregate gives the same report for any split.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headrot import runs, storage, tables
from headrot.evaluate.metrics import block_psnr_batch, psnr_batch, ssim_batch
from headrot.labels.pose import PoseConfig

# The rotated columns measure reads (the image bytes are the only large one).
RENDER_COLUMNS = ["source_id", "delta", "method", "light", "image"]

# One row per render. file/row: where its image is (the driver reads back only the cases').
METRICS = pa.schema([
    ("file", pa.int32()), ("row", pa.int32()),
    ("source_id", pa.string()), ("method", pa.string()), ("delta", pa.int64()), ("light", pa.string()),
    ("target_yaw_true", pa.float64()),      # true source yaw + delta (synthetic)
    ("estimated_yaw", pa.float64()),        # the judge's reading of the render
    ("pose_error_deg", pa.float64()),
    ("truth_pose_error_deg", pa.float64()),  # |judge(ground truth) - target|: the judge's own error there
    ("psnr_db", pa.float64()), ("ssim", pa.float64()),   # vs the ground-truth render (synthetic)
    ("identity_top1", pa.float64()),        # 1.0 / 0.0 (synthetic)
    ("source_psnr_db", pa.float64()), ("source_ssim", pa.float64()),  # vs the source (no_move or delta 0)
    ("source_pose_error_deg", pa.float64()),  # |judge(source) - true yaw| (synthetic)
    ("novel_colour_share", pa.float64()),   # pixels in colours the source lacks (NaN: source unreadable)
    ("colour_psnr_db", pa.float64()),       # PSNR of 4x4 block mean colours vs the ground truth (synthetic)
    ("source_error", pa.string()),          # why the source could not be read (null: it was)
])


@dataclass(frozen=True)
class MeasureSpec:
    """What every task needs besides its shard; the same for all shards of a run."""

    data: str                                   # data root (CelebA layout)
    size: int                                   # render size S (renders are S x S)
    synthetic: bool                             # the data root holds truth.parquet
    estimator: str | None = None                # the judge's cached file (synthetic)
    pose: PoseConfig | None = None              # its settings (YawEstimator.load checks them)
    gallery_max: int = 64                       # identities per identity-retrieval gallery
    identities: tuple[int, ...] = ()            # every identity of the evaluated sources
    mediapipe: bool = False                     # real data: judge by mediapipe


# ---------------------------------------------------------------------------
# Inputs


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def decode_renders(table: pa.Table, uri: str, size: int | None = None) -> np.ndarray:
    """uint8 [N,S,S,3] from a rotated table's image column; S x S, and S == size when given."""
    data = table.column("image").combine_chunks().field("bytes").to_pylist()
    images = np.stack([decode_png(b) for b in data])
    if images.shape[1] != images.shape[2] or (size is not None and images.shape[1] != size):
        raise ValueError(f"{runs.redact_uri(uri)}: renders are {images.shape[1]}x{images.shape[2]}: expected "
                         f"square {size or 'S'} x {size or 'S'} images like the other shards")
    return images


def read_sources(data_uri: str, ids: list[str], size: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Each source preprocessed like the model's input; and why, for those that could not be read."""
    from headrot.data.images import ImageError, decode_face

    out, errors = {}, {}
    for sid in ids:
        uri = storage.join(data_uri, "img_align_celeba", storage.safe_name(sid, "image id"))
        try:
            out[sid] = decode_face(storage.read_bytes(uri), size)
        except (ImageError, OSError) as exc:
            errors[sid] = str(getattr(exc, "reason", exc))
    return out, errors


def truth_for(data_uri: str, source_ids: set[str]) -> pa.Table:
    """truth.parquet's rows of these sources plus each identity's first row (its parameters, for
    the galleries): what GroundTruth needs for one shard, in the file's order."""
    from headrot.synth.writer import read_truth

    truth = read_truth(data_uri)
    _, first = np.unique(truth.column("identity").to_numpy(), return_index=True)
    keep = np.zeros(truth.num_rows, bool)
    keep[first] = True
    keep |= pc.is_in(truth.column("image_id"), pa.array(sorted(source_ids), pa.string())).to_numpy(
        zero_copy_only=False)
    return truth.filter(pa.array(keep))


# ---------------------------------------------------------------------------
# Measuring


def _synthetic(cols: dict, images, sid, delta, sources, spec: MeasureSpec) -> int:
    """Judge's yaw, PSNR/SSIM vs ground truth, identity top-1; returns the ground-truth renders made."""
    import torch

    from headrot.evaluate.truth import GroundTruth
    from headrot.labels.pose import YawEstimator

    torch.set_num_threads(1)  # a task holds a fraction of a CPU: one thread, no oversubscription
    estimator = YawEstimator.load(spec.estimator, spec.pose)
    if estimator is None:
        raise ValueError(f"{runs.redact_uri(spec.estimator)}: no pose estimator for these settings")
    gt = GroundTruth(truth_for(spec.data, set(sid.tolist())), spec.size, spec.gallery_max)
    cols["light"] = np.array([gt.light(s) for s in sid], dtype=object)
    cols["estimated_yaw"] = estimator.predict(images).astype(np.float64)
    cols["target_yaw_true"] = np.array([gt.true_yaw(s) for s in sid]) + delta
    cols["pose_error_deg"] = np.abs(cols["estimated_yaw"] - cols["target_yaw_true"])
    groups: dict[tuple[str, int], list[int]] = {}
    for i, key in enumerate(zip(sid.tolist(), delta.tolist())):
        groups.setdefault(key, []).append(i)
    # The judge read on each ground truth: what a perfect render at that target would score (the
    # judge errs more at the extreme yaws, where the method's figures must not be blamed for it).
    # One truth per call: a batch's composition moves the judge's float sums (1e-5 deg), and a
    # truth's reading must not depend on which shard its renders fell in.
    for (s, d), idx in groups.items():
        est = float(estimator.predict(gt.render(s, d)[None])[0])
        cols["truth_pose_error_deg"][np.asarray(idx)] = abs(est - cols["target_yaw_true"][idx[0]])
    for (s, d), idx in groups.items():
        idx = np.asarray(idx)
        ref = np.broadcast_to(gt.render(s, d), images[idx].shape)
        cols["psnr_db"][idx] = psnr_batch(images[idx], ref)
        cols["colour_psnr_db"][idx] = block_psnr_batch(images[idx], ref)
        cols["ssim"][idx] = ssim_batch(images[idx], ref)
        cols["identity_top1"][idx] = gt.identity_top1(s, d, images[idx], list(spec.identities))
    readable = [s for s in dict.fromkeys(sid.tolist()) if s in sources]
    if readable:
        est = estimator.predict(np.stack([sources[s] for s in readable]))
        err = dict(zip(readable, np.abs(est - np.array([gt.true_yaw(s) for s in readable]))))
        cols["source_pose_error_deg"] = np.array([err.get(s, np.nan) for s in sid], np.float64)
    return gt.renders


def _mediapipe(cols: dict, images, sid, delta, sources) -> None:
    """Real data: pose error = |yaw(render) - yaw(source) - delta| (no ground truth)."""
    from headrot.labels.pose import mediapipe_yaw

    readable = [s for s in dict.fromkeys(sid.tolist()) if s in sources]
    src_yaw = dict(zip(readable, mediapipe_yaw(np.stack([sources[s] for s in readable])))) if readable else {}
    cols["estimated_yaw"] = np.asarray(mediapipe_yaw(images), np.float64)
    base = np.array([src_yaw.get(s, np.nan) for s in sid])
    cols["pose_error_deg"] = np.abs(cols["estimated_yaw"] - base - delta)


def _against_sources(cols: dict, images, sid, meth, delta, sources) -> None:
    """The reconstruction figures (embedding quality, real-data cases): renders of no_move, or at delta 0."""
    idx = np.flatnonzero(((meth == "no_move") | (delta == 0)) & np.array([s in sources for s in sid], bool))
    if len(idx):
        src = np.stack([sources[sid[i]] for i in idx])
        cols["source_psnr_db"][idx] = psnr_batch(images[idx], src)
        cols["source_ssim"][idx] = ssim_batch(images[idx], src)


def _novel_colours(cols: dict, images, sid, sources) -> None:
    """Every render with a readable source: the share of its pixels in colours the source lacks."""
    from headrot.colour import novel_colour_share

    idx = np.flatnonzero(np.array([s in sources for s in sid], bool))
    if len(idx):
        cols["novel_colour_share"][idx] = novel_colour_share(images[idx], np.stack([sources[sid[i]] for i in idx]))


def measure(index: int, uri: str, spec: MeasureSpec) -> tuple[pa.Table, int]:
    """One rotated file (the index-th the render stage made) -> (its METRICS table, ground-truth
    renders made). Runs as a Ray task; returns numbers only."""
    table = tables.read_parquet(uri, columns=RENDER_COLUMNS)
    images = decode_renders(table, uri, spec.size)
    n = table.num_rows
    sid = np.array(table.column("source_id").to_pylist(), dtype=object)
    delta = table.column("delta").to_numpy().astype(np.int64)
    meth = np.array(table.column("method").to_pylist(), dtype=object)
    sources, errors = read_sources(spec.data, sorted(set(sid.tolist())), spec.size)
    cols = {name: np.full(n, np.nan) for name in METRICS.names if METRICS.field(name).type == pa.float64()}
    cols["light"] = np.array([x or "unknown" for x in table.column("light").to_pylist()], dtype=object)
    made = 0
    if spec.synthetic:
        made = _synthetic(cols, images, sid, delta, sources, spec)
    elif spec.mediapipe:
        _mediapipe(cols, images, sid, delta, sources)
    _against_sources(cols, images, sid, meth, delta, sources)
    _novel_colours(cols, images, sid, sources)
    out = {"file": np.full(n, index, np.int32), "row": np.arange(n, dtype=np.int32), "source_id": sid.tolist(),
           "method": meth.tolist(), "delta": delta, **{k: v.tolist() if v.dtype == object else v
                                                        for k, v in cols.items()},
           "source_error": [errors.get(s) for s in sid]}
    return pa.table({f.name: pa.array(out[f.name], f.type) for f in METRICS}, schema=METRICS), made
