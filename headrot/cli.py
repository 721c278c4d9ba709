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
import os
import sys
import traceback
from typing import NoReturn

# name -> one-line help; the module is headrot.commands.<name>
COMMANDS: dict[str, str] = {
    "synth": "write a synthetic CelebA (with ground truth) for demos and tests",
    "inspect": "read a CelebA-layout dataset and report rows and rejections",
    "train": "train the generator or the embedder with Ray Train",
    "embed": "stage 1: embed images into DDIM latents with yaw and light labels",
    "samples": "stage 1b: the generator's own samples, labelled: the `samples` direction source",
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


def run(argv: list[str] | None = None) -> NoReturn:
    """The process entry point (console script, `python -m headrot`, jobs/*.py): main(), then
    exit_process with its code."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors, explicit exits
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001 - print it as Python would, then leave with 1
        traceback.print_exc()
        code = 1
    exit_process(code)


def exit_process(code: int) -> NoReturn:
    """Leave the process with `code`, skipping the interpreter's teardown.

    pyarrow can abort at interpreter teardown, after all the work is done, with "terminate
    called without an active exception" (SIGABRT, exit 134) when one of its pool threads is
    still joinable (apache/arrow#34314; pyarrow 26.0.1 here: about 1 exit in 4 after a few
    threaded Parquet reads). A finished stage would then look failed to make, to CI and to
    `ray job submit`. So the few things that need an orderly end get one here (Ray, which
    stops the local cluster it started; logging; stdio), and os._exit skips the rest."""
    try:
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
