"""headrot train generator|embedder --data URI --out ROOT [--config FILE] [flags]

Parses flags into a TrainConfig (a YAML file first, flags on top), connects to Ray
(an existing cluster when RAY_ADDRESS is set, else a local one) and calls
headrot.train.driver.train; prints the result as JSON. Rerunning the same command
after a crash resumes from the latest checkpoint under <out>/checkpoints/<kind>/.
"""
from __future__ import annotations

import argparse
import json

from headrot.config import to_mapping


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=["generator", "embedder"], help="which network to train")
    parser.add_argument("--data", help="CelebA-layout dataset root (local path or s3://); required to train")
    parser.add_argument("--out", required=True, help="run root (local path or s3://); writes checkpoints/<kind>/")
    parser.add_argument("--config", help="YAML file with TrainConfig keys (flags override it)")
    parser.add_argument("--preset", help="model preset: paper, demo or tiny")
    parser.add_argument("--image-size", type=int, help="override the preset's image size")
    parser.add_argument("--epochs", type=int, help="passes over the data")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    parser.add_argument("--workers", type=int, dest="num_workers", help="Ray Train workers (DDP ranks)")
    parser.add_argument("--cpus-per-worker", type=float, help="CPUs per worker (fractional allowed)")
    parser.add_argument("--gpu", dest="use_gpu", action="store_true", default=None, help="train on GPUs")
    parser.add_argument("--no-gpu", dest="use_gpu", action="store_false", help="train on CPUs even if GPUs exist")
    parser.add_argument("--batch-size", type=int, help="images per worker per step")
    parser.add_argument("--lr", type=float, help="AdamW learning rate")
    parser.add_argument("--limit", type=int, help="use at most this many images")
    parser.add_argument("--seed", type=int, help="seed of weights, noise and sample grids")
    parser.add_argument("--checkpoint-every", type=int, help="epochs between checkpoints")
    parser.add_argument("--max-failures", type=int, help="automatic restarts within one run (-1: forever)")
    parser.add_argument("--generator", help="embedder: generator model.pt (default <out>/checkpoints/generator/model.pt)")
    parser.add_argument("--init-from", help="a model.pt of the same network to start a fresh run from (warm start)")
    parser.add_argument("--export-latest", metavar="PATH",
                        help="no training: write the EMA weights of the newest checkpoint under "
                             "<out>/checkpoints/<kind>/ to PATH (a model.pt), e.g. of a run still going")
    parser.add_argument("--epoch", type=int, metavar="N",
                        help="with --export-latest: the checkpoint of epoch N instead of the newest (one the run kept)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


_FLAGS = (
    "preset", "image_size", "epochs", "max_steps", "num_workers", "cpus_per_worker", "use_gpu",
    "batch_size", "lr", "limit", "seed", "checkpoint_every", "max_failures", "generator", "init_from",
)


def main(args: argparse.Namespace) -> int:
    from headrot.train.config import load_config

    if args.export_latest:
        from headrot.train.driver import export_latest

        print(json.dumps(export_latest(args.out, args.kind, args.export_latest, args.epoch), indent=2))
        return 0
    if args.epoch is not None:
        raise ValueError("train: --epoch chooses the checkpoint --export-latest writes; to train longer, raise --epochs")
    if not args.data:
        raise ValueError("train: --data is required to train (the CelebA-layout dataset root)")
    overrides = {name: getattr(args, name) for name in _FLAGS}
    overrides["kind"] = args.kind
    config = load_config(args.config, overrides)
    if args.dry_run:
        print(json.dumps(to_mapping(config), indent=2, default=str))
        return 0

    from headrot.commands._common import init_ray, print_result
    from headrot.train.driver import train

    init_ray()  # RAY_ADDRESS (ray job submit, a cluster) or a fresh local Ray
    print_result(train(config, args.data, args.out))
    return 0
