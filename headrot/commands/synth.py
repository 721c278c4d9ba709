"""`headrot synth`: write a synthetic CelebA (with ground truth) for demos and tests."""
from __future__ import annotations

import argparse
import json


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder or s3:// prefix")
    parser.add_argument("--n", type=int, default=1000, help="number of images (default 1000)")
    parser.add_argument("--size", default="178x218", help="WIDTHxHEIGHT of the images (default 178x218, CelebA's)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed: same seed, byte-identical files")
    parser.add_argument("--images-per-identity", type=int, default=20, help="images per person (default 20)")
    parser.add_argument(
        "--yaw-range", default="-45,45",
        help="LO,HI in degrees (default -45,45); write --yaw-range=-30,30 (argparse reads a "
             "leading '-' as a flag) or one number A for -A,A",
    )


def _yaw_range(text: str) -> tuple[float, float]:
    parts = [s for s in text.split(",") if s.strip()]
    try:
        values = [float(s) for s in parts]
    except ValueError:
        raise ValueError(f"--yaw-range: expected LO,HI in degrees, got {text!r}") from None
    if len(values) == 1:
        return (-abs(values[0]), abs(values[0]))
    if len(values) != 2:
        raise ValueError(f"--yaw-range: expected LO,HI in degrees, got {text!r}")
    return (values[0], values[1])


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(s) for s in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size: expected WIDTHxHEIGHT such as 178x218, got {text!r}") from None
    return w, h


def main(args: argparse.Namespace) -> int:
    from headrot.synth.writer import write_synthetic_celeba

    width, height = _size(args.size)
    summary = write_synthetic_celeba(
        args.out, args.n, seed=args.seed, images_per_identity=args.images_per_identity,
        yaw_range=_yaw_range(args.yaw_range), width=width, height=height,
    )
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0
