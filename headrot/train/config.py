"""The training stage's config: one frozen dataclass, from YAML, flags or a dict.

Defaults follow the Keras DDIM example the paper builds on (AdamW, lr 1e-3,
weight decay 1e-4, EMA 0.999, batch 64) except where the machines differ
(preset "demo" and fewer epochs, so a 2-core laptop finishes in minutes).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from headrot.config import from_mapping, load_yaml
from headrot.model.unet import PRESETS, UNetConfig


# ---------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class TrainConfig:
    kind: Literal["generator", "embedder"] = "generator"  # which network to train
    preset: str = "demo"                  # unet.PRESETS name, the model when `model` is not given
    model: UNetConfig | None = None       # full model config; overrides `preset`
    image_size: int | None = None         # override the model's image size (None: the model's)
    batch_size: int = 64                  # per worker (global batch = batch_size * num_workers)
    lr: float = 1e-3                      # AdamW learning rate (Keras DDIM example)
    weight_decay: float = 1e-4            # AdamW weight decay (Keras DDIM example)
    ema_decay: float = 0.999              # EMA of the weights; samples and the export use the EMA
    ema_warmup: bool = True               # decay min(ema_decay, (1+k)/(10+k)) at update k (see steps.EMA)
    p2_gamma: float = 0.0                 # generator: P2 loss weighting 1/(1+SNR)**gamma (0: uniform, the Keras loss)
    epochs: int = 10                      # passes over the data (a rerun with more epochs continues)
    max_steps: int | None = None          # stop after this many optimizer steps in all (None: no limit)
    seed: int = 0                         # weight init, noise draws and sample seeds derive from it
    num_workers: int = 1                  # Ray Train workers (DDP ranks)
    use_gpu: bool | None = None           # None: use GPUs when the cluster has any
    cpus_per_worker: float = 1.0          # fractional is fine (2-core machines: 0.5 with 2 workers)
    checkpoint_every: int = 1             # epochs between checkpoints (the last epoch always saves)
    keep_checkpoints: int = 2             # Ray Train checkpoints kept in storage
    max_failures: int = 0                 # automatic restarts from the latest checkpoint in one fit
    partitions: tuple[int, ...] = (0,)    # list_eval_partition values to train on (0 = train)
    limit: int | None = None              # use at most this many images (None: all)
    shuffle_buffer: int = 256             # rows in each worker's local shuffle buffer (0: none)
    sample_grid: bool = True              # write a sample grid PNG each epoch
    sample_count: int = 16                # images in the grid (generator: seeds seed..seed+count-1)
    sample_steps: int = 10                # DDIM steps for the grid samples
    embed_steps: int = 10                 # embedder: DDIM steps through the frozen generator
    generator: str | None = None          # embedder: generator model.pt (None: <root>/checkpoints/generator/model.pt)
    init_from: str | None = None          # warm start: a model.pt of this kind and network whose weights a fresh run
                                          # starts from (model and EMA); ignored once a checkpoint exists (resume wins)
    fail_after_steps: int | None = None   # testing: raise after this many steps in a run that did not resume

    def __post_init__(self) -> None:
        if self.model is None and self.preset not in PRESETS:
            raise ValueError(f"train: unknown preset {self.preset!r}; choose one of {sorted(PRESETS)} or give `model`")
        positive = {
            "batch_size": self.batch_size, "epochs": self.epochs, "num_workers": self.num_workers,
            "checkpoint_every": self.checkpoint_every, "keep_checkpoints": self.keep_checkpoints,
            "sample_count": self.sample_count, "sample_steps": self.sample_steps, "embed_steps": self.embed_steps,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"train: {name} must be >= 1, got {value}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"train: max_steps must be >= 1 or null, got {self.max_steps}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"train: limit must be >= 1 or null, got {self.limit}")
        if not self.cpus_per_worker > 0:
            raise ValueError(f"train: cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train: ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"train: need lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if self.max_failures < -1:
            raise ValueError(f"train: max_failures must be >= -1 (-1: retry forever), got {self.max_failures}")
        if not 0.0 <= self.p2_gamma <= 4.0:
            raise ValueError(f"train: p2_gamma must be in [0, 4] (0: uniform; the P2 paper uses 0.5-1), got {self.p2_gamma}")
        if self.shuffle_buffer < 0:
            raise ValueError(f"train: shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        if self.kind == "generator" and self.generator is not None:
            raise ValueError("train: `generator` (a checkpoint to train through) is for kind embedder only")

    def model_config(self, generator: UNetConfig | None = None) -> UNetConfig:
        """The network this run trains.

        generator: the embedder's frozen generator config; the embedder is the same
        U-Net without the time input (the paper's choice) unless `model` says otherwise.
        """
        if self.model is not None:
            config = self.model
        elif self.kind == "embedder" and generator is not None:
            config = generator
        else:
            config = PRESETS[self.preset]
        if self.image_size is not None:
            config = dataclasses.replace(config, image_size=self.image_size)
        if self.kind == "embedder":
            config = dataclasses.replace(config, time_input=False)
            if generator is not None and config.image_size != generator.image_size:
                raise ValueError(
                    f"train: the embedder's image_size {config.image_size} differs from the generator's "
                    f"{generator.image_size}; drop image_size or use a generator of that size"
                )
        return config


# ---------------------------------------------------------------------------
# Loading


def load_config(path: str | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """A YAML file (optional) with flag overrides on top; None-valued overrides are ignored."""
    data: dict[str, Any] = load_yaml(path) if path else {}
    where = str(path) if path else "flags"
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return from_mapping(TrainConfig, data, where)
