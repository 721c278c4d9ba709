"""headrot evaluate --root ROOT [--data URI] [--rotated URI] [--primary METHOD] [--gallery-max N]

Builds an EvaluateConfig (a YAML `evaluate:` section first, flags on top) and runs
headrot.stages.evaluate.run_evaluate: writes ROOT/report/report.json and report.html;
prints the report's summary and targets as JSON. No Ray needed.
"""
from __future__ import annotations

from headrot.commands._common import add_config_flag, build_config, print_result

FLAGS = {"root": "root", "data": "data", "rotated": "rotated", "primary": "primary",
         "gallery_max": "gallery_max", "pose_epochs": "pose_epochs"}


def configure(parser) -> None:
    add_config_flag(parser)
    parser.add_argument("--root", help="run root with rotated/ (folder or s3://)")
    parser.add_argument("--data", metavar="URI", help="data root (default: the one run.json's embed stage read)")
    parser.add_argument("--rotated", metavar="URI", help="rotated folder (default <root>/rotated)")
    parser.add_argument("--primary", help="method the summary and targets are about (default headrot)")
    parser.add_argument("--gallery-max", type=int, help="identities per identity-retrieval gallery (default 64)")
    parser.add_argument("--pose-epochs", type=int, help="pose estimator training epochs (default 30)")


def main(args) -> int:
    from headrot.stages.evaluate import EvaluateConfig, run_evaluate

    config = build_config(EvaluateConfig, args, FLAGS, section="evaluate")
    report = run_evaluate(config)
    print_result({"summary": report["summary"], "targets": report["targets"], "files": report["files"],
                  "notes": report["notes"]})
    return 0
