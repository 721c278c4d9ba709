"""Helpers shared by the subcommands: configs from YAML + flags, Ray start-up, result JSON."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from headrot.config import from_mapping, load_yaml


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config; flags given on the command line win")


def build_config(cls, args: argparse.Namespace, flags: dict[str, str], section: str | None = None):
    """YAML (optionally one section of it) overlaid with the flags the user gave; validated.

    `flags` maps argparse dest -> config field. Flags left at None are not overrides.
    """
    data: dict[str, Any] = {}
    where = "flags"
    if getattr(args, "config", None):
        loaded = load_yaml(args.config)
        data = loaded.get(section, {}) if section else loaded
        if not isinstance(data, dict):
            raise ValueError(f"{args.config}: section '{section}' must be a mapping")
        where = args.config
    for dest, field in flags.items():
        value = getattr(args, dest, None)
        if value is not None:
            data[field] = value
    return from_mapping(cls, data, where)


def init_ray() -> None:
    """Join the cluster a job was submitted to, or start a local one (the laptop default)."""
    import ray

    if ray.is_initialized():
        return
    # Under `ray job submit` RAY_ADDRESS points at the cluster; locally ray.init starts one.
    ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=True, configure_logging=False)


def print_result(result: dict[str, Any]) -> None:
    json.dump(result, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
