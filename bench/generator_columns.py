"""The latent benchmark's generator columns for evaluated roots, copy roots included.

    python -m bench.generator_columns ROOT [ROOT ...] [--method yaw-cal-colour]

`bench.latent --root R` reruns the demo job into R and refuses a root whose embed stage was made
from another root's data (a copy root, where a candidate yaw file is rendered and evaluated). The
three columns that judge the generator rather than the turn need no new pipeline run; for each root
this prints:

    sample_fd        its checkpoints/generator_yaw/model.pt drawn from the FD noise under the data's
                     yaws, against the root's data, by the root's judge (as `bench.latent`)
    embedding_psnr   the method's delta-0 renders against their sources (the yaw method's own inversion)
    colour_faults    the share of the method's renders at |delta| >= 20 with novel colours

so a candidate's row can be set beside the shipped one before it ships.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.latent import reconstruction_psnr, sample_fd, yardstick, yaw_generator_samples


def columns(root: str, method: str) -> dict:
    import pandas as pd

    report = json.loads(Path(root, "report", "report.json").read_text())
    metrics = pd.read_parquet(Path(root, "report", "metrics.parquet"))
    data = str(Path(root, "data"))
    fd = sample_fd(root, report, lambda: yaw_generator_samples(f"{root}/checkpoints/generator_yaw/model.pt", root),
                   data)
    return {"root": root, "method": method, **fd,
            "embedding_psnr_db": reconstruction_psnr(root, method, data),
            "colour_fault_rate_far": yardstick(metrics, method).get("colour_fault_rate_far")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("roots", nargs="+", help="evaluated run roots (report/ and rotated/ written)")
    ap.add_argument("--method", default="yaw-cal-colour")
    args = ap.parse_args()
    for root in args.roots:
        if not Path(root, "report", "report.json").exists():
            raise SystemExit(f"{root}: no report/report.json; run `headrot evaluate --root {root}` first")
        print(json.dumps(columns(root, args.method)), flush=True)


if __name__ == "__main__":
    main()
