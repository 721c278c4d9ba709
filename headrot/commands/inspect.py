"""`headrot inspect`: what a CelebA-layout dataset holds, and what of it is unusable.

Reads the index, decodes the selected images through the Ray Dataset and prints
a JSON summary: rows, rows per partition, rejections by reason, images/s.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class InspectConfig:
    data: str                               # CelebA-layout root: folder or s3://bucket/prefix
    size: int = 64                          # decoded image side, as the model sees it
    limit: int | None = None                # only the first N index rows (after partitions)
    partitions: tuple[int, ...] | None = None  # 0 train, 1 val, 2 test; None: all
    light_labels: str | None = None         # CSV image_id,light; default <data>/light_labels.csv
    batch_size: int = 256                   # rows per decode batch


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="CelebA-layout root: a folder or s3://bucket/prefix")
    parser.add_argument("--size", type=int, default=64, help="decoded image side (default 64)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows")
    parser.add_argument("--partitions", default=None, help="comma list of 0 (train), 1 (val), 2 (test)")
    parser.add_argument("--light-labels", default=None, help="CSV image_id,light (left|center|right)")
    parser.add_argument("--batch-size", type=int, default=256, help="rows per decode batch")


def main(args: argparse.Namespace) -> int:
    from headrot.config import from_mapping

    config = from_mapping(InspectConfig, {
        "data": args.data, "size": args.size, "limit": args.limit, "partitions": args.partitions,
        "light_labels": args.light_labels, "batch_size": args.batch_size,
    }, where="headrot inspect")
    print(json.dumps(inspect(config), indent=2))
    return 0


def inspect(config: InspectConfig) -> dict:
    import ray

    from headrot.data.dataset import inspect_images
    from headrot.data.index import read_index

    index = read_index(config.data, light_labels=config.light_labels)  # header errors before Ray starts
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=False)  # the cluster named by RAY_ADDRESS
        else:
            ray.init(log_to_driver=False, include_dashboard=False)  # a local Ray for this command
    return inspect_images(index, config.size, config.partitions, config.limit, batch_size=config.batch_size)
