"""Model checkpoints: one torch.save'd dict that rebuilds its network alone (nanoGPT's habit).

    {"format": "headrot/1", "kind": "generator" | "embedder",
     "model_config": asdict(UNetConfig), "schedule": asdict(ScheduleConfig),
     "state_dict": ..., "extra": {...}}

The diffusion schedule travels with the weights, because a network predicts noise only
for the schedule it was trained under: the loaded model carries it as `model.schedule`,
and the sampler and the inversion use it (headrot.model.sampler.trained_schedule).
Checkpoints written before the schedule was saved load with the default schedule, the
only one headrot has trained with.

Local paths and s3:// URIs alike (headrot.storage). Loading uses
torch.load(weights_only=True): a checkpoint is data, never code, so a file that
carries Python objects beyond tensors and plain containers is refused.
"""
from __future__ import annotations

import dataclasses
import io
import pickle
from typing import Any

import torch
from torch import nn

from headrot import storage
from headrot.config import from_mapping
from headrot.model.schedule import ScheduleConfig
from headrot.model.unet import UNet, UNetConfig

FORMAT = "headrot/1"
KINDS = ("generator", "embedder")


# ---------------------------------------------------------------------------
# Save


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside DistributedDataParallel (.module) and torch.compile (._orig_mod)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def _check_kind(kind: str, config: UNetConfig, where: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"{where}: unknown checkpoint kind {kind!r}; use one of {list(KINDS)}")
    # The generator takes the noise variance, the embedder does not.
    if config.time_input != (kind == "generator"):
        raise ValueError(
            f"{where}: a {kind} needs time_input={kind == 'generator'} in its UNetConfig, "
            f"got time_input={config.time_input}"
        )


def save_model(uri: str, kind: str, model: nn.Module, config: UNetConfig, extra: dict | None = None,
               schedule: ScheduleConfig | None = None) -> None:
    """Write `model` (UNet(config), possibly DDP- or compile-wrapped) with its config and `extra`.

    `extra` must hold only plain data (numbers, strings, lists, dicts, tensors), since
    loading refuses anything else; that is checked here, before anything is written."""
    _check_kind(kind, config, uri)
    model = _unwrap(model)
    if getattr(model, "config", config) != config:
        raise ValueError(f"{uri}: the model was built with {model.config}, not the config passed ({config})")
    payload = {
        "format": FORMAT,
        "kind": kind,
        "model_config": dataclasses.asdict(config),
        # The schedule the network was trained under (default: ScheduleConfig(), what train uses).
        "schedule": dataclasses.asdict(schedule or getattr(model, "schedule", None) or ScheduleConfig()),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{uri}: `extra` holds objects a weights_only load would refuse ({exc}); keep it to "
            "numbers, strings, lists, dicts and tensors"
        ) from None
    storage.write_bytes(uri, data)


# ---------------------------------------------------------------------------
# Load


def load_model(uri: str, kind: str, map_location: Any = "cpu") -> tuple[UNet, UNetConfig, dict]:
    """(model in eval mode, its UNetConfig, extra) from a checkpoint written by save_model.

    Every failure is a ValueError naming the checkpoint and what to do."""
    if kind not in KINDS:
        raise ValueError(f"{uri}: unknown checkpoint kind {kind!r}; use one of {list(KINDS)}")
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise ValueError(f"checkpoint {uri} not found: train the {kind} first, or check the path") from None
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"checkpoint {uri} refused: it holds Python objects that a weights-only load does not "
            f"allow (a checkpoint is data, not code; it may be tampered with). Use a checkpoint "
            f"written by headrot's save_model, or retrain. Detail: {str(exc).splitlines()[0]}"
        ) from None
    except Exception as exc:  # truncated zip, not a torch file at all, ...
        raise ValueError(
            f"checkpoint {uri} is not a readable torch checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); it may be truncated or corrupt: "
            f"re-copy or retrain it"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"checkpoint {uri} has format {found!r}, expected {FORMAT!r}: it was not written by "
            "headrot's save_model (or by an incompatible version); retrain or convert it"
        )
    if payload.get("kind") != kind:
        raise ValueError(
            f"checkpoint {uri} holds a {payload.get('kind')!r}, not a {kind!r}: check which "
            f"checkpoints/<kind>/ path was given"
        )
    if not isinstance(payload.get("model_config"), dict):
        raise ValueError(f"checkpoint {uri} has no model_config mapping: it cannot rebuild its network; retrain it")
    config = from_mapping(UNetConfig, payload["model_config"], where=f"checkpoint {uri} model_config")
    _check_kind(kind, config, uri)
    model = UNet(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise ValueError(
            f"checkpoint {uri}: weights do not fit the network its config describes ({exc}); "
            "the file is inconsistent: retrain it"
        ) from None
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    schedule = payload.get("schedule")
    model.schedule = ScheduleConfig() if schedule is None else \
        from_mapping(ScheduleConfig, schedule, where=f"checkpoint {uri} schedule")
    extra = payload.get("extra") or {}
    return model.eval(), config, extra
