"""Reading + preprocessing throughput: `image_dataset` (Ray) against a plain PIL loop.

    python -m bench.read --data DIR [--n 10000] [--size 64] [--make]

Both paths decode the same first `n` index rows with the same `decode_face`;
the Ray side is consumed with iter_batches (nothing materialised) and timed from
building the dataset to the last batch, so task start-up is included. `--make`
first writes `n` synthetic 178x218 JPEGs in the CelebA layout into DIR when DIR
has no index yet (for machines without `headrot synth`).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import time
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------
# Synthetic input (textured 178 x 218 JPEGs: decode cost close to real faces)

_ATTRS = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
          "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
          "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
          "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
          "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young ")
_MARKS = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"


def make_celeba(root: Path, n: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = root / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:218, 0:178].astype(np.float32)
    ids = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    for image_id in ids:
        f = rng.uniform(5, 30, 3)
        rgb = np.stack([128 + 90 * np.sin(x / f[c] + c) * np.cos(y / f[(c + 1) % 3]) for c in range(3)], -1)
        rgb += rng.normal(0, 12, rgb.shape)  # sensor-like noise: JPEG size near CelebA's ~10 kB
        buffer = io.BytesIO()
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        (images / image_id).write_bytes(buffer.getvalue())
    attr = [f"{i} " + " ".join(f"{v:2d}" for v in rng.choice([-1, 1], 40)) for i in ids]
    marks = [f"{i}    69  109  106  113   77  142   73  152  108  154" for i in ids]
    (root / "list_attr_celeba.txt").write_text("\n".join([str(n), _ATTRS, *attr]) + "\n")
    (root / "list_landmarks_align_celeba.txt").write_text("\n".join([str(n), _MARKS, *marks]) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{i} 0\n" for i in ids))


# ---------------------------------------------------------------------------
# The two paths


def plain_loop(paths: list[str], size: int) -> float:
    """images/s of a single-process loop: read the bytes, decode_face."""
    from headrot import storage
    from headrot.data.images import ImageError, decode_face

    start = time.perf_counter()
    for path in paths:
        try:
            decode_face(storage.read_bytes(path), size)
        except (ImageError, FileNotFoundError):
            pass
    return len(paths) / (time.perf_counter() - start)


def ray_stream(index, n: int, size: int, batch_size: int) -> tuple[float, int]:
    """images/s of images_from_index consumed with iter_batches; and rows seen."""
    from headrot.data.dataset import images_from_index

    start = time.perf_counter()
    rows = 0
    ds = images_from_index(index, size, limit=n, batch_size=batch_size)
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="pyarrow"):
        rows += batch.num_rows
    return rows / (time.perf_counter() - start), rows


def run(data: str, n: int = 10_000, size: int = 64, batch_size: int = 256) -> dict:
    import ray

    from headrot.data.index import read_index

    index = read_index(data)
    paths = index.table.column("path").to_pylist()[:n]
    n = len(paths)
    if not ray.is_initialized():
        ray.init(log_to_driver=False, include_dashboard=False)
    # Warm-up: the first Ray Data run starts worker processes (seconds here);
    # time it apart so the figure is the steady rate a long job sees.
    start = time.perf_counter()
    ray_stream(index, min(n, 2 * batch_size), size, batch_size)
    warmup_s = time.perf_counter() - start
    ray_rate, rows = ray_stream(index, n, size, batch_size)
    plain_rate = plain_loop(paths, size)
    result = {
        "ray_images_per_s": round(ray_rate, 1),
        "plain_images_per_s": round(plain_rate, 1),
        "ratio": round(ray_rate / plain_rate, 3),
        "n": n,
        "size": size,
        "batch_size": batch_size,
        "ray_warmup_s": round(warmup_s, 2),
        "ray_cpus": ray.cluster_resources().get("CPU"),
        "host_cpus": os.cpu_count(),
    }
    assert rows == n, (rows, n)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="CelebA-layout root (folder or s3://)")
    parser.add_argument("--n", type=int, default=10_000, help="images to read (the first n index rows)")
    parser.add_argument("--size", type=int, default=64, help="output side")
    parser.add_argument("--batch-size", type=int, default=256, help="rows per decode batch")
    parser.add_argument("--make", action="store_true", help="write n synthetic JPEGs into --data first if it has no index")
    args = parser.parse_args(argv)
    if args.make and not (Path(args.data) / "list_attr_celeba.txt").exists():
        make_celeba(Path(args.data), args.n)
    result = run(args.data, args.n, args.size, args.batch_size)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
