"""The `headrot` command: one subcommand per stage.

Each subcommand lives in headrot/commands/<name>.py with two functions:
`configure(parser)` adds its flags and `main(args) -> int` parses them into the
stage's config and calls one library function. Modules are imported only when
their subcommand runs, so `headrot --help` stays fast and nothing happens at import.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> one-line help; the module is headrot.commands.<name>
COMMANDS: dict[str, str] = {
    "synth": "write a synthetic CelebA (with ground truth) for demos and tests",
    "inspect": "read a CelebA-layout dataset and report rows and rejections",
    "train": "train the generator or the embedder with Ray Train",
    "embed": "stage 1: embed images into DDIM latents with yaw and light labels",
    "fit": "stage 2: light-conditioned centroids and linear trajectories",
    "render": "stage 3: move latents along trajectories and decode the rotated dataset",
    "evaluate": "measure the rotations against ground truth and baselines; write the report",
    "run": "the whole job: synth (if no data), train (if no checkpoints), embed, fit, render, evaluate",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headrot",
        description="Head-rotation augmentation of face datasets in the latent space of a DDIM.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_command=name)
        module = _module(name)
        if module is not None:
            module.configure(p)
    return parser


def _module(name: str):
    try:
        return importlib.import_module(f"headrot.commands.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"headrot.commands.{name}":
            return None  # not built yet: the subcommand says so when run
        raise


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    module = _module(args._command)
    if module is None:
        parser.error(f"'{args._command}' is not available in this build yet")
    try:
        return int(module.main(args) or 0)
    except ValueError as exc:
        # Bad input or config: a clear one-line message, not a traceback.
        print(f"headrot {args._command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
