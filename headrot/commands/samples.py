"""headrot samples --root ROOT [--n 3000] [--seed 0] [--shard-size 500] [--generator URI]

Builds a SamplesConfig (a YAML `samples:` section first, flags on top), joins Ray and runs
headrot.stages.samples.run_samples: the generator's own samples, labelled by the method's
pose-and-light CNN, for `fit --sources embeddings,samples`. Prints the summary as JSON.
"""
from __future__ import annotations

from headrot.commands._common import add_config_flag, build_config, init_ray, print_result

FLAGS = {"root": "root", "n": "n", "seed": "seed", "shard_size": "shard_size", "generator": "generator",
         "max_actors": "max_actors", "yaw_from": "yaw_from"}


def configure(parser) -> None:
    add_config_flag(parser)
    parser.add_argument("--root", help="run root (folder or s3://); samples/ and checkpoints/labeller/ go here")
    parser.add_argument("--n", type=int, help="samples to generate and label (default 3000)")
    parser.add_argument("--seed", type=int, help="which samples (default 0)")
    parser.add_argument("--shard-size", type=int, help="samples per output file (default 500)")
    parser.add_argument("--generator", help="generator checkpoint (default <root>/checkpoints/generator/model.pt)")
    parser.add_argument("--max-actors", type=int, help="model actors (default: one per GPU, else 1)")
    parser.add_argument("--yaw-from", choices=["cnn", "mediapipe"],
                        help="samples' yaw: the labeller CNN (synthetic heads, default) or mediapipe's "
                             "landmarks for real faces (pip install 'headrot[landmarks]')")


def main(args) -> int:
    from headrot.stages.samples import SamplesConfig, run_samples

    config = build_config(SamplesConfig, args, FLAGS, section="samples")
    init_ray()
    print_result(run_samples(config))
    return 0
