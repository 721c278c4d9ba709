"""headrot fit --root ROOT [--bins -45,45,10 | edges] [--attributes Male,Eyeglasses]
               [--min-images N] [--min-bins N] [--splits train,val,test]

Builds a FitConfig (a YAML `fit:` section first, flags on top), joins Ray and runs
headrot.stages.fit.run_fit; prints the summary as JSON.
"""
from __future__ import annotations

import re

from headrot.commands._common import add_config_flag, build_config, init_ray, print_result

# Lists of numbers may start with a minus ("--bins -45,45,10"); argparse takes such a value
# for an option unless it looks like a negative number (no headrot option looks like one).
NUMBER_LIST = re.compile(r"^-\d[\d.,\-]*$")

FLAGS = {"root": "root", "bins": "bins", "attributes": "attributes", "min_images": "min_images",
         "min_bins": "min_bins", "splits": "splits", "sources": "sources", "lowpass": "lowpass"}


def configure(parser) -> None:
    parser._negative_number_matcher = NUMBER_LIST
    add_config_flag(parser)
    parser.add_argument("--root", help="run root (folder or s3://) holding latents/")
    parser.add_argument("--bins", help="yaw bins: lo,hi,step (e.g. -45,45,10) or increasing edges (e.g. -40,-20,0,20,40)")
    parser.add_argument("--attributes", help="key attributes, comma-separated (default Male,Eyeglasses; '' for none)")
    parser.add_argument("--min-images", type=int, help="images a group needs on a side before it falls back (default 50)")
    parser.add_argument("--min-bins", type=int, help="populated bins a group needs on a side (default 3)")
    parser.add_argument("--splits", help="partitions to fit on, comma-separated train,val,test (default all)")
    parser.add_argument("--sources", help="direction sources: embeddings (default) or embeddings,samples "
                                          "(needs `headrot samples` first)")
    parser.add_argument("--lowpass", type=int, help="samples: blocks per side of the low-pass subspace (default 8)")


def main(args) -> int:
    from headrot.stages.fit import FitConfig, run_fit

    config = build_config(FitConfig, args, FLAGS, section="fit")
    init_ray()
    print_result(run_fit(config))
    return 0
