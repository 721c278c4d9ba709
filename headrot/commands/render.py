"""headrot render --root ROOT [--deltas -30,-20,-10,0,10,20,30] [--split test] [--limit N]
                  [--methods headrot,no_move,...] [--out URI] [--format parquet|png]
                  [--generator CKPT] [--batch-size N] [--precision auto|fp32|bf16] [--compile]
                  [--yaw-generator CKPT --data URI] [--pivotal-steps N]   (the yaw methods)
                  [--inversion-regularization S]

Builds a RenderConfig (a YAML `render:` section first, flags on top), joins Ray and runs
headrot.stages.render.run_render; prints the summary as JSON.
"""
from __future__ import annotations

from headrot.commands._common import add_config_flag, build_config, init_ray, print_result
from headrot.commands.fit import NUMBER_LIST

FLAGS = {
    "root": "root", "deltas": "deltas", "split": "split", "limit": "limit", "methods": "methods",
    "out": "out", "format": "format", "generator": "generator", "batch_size": "batch_size",
    "steps": "steps", "max_actors": "max_actors", "precision": "precision", "compile": "compile",
    "yaw_generator": "yaw_generator", "data": "data", "pivotal_steps": "pivotal_steps",
    "inversion_regularization": "inversion_regularization",
}


def configure(parser) -> None:
    parser._negative_number_matcher = NUMBER_LIST  # "--deltas -30,-20,...": a value, not an option
    add_config_flag(parser)
    parser.add_argument("--root", help="run root with latents/ and trajectories/ (folder or s3://)")
    parser.add_argument("--deltas", help="yaw offsets in degrees, comma-separated (default -30..30 by 10)")
    parser.add_argument("--split", choices=["train", "val", "test", "all"], help="sources to render (default test)")
    parser.add_argument("--limit", type=int, help="render only the first N sources of the split")
    parser.add_argument("--methods", help="comma list of headrot (default), no_move, light_agnostic, "
                                          "single_direction, centroid_path, <source>[-ortho][-norm][-cal][-colour] "
                                          "(source embeddings, samples or local), yaw[-cal][-colour]")
    parser.add_argument("--out", metavar="URI", help="rotated folder (default <root>/rotated)")
    parser.add_argument("--format", choices=["parquet", "png"], help="png: also one PNG per render under images/")
    parser.add_argument("--generator", metavar="CKPT", help="default: <root>/checkpoints/generator/model.pt")
    parser.add_argument("--yaw-generator", metavar="CKPT",
                        help="yaw methods: a yaw-conditioned generator (default <root>/checkpoints/generator_yaw/model.pt)")
    parser.add_argument("--data", metavar="URI", help="yaw methods: the CelebA root the latents were embedded from")
    parser.add_argument("--pivotal-steps", type=int, metavar="N",
                        help="yaw methods: draw each source with a copy of the yaw generator tuned N steps on it "
                             "(pivotal tuning; 0: off)")
    parser.add_argument("--inversion-regularization", type=float, metavar="S",
                        help="yaw methods: invert with the noise predictions kept white, pix2pix-zero's step "
                             "weights times S (0: off)")
    parser.add_argument("--batch-size", type=int, help="renders per network call (default 64)")
    parser.add_argument("--steps", type=int, help="DDIM steps (default 10, the paper's)")
    parser.add_argument("--max-actors", type=int, help="model actors (default: one per GPU, else 1)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                        help="auto (default): bf16 autocast on GPUs, fp32 on CPU")
    parser.add_argument("--compile", action="store_true", default=None,
                        help="torch.compile the generator (CUDA graphs on GPU; a minute of warm-up per actor)")


def main(args) -> int:
    from headrot.stages.render import RenderConfig, run_render

    config = build_config(RenderConfig, args, FLAGS, section="render")
    init_ray()
    print_result(run_render(config))
    return 0
