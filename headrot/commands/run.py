"""`headrot run`: synth (if no data), generator, embed, fit, render, evaluate."""
from __future__ import annotations

from headrot.commands._common import add_config_flag, build_config, init_ray, print_result

FLAGS = {"data": "data", "out": "out", "generator": "generator",
         "train_from_scratch": "train_from_scratch", "skip_evaluate": "skip_evaluate"}


def configure(parser) -> None:
    add_config_flag(parser)
    parser.add_argument("--data", help="CelebA-layout root (folder or s3://); default: a synthetic one")
    parser.add_argument("--out", help="run root (folder or s3://bucket/prefix); default runs/demo")
    parser.add_argument("--generator", metavar="CKPT", help="generator checkpoint to use instead of training")
    parser.add_argument("--train-from-scratch", action="store_const", const=True,
                        help="train the generator even where the shipped demo model fits")
    parser.add_argument("--skip-evaluate", action="store_const", const=True, help="stop after render")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and stop")


def main(args) -> int:
    from headrot.config import to_mapping
    from headrot.pipeline import PipelineConfig, run_pipeline, stage_configs
    from headrot.storage import join

    config = build_config(PipelineConfig, args, FLAGS)
    if args.dry_run:
        stages = stage_configs(config, config.data or join(config.out, "data"), config.generator)
        print_result({"pipeline": to_mapping(config),
                      **{name: to_mapping(c) for name, c in stages.items()}})
        return 0
    init_ray()
    print_result(run_pipeline(config))
    return 0
