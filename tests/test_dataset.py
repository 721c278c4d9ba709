"""image_dataset through Ray on a tiny CelebA-layout folder with planted bad files, local and on S3."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from headrot import storage
from headrot.data import IMAGES_DIR, decode_face, image_dataset, images_from_index, read_index
from tests.test_celeba_text import ATTR_HEADER, LANDMARK_HEADER

pytestmark = pytest.mark.slow

N = 20
SIZE = 16
# Planted bad image files -> the reason each must get in the stream.
BAD_FILES = {
    "000003.jpg": ("empty", "empty file (0 bytes)"),
    "000007.jpg": ("text", "not an image (unrecognised format, 12 bytes)"),
    "000011.jpg": ("truncated", "truncated image"),
    "000015.jpg": ("missing", "missing file: "),
}
PNG_AS_JPG = "000005.jpg"      # a good image, whatever its name says
BAD_LANDMARK_ROW = "000019.jpg"  # rejected by the index, not in the stream


def face(i: int) -> Image.Image:
    y, x = np.mgrid[0:218, 0:178].astype(np.float64)
    rgb = [128 + 100 * np.sin(x / (9 + i) + c) * np.cos(y / (13 + c)) for c in range(3)]
    return Image.fromarray(np.stack(rgb, -1).astype(np.uint8))


def write_celeba(root: Path) -> Path:
    """A CelebA-layout folder with N images and the planted problems above."""
    images = root / IMAGES_DIR
    images.mkdir(parents=True)
    ids = [f"{i:06d}.jpg" for i in range(1, N + 1)]
    for i, image_id in enumerate(ids, 1):
        buffer = io.BytesIO()
        face(i).save(buffer, "PNG" if image_id == PNG_AS_JPG else "JPEG", quality=90)
        data = buffer.getvalue()
        kind = BAD_FILES.get(image_id, ("good",))[0]
        if kind == "missing":
            continue
        data = {"empty": b"", "text": b"hello world\n", "truncated": data[: len(data) // 2]}.get(kind, data)
        (images / image_id).write_bytes(data)
    rng = np.random.default_rng(0)
    attr_rows = [f"{i} " + " ".join(f"{v:2d}" for v in rng.choice([-1, 1], 40)) for i in ids]
    mark_rows = [f"{i}    69  109  106  113   77  142   73  152  108  154" for i in ids]
    mark_rows[ids.index(BAD_LANDMARK_ROW)] = f"{BAD_LANDMARK_ROW}    69  109  106"
    (root / "list_attr_celeba.txt").write_text("\n".join([str(N), ATTR_HEADER, *attr_rows]) + "\n")
    (root / "list_landmarks_align_celeba.txt").write_text("\n".join([str(N), LANDMARK_HEADER, *mark_rows]) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{i} {k % 3}\n" for k, i in enumerate(ids)))
    return root


def check_stream(ds, index, data_uri: str, local_root: Path) -> None:
    rows = []
    for batch in ds.iter_batches(batch_size=7, batch_format="numpy"):
        for k in range(len(batch["image_id"])):
            rows.append({name: batch[name][k] for name in ("image_id", "image", "reject_reason", "path", "landmarks")})
    ids = sorted(str(r["image_id"]) for r in rows)
    # rows in = good + rejected (index rejections separately)
    assert len(rows) + index.n_rejected == N
    assert ids == sorted(index.table.column("image_id").to_pylist())
    assert index.rejected.column("image_id").to_pylist() == [BAD_LANDMARK_ROW]
    by_id = {str(r["image_id"]): r for r in rows}
    for image_id, (kind, reason) in BAD_FILES.items():
        got = str(by_id[image_id]["reject_reason"])
        assert got.startswith(reason), (image_id, got)
        assert by_id[image_id]["image"].shape == (SIZE, SIZE, 3) and not by_id[image_id]["image"].any()
    good = [i for i in ids if i not in BAD_FILES]
    assert len(good) == N - len(BAD_FILES) - 1
    for image_id in good:
        row = by_id[image_id]
        assert str(row["reject_reason"]) == ""
        assert row["image"].dtype == np.uint8 and row["image"].shape == (SIZE, SIZE, 3)
        expected = decode_face((local_root / IMAGES_DIR / image_id).read_bytes(), SIZE)
        assert np.array_equal(row["image"], expected)
        assert str(row["path"]) == storage.join(data_uri.rstrip("/"), IMAGES_DIR, image_id)
    assert np.allclose(by_id["000001.jpg"]["landmarks"], [69, 109, 106, 113, 77, 142, 73, 152, 108, 154])


def test_local_dataset(ray_cluster, tmp_path):
    root = write_celeba(tmp_path / "celeba")
    index = read_index(str(root))
    ds = images_from_index(index, SIZE, batch_size=4)
    check_stream(ds, index, str(root), root)
    schema = ds.schema()
    assert schema.base_schema.field("landmarks").type == pa.list_(pa.float32(), 10)
    assert schema.base_schema.field("reject_reason").type == pa.string()
    # partitions and limit select index rows before any decoding
    val = image_dataset(str(root), SIZE, partitions=[1], limit=3).take_all()
    assert [r["partition"] for r in val] == [1, 1, 1] and len(val) == 3


def test_s3_dataset(ray_cluster, s3_bucket, tmp_path):
    root = write_celeba(tmp_path / "celeba")
    data_uri = f"{s3_bucket}/datasets/celeba"
    fs, prefix = storage.filesystem(data_uri)
    fs.pipe({f"{prefix}/{p.relative_to(root).as_posix()}": p.read_bytes()
             for p in sorted(root.rglob("*")) if p.is_file()})
    index = read_index(data_uri)
    assert index.table.column("path")[0].as_py() == f"{data_uri}/{IMAGES_DIR}/000001.jpg"
    check_stream(images_from_index(index, SIZE, batch_size=8), index, data_uri, root)


def test_inspect_summary(ray_cluster, tmp_path):
    from headrot.commands.inspect import InspectConfig, inspect

    root = write_celeba(tmp_path / "celeba")
    summary = inspect(InspectConfig(data=str(root), size=SIZE))
    assert summary["rows"] == N - 1 and summary["rejected"] == 1
    images = summary["images"]
    assert images["read"] == N - 1 and images["ok"] == N - 1 - len(BAD_FILES)
    assert images["rejected_by_reason"] == {
        "empty file (N bytes)": 1, "missing file:": 1,
        "not an image (unrecognised format, N bytes)": 1, "truncated image (N bytes not processed)": 1,
    }
    assert summary["images_per_s"] > 0
