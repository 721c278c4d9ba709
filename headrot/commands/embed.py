"""`headrot embed`: stage 1, images -> latents with yaw and light labels."""
from __future__ import annotations

from headrot.commands._common import add_config_flag, build_config, init_ray, print_result

FLAGS = {
    "data": "data", "out": "out", "method": "method", "generator": "generator",
    "embedder": "embedder", "light_labels": "light_labels", "steps": "steps",
    "refine_steps": "refine_steps", "partitions": "partitions", "limit": "limit",
    "shard_size": "shard_size", "batch_size": "batch_size", "max_actors": "max_actors",
    "precision": "precision", "compile": "compile",
    "latent_dtype": "latent_dtype", "reconstruct_every": "reconstruct_every",
}


def configure(parser) -> None:
    add_config_flag(parser)
    parser.add_argument("--data", help="CelebA-layout root (folder or s3://bucket/prefix)")
    parser.add_argument("--out", help="run root (folder or s3://bucket/prefix)")
    parser.add_argument("--method", choices=["network", "inversion", "refine"])
    parser.add_argument("--generator", metavar="CKPT", help="default: <out>/checkpoints/generator/model.pt")
    parser.add_argument("--embedder", metavar="CKPT", help="default: <out>/checkpoints/embedder/model.pt")
    parser.add_argument("--light-labels", metavar="CSV", help="image_id,light (left|center|right); wins where given")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--refine-steps", type=int)
    parser.add_argument("--partitions", help="comma list of 0 (train), 1 (val), 2 (test); default all")
    parser.add_argument("--limit", type=int, help="embed only the first N rows")
    parser.add_argument("--shard-size", type=int, help="rows per output file")
    parser.add_argument("--batch-size", type=int, help="images per network call")
    parser.add_argument("--max-actors", type=int, help="model actors (default: one per GPU, else 1)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                        help="auto (default): bf16 autocast on GPUs, fp32 on CPU")
    parser.add_argument("--compile", action="store_true", default=None,
                        help="torch.compile the networks (CUDA graphs on GPU; a minute of warm-up per actor)")
    parser.add_argument("--latent-dtype", choices=["float32", "float16"])
    parser.add_argument("--reconstruct-every", type=int, metavar="N",
                        help="measure the reconstruction error of every Nth row of a shard (default 1: every "
                             "row; the others read NaN): that decode is 10 calls a row, a quarter of inversion's "
                             "and 10 of the network embedding's 11")


def main(args) -> int:
    from headrot.stages.embed import EmbedConfig, run_embed

    config = build_config(EmbedConfig, args, FLAGS, section="embed")
    init_ray()
    print_result(run_embed(config))
    return 0
