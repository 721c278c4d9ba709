"""Stage 3, render: latents + trajectories -> rotated/part-NNNNN.parquet (the augmented dataset).

    shards (driver: one Ray Data row per latents file, latents/part-N -> rotated/part-N)
    -> RenderShards (model actor pool, batch_size=1): move every source latent along its
       trajectory for every (method, delta), decode with the 10-step DDIM, uint8 images
    -> write_shard (CPU task): PNG-encode, write the shard's Parquet (and PNGs with --format png)
    -> contact sheets (driver) -> rotated/_SUCCESS last.

Methods (how z moves): headrot.moves, a table of move functions; `yaw[-cal][-colour]` moves no
latent: a yaw-conditioned generator (render.yaw_generator) inverts each source's image under
its yaw and draws it under yaw + delta. A Variant
`<source>[-ortho][-norm][-cal][-colour]` is moved here with its norm (`place`), its calibration
(-cal: per face, the step scaled until the samples stage's reader, a second labeller the steps
were not computed from, reads the requested yaw change, `calibration_rounds` decodes per
render), for the `local` source each face's own step from the generator's Jacobian
(headrot.local_directions, legs of `local_segment` degrees), and with -colour every render
given its colour reference's colours (`colour_map`, `colour_reference`; headrot.colour) after
the guards have judged the decoded render and before the reader reads it.

Idempotent like the embed stage: a shard's Parquet file appears whole or not at all,
a rerun renders only the shards whose file is missing, and a complete stage with
the same fingerprint does nothing.
"""
from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from headrot import directions as D
from headrot import rejects, runs, storage, tables
from headrot.config import to_mapping
from headrot.layout import RunLayout
from headrot.lock import locked
from headrot.stages import sharding
from headrot.moves import LOCAL, METHODS, SOURCES, YAW, TrajectoryIndex, Variant, move_of, parse_variant, place
from headrot.stages.fit import SPLITS
from headrot.stages.protocol import Stage, run_stage
from headrot.stages.samples import labeller_key, steerer_keys

log = logging.getLogger(__name__)

STAGE = "render"
PIVOTAL_BATCH = 8     # pivotal tuning's batch, half the pivot's line, half fresh noise (16 measured no better)
PIVOTAL_GROUP = 32    # sources whose tuned copies draw (and, off the CPU, train) together as one batched network
# Source labels copied to every render (besides the attribute columns).
LABELS = ("partition", "identity", "yaw", "light")


# ---------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class RenderConfig:
    root: str                                                     # run root with latents/ and trajectories/
    deltas: tuple[int, ...] = (-30, -20, -10, 0, 10, 20, 30)      # degrees: target yaw = source yaw + delta
    split: Literal["train", "val", "test", "all"] = "test"        # which sources to render
    limit: int | None = None                                      # the first N sources of the split
    methods: tuple[str, ...] = ("headrot",)                       # see METHODS
    out: str | None = None                                        # rotated folder (default <root>/rotated)
    format: Literal["parquet", "png"] = "parquet"                 # png: also one PNG per render
    generator: str | None = None                                  # default <root>/checkpoints/generator/model.pt
    yaw_generator: str | None = None                              # yaw methods: a yaw-conditioned generator
                                                                  # (default <root>/checkpoints/generator_yaw/model.pt)
    data: str | None = None                                       # yaw methods: the CelebA root the latents came
                                                                  # from (they invert the sources' images)
    inversion_iterations: tuple[int, int] = (5, 2)                # yaw methods: the embed stage's inversion
    yaw_guards: bool = False                                      # yaw -cal: also refuse what max_drift and
                                                                  # max_novel_colour refuse (off: on the demo they
                                                                  # stopped light hair at +10, already recoloured,
                                                                  # and cost pose; bench/NOTES.md)
    batch_size: int = 64                                          # renders per network call
    steps: int = 10                                               # DDIM steps (the paper's 10)
    max_actors: int | None = None                                 # model actors (default: one per GPU, else 1)
    sheet_sources: int = 8                                        # contact-sheet rows per light class
    precision: Literal["auto", "fp32", "bf16"] = "auto"           # auto: bf16 autocast on GPUs, fp32 on CPU
    compile: bool = False                                         # torch.compile the generator (CUDA graphs on GPU)
    calibration_rounds: int = 3                                   # -cal methods: decodes (reader reads) per render
    max_drift: float | None = 0.05                                # -cal and local: refuse renders whose colours drift
                                                                  # more (directions.drift); None: no guard
    min_leg_psnr: float | None = None                             # local: refuse a render further than this (dB)
                                                                  # from where its leg started (None: no guard)
    local_lowpass: int = 8                                        # local: blocks per side of the step's subspace
    local_segment: float = 10.0                                   # local: re-linearise every this many degrees (0: once)
    local_jacobian_steps: int | None = None                       # local: DDIM steps inside the Jacobian (None: steps)
    local_correct: float = 0.0                                    # local: weight of each leg's corrector back to the
                                                                  # source's colours and light (0: off; 1 measured no
                                                                  # better on the demo: bench/NOTES.md)
    local_edit_step: int = 0                                      # local: move the sampler's path after this many of
                                                                  # its steps, not x_T (0: x_T, the paper's latent)
    local_keep: tuple[str, ...] = ("image", "border", "centre", "hair")  # local: the regions whose mean colours
                                                                  # the step is kept off (-ortho), with light
    max_novel_colour: float | None = None                         # -cal and local: refuse a render (as written, after
                                                                  # -colour) with more than this share of pixels in
                                                                  # colours its unmoved render lacks (None: no guard)
    novel_colour_tau: float = 0.12                                # how far (RGB 0..1) a colour is new
    colour_map: Literal["transport", "linear"] = "transport"      # -colour: the reference's whole colour
                                                                  # distribution (sliced transport, smoothed) or
                                                                  # its mean and covariance (headrot.colour)
    colour_reference: Literal["auto", "source", "unmoved"] = "auto"  # -colour: the source image (needs `data`;
                                                                  # measured +0.4-0.6 dB over unmoved, NOTES),
                                                                  # the method's unmoved render, or auto: the
                                                                  # source when `data` is set, else unmoved
    colour_guidance_steps: int = 2                                # yaw -colour methods: the first N DDIM steps'
                                                                  # x_0 estimates given the colour reference's colours
                                                                  # by colour_map, so the later steps draw on them
                                                                  # (0: off; 2 measured +0.3-0.5 dB on the + side,
                                                                  # bench/NOTES.md)
    pivotal_steps: int = 0                                        # yaw methods: each source drawn by a copy of the
                                                                  # yaw generator tuned this many steps on it first
                                                                  # (pivotal tuning, headrot.model.pivotal; 0: off)
    pivotal_lr: float = 2e-5                                      # yaw methods: that tuning's learning rate (1e-4
                                                                  # taught the copies the source's pose: bench/NOTES.md)
    inversion_regularization: float = 0.0                         # yaw methods: each source inverted with its noise
                                                                  # predictions kept white (pix2pix-zero's regularised
                                                                  # inversion, headrot.model.noise_regularization), its
                                                                  # step weights times this (0: off, as in the demo:
                                                                  # 0.5 measured no better there, bench/NOTES.md)

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS and parse_variant(m) is None]
        if bad or not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"render: methods {list(self.methods)}: use distinct ones of {list(METHODS)}, "
                             f"<source>[-ortho][-norm][-cal][-colour] with a source of {[*SOURCES, LOCAL]}, "
                             f"or {YAW}[-cal][-colour]")
        if self.local_segment < 0:
            raise ValueError("render: local_segment must be >= 0 (0: one linearisation at the source)")
        if self.calibration_rounds < 1:
            raise ValueError("render: calibration_rounds must be >= 1")
        if not 0 <= self.local_edit_step < self.steps:
            raise ValueError(f"render: local_edit_step must be in [0, steps={self.steps}), got {self.local_edit_step}")
        if self.local_edit_step and self.local_jacobian_steps not in (None, self.steps):
            raise ValueError("render: local_edit_step needs the Jacobian on the render's own grid: "
                             "leave local_jacobian_steps unset")
        from headrot.labels.nuisance import REGIONS

        if not set(self.local_keep) <= set(REGIONS):
            raise ValueError(f"render: local_keep must name regions among {REGIONS}, got {list(self.local_keep)}")
        if not 0.0 <= self.local_correct <= 2.0:
            raise ValueError(f"render: local_correct must be in [0, 2] (1: a full Gauss-Newton step), "
                             f"got {self.local_correct}")
        if self.min_leg_psnr is not None and self.min_leg_psnr <= 0:
            raise ValueError("render: min_leg_psnr must be > 0 dB (or null: no guard)")
        if self.max_drift is not None and self.max_drift <= 0:
            raise ValueError("render: max_drift must be > 0 (or null: no guard)")
        if self.max_novel_colour is not None and not 0 < self.max_novel_colour <= 1:
            raise ValueError("render: max_novel_colour must be a share in (0, 1] (or null: no guard)")
        if not 0 < self.novel_colour_tau <= 1.8:
            raise ValueError("render: novel_colour_tau must be in (0, 1.8] (RGB distance in 0..1 units)")
        if self.colour_map not in ("transport", "linear"):
            raise ValueError(f"render: colour_map {self.colour_map!r}: use transport or linear")
        if self.colour_reference not in ("auto", "source", "unmoved"):
            raise ValueError(f"render: colour_reference {self.colour_reference!r}: use auto, source or unmoved")
        if not 0 <= self.colour_guidance_steps <= self.steps:
            raise ValueError(f"render: colour_guidance_steps must be in [0, steps={self.steps}], "
                             f"got {self.colour_guidance_steps}")
        if self.pivotal_steps < 0 or not 0 < self.pivotal_lr < 1:
            raise ValueError(f"render: pivotal_steps must be >= 0 (0: off) and pivotal_lr in (0, 1), got "
                             f"{self.pivotal_steps} and {self.pivotal_lr}")
        if not 0 <= self.inversion_regularization <= 10:
            raise ValueError(f"render: inversion_regularization must be in [0, 10] (0: off; 1: pix2pix-zero's "
                             f"weights), got {self.inversion_regularization}")
        if self.colour_reference == "source" and not self.data:
            raise ValueError("render: colour_reference source reads the source images: give `data` "
                             "(the CelebA root the latents came from), or use unmoved")
        if not self.deltas or len(set(self.deltas)) != len(self.deltas):
            raise ValueError(f"render: deltas {list(self.deltas)} must be distinct and non-empty")
        if any(abs(d) > 180 for d in self.deltas):
            raise ValueError(f"render: deltas {list(self.deltas)} must lie in [-180, 180] degrees")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"render: limit must be >= 1, got {self.limit}")
        if self.batch_size < 1 or self.steps < 1:
            raise ValueError("render: batch_size and steps must be >= 1")

    def out_dir(self) -> str:
        return self.out or RunLayout(self.root).rotated

    def generator_uri(self) -> str:
        return self.generator or RunLayout(self.root).model("generator")

    def yaw_generator_uri(self) -> str:
        return self.yaw_generator or RunLayout(self.root).model("generator_yaw")

    def needs_labeller(self) -> bool:
        """Whether a method reads the samples stage's networks (-cal: the reader; local: the labeller)."""
        return any((v := parse_variant(m)) is not None and (v.cal or v.source == LOCAL) for m in self.methods)

    def needs_sample_lines(self) -> bool:
        """Whether a method's step comes from the fit's samples source: samples-* lines, and the
        nuisance directions an -ortho step of a fitted line is kept off (local steps read their own)."""
        return any((v := parse_variant(m)) is not None and (v.source == "samples" or (v.ortho and v.source != LOCAL))
                   for m in self.methods)

    def has_yaw_methods(self) -> bool:
        return any((v := parse_variant(m)) is not None and v.source == YAW for m in self.methods)

    def colours_from_source(self) -> bool:
        """Whether -colour renders take their source image's colours (else their unmoved render's)."""
        has_colour = any((v := parse_variant(m)) is not None and v.colour for m in self.methods)
        return has_colour and (self.colour_reference == "source" or (self.colour_reference == "auto" and bool(self.data)))

    def trajectories_uri(self) -> str:
        return RunLayout(self.root).trajectories_table

    def labeller_uri(self) -> str:
        return RunLayout(self.root).labeller


# ---------------------------------------------------------------------------
# Helpers (pure)


def calls_per_render(config: RenderConfig) -> dict[str, float]:
    """Generator decodes per output render, per method (1 for a plain move): the cost of
    calibration and of local steps. A -cal method decodes every nonzero delta
    `calibration_rounds` times and shares one G(z). A local method computes a Jacobian where its
    legs say so (local_directions.jacobian_decodes of its readings each) and decodes each leg
    `rounds` times."""
    from headrot.local_directions import jacobian_decodes, n_readings, plan_legs

    n_d = len(config.deltas)
    out = {}
    for m in config.methods:
        v = parse_variant(m)
        rounds = config.calibration_rounds if v is not None and v.cal else 1
        if v is not None and v.source == LOCAL:
            legs = jacobians = 0
            for sign in (-1, 1):
                plan = plan_legs([d for d in config.deltas if d * sign > 0], config.local_segment)
                legs += len(plan)
                # Each side's first leg starts at z, whose one Jacobian both sides share.
                jacobians += sum(1 for _, _, fresh in plan[1:] if fresh)
            jacobians += 1 if any(d != 0 for d in config.deltas) else 0
            # A Jacobian through fewer DDIM steps costs that much less; so does every decode from a
            # point k steps down the path (local_edit_step), once the k steps to it are paid.
            k = config.local_edit_step
            share = ((config.local_jacobian_steps or config.steps) - k) / config.steps
            leg_share = (config.steps - k) / config.steps
            jac = jacobian_decodes(n_readings(config.local_keep))
            out[m] = round((jacobians * jac * share + legs * rounds * leg_share + k / config.steps + 1) / n_d, 3)
        elif v is not None and v.source == YAW:
            # Its own inversion (headrot.model.sampler.ddim_inversion's network calls, in decodes of
            # `steps` calls), its own unmoved render, then one decode (or `rounds`) per nonzero delta;
            # with pivotal tuning first, each step a forward and a backward pass (about three forward
            # calls) on PIVOTAL_BATCH images.
            nonzero = sum(1 for d in config.deltas if d != 0)
            fixed_point, per_step = config.inversion_iterations
            inversion = (fixed_point + (config.steps - 1) * (1 + per_step)) / config.steps
            tuning = config.pivotal_steps * 3 * PIVOTAL_BATCH / config.steps
            out[m] = round((inversion + tuning + 1 + nonzero * rounds) / n_d, 3)
        elif v is not None and v.cal:
            nonzero = sum(1 for d in config.deltas if d != 0)
            out[m] = round((nonzero * rounds + 1) / n_d, 3)
        else:
            out[m] = 1.0
    return out


def read_source_images(data: str, ids: list[str], size: int) -> np.ndarray:
    """uint8 [N,S,S,3]: the sources' images from the CelebA root `data`, decoded as the embed stage
    decodes them; an image that is gone or unreadable is an error naming it."""
    from headrot.data.dataset import decode_batch
    from headrot.data.index import IMAGES_DIR

    paths = [storage.join(data, IMAGES_DIR, i) for i in ids]
    decoded = decode_batch({"path": np.array(paths, dtype=object)}, size)
    for path, reason in zip(paths, decoded["reject_reason"]):
        if reason:
            raise ValueError(f"render: {runs.redact_uri(path)}: {reason}; the yaw methods and the contact sheets read "
                             "each source's image: give render `data` the CelebA root these latents were embedded from")
    return decoded["image"]


def select_sources(table: pa.Table, split: str, take: int | None) -> pa.Table:
    if split != "all":
        part = table.column("partition").to_numpy()
        table = table.filter(pa.array(part == SPLITS[split]))
    return table.slice(0, take) if take is not None else table


def attribute_columns(schema: pa.Schema) -> list[str]:
    """The 40 CelebA attributes: the latents' bool columns, in file order."""
    return [f.name for f in schema if pa.types.is_boolean(f.type)]


# ---------------------------------------------------------------------------
# The model actor


class RenderShards:
    """Model actor: loads the generator, the trajectories (and the labeller, for -cal and local methods)
    once; renders one shard per call. Built from its config alone (the fit's key attributes and the
    labeller come from the run root), so callable without Ray: RenderShards(config)(batch)."""

    def __init__(self, config: RenderConfig, torch_threads: int | None = None):
        self.config = config
        layout = RunLayout(config.root)
        fit_attributes = tuple((storage.completion(layout.trajectories) or {}).get("attributes", ()))
        labeller = labeller_key(config.root)
        self.acc, self.model, self.model_config, self.batch_size = sharding.generator_actor(
            config.generator_uri(), config.precision, config.compile, torch_threads, config.batch_size)
        self.device = self.acc.device
        self.index = TrajectoryIndex(tables.read_parquet(config.trajectories_uri()), fit_attributes)
        self.methods, self.deltas, self.split = tuple(config.methods), tuple(config.deltas), config.split
        self.variants = {m: parse_variant(m) for m in self.methods}
        self.moves = {m: move_of(m) for m in self.methods}
        self.labeller = self.reader = self.steer = None
        if config.needs_labeller():
            from headrot.labels.pose import MeanReading
            from headrot.stages.samples import load_labeller

            if not labeller:
                raise ValueError("render: -cal and local methods need the samples stage's labeller: run "
                                 "`headrot samples` (n 0 trains the networks alone)")
            self.labeller = load_labeller(config.labeller_uri(), labeller)
            # What calibration reads: the reader when the samples stage trained one (a network the
            # local steps' gradients did not come from), else the labeller itself (older runs).
            reader = labeller_key(config.root, "reader")
            self.reader = load_labeller(layout.reader, reader) if reader else self.labeller
            # What the local steps follow: the labeller, or its mean with the steering networks.
            steerers = [load_labeller(layout.steerer(key["seed"]), key) for key in steerer_keys(config.root)]
            self.steer = MeanReading([self.labeller, *steerers]) if steerers else self.labeller
        self.yaw_model = self.load_yaw_generator() if config.has_yaw_methods() else None
        self.steps = config.steps
        self.actor = sharding.actor_name()
        self.calls = 0

    def load_yaw_generator(self):
        """The yaw methods' generator, checked: a yaw input, the main generator's image size."""
        from headrot.model.checkpoint import load_model

        uri = self.config.yaw_generator_uri()
        if not self.config.data:
            raise ValueError("render: the yaw methods invert their sources' images: give render `data`, the "
                             "CelebA root the latents were embedded from (`headrot run` sets it)")
        model, config, _ = load_model(uri, "generator", map_location=self.device)
        if not config.yaw_harmonics:
            raise ValueError(f"{runs.redact_uri(uri)} has no yaw input (yaw_harmonics=0): the yaw methods need a "
                             "yaw-conditioned generator (README, Models: `python -m bench.yaw_conditioned export`)")
        if config.image_size != self.model_config.image_size:
            raise ValueError(f"{runs.redact_uri(uri)} draws {config.image_size}x{config.image_size} images, the "
                             f"generator {self.model_config.image_size}x{self.model_config.image_size}: one size per run")
        return self.acc.prepare(model)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        self.calls += 1
        sharding.fault_point(self.calls, STAGE)  # tests only (HEADROT_FAULT); a no-op otherwise
        with torch.inference_mode():
            return self._render(str(batch["latents_uri"][0]), int(batch["take"][0]), batch["shard"])

    def decode(self, latents: np.ndarray, start_step: int = 0) -> np.ndarray:
        """uint8 [N,S,S,3] renders of latents [N,3,S,S], in batches of the actor's size.
        `start_step` k: the latents are points of the sampler's path after k steps (`advance`)."""
        from headrot.model.sampler import reverse_diffusion
        from headrot.report.grid import to_uint8

        size = self.model_config.image_size
        out = np.zeros((len(latents), size, size, 3), np.uint8)
        for s in range(0, len(latents), self.batch_size):
            with self.acc.busy.timing(), self.acc.autocast():
                x = self.acc.to_device(np.ascontiguousarray(latents[s:s + self.batch_size], np.float32))
                out[s:s + self.batch_size] = to_uint8(reverse_diffusion(self.model, x, steps=self.steps,
                                                                        start_step=start_step))
        return out

    def decode_at_yaw(self, latents: np.ndarray, yaws: np.ndarray, references: np.ndarray | None = None) -> np.ndarray:
        """uint8 [N,S,S,3]: latents [N,3,S,S] drawn by the yaw-conditioned generator at yaws [N] degrees;
        with `references` (uint8 [N,S,S,3]), colour-guided by them (`colour_guidance_steps`)."""
        from headrot.model.conditioning import at_yaw
        from headrot.model.sampler import reverse_diffusion
        from headrot.report.grid import to_uint8

        size = self.model_config.image_size
        guide_steps = self.config.colour_guidance_steps if references is not None else 0
        out = np.zeros((len(latents), size, size, 3), np.uint8)
        # Tuned copies draw row r with copy r mod K: each call takes a whole number of rows per copy.
        copies = getattr(self.yaw_model, "k", 0)
        per_call = copies * max(1, self.batch_size // copies) if copies else self.batch_size
        for s in range(0, len(latents), per_call):
            rows = slice(s, s + per_call)
            with self.acc.busy.timing(), self.acc.autocast():
                x = self.acc.to_device(np.ascontiguousarray(latents[rows], np.float32))
                net = at_yaw(self.yaw_model, yaws[rows])
                guide = self.colour_guide(references[rows]) if guide_steps else None
                out[rows] = to_uint8(reverse_diffusion(net, x, steps=self.steps, guide=guide, guide_steps=guide_steps))
        return out

    def colour_guide(self, references: np.ndarray):
        """x_0 estimates [N,3,S,S] -> the same given the colours of `references` [N] by `colour_map`
        (headrot.model.sampler's `guide`). Through uint8, as every colour map here works: the
        rounding is far below what the sampler's later steps redraw."""
        import torch

        from headrot.report.grid import to_uint8

        def guide(pred_images: torch.Tensor) -> torch.Tensor:
            mapped = self.recoloured(to_uint8(pred_images), references, True)
            as_tensor = torch.from_numpy(mapped).to(pred_images.device).permute(0, 3, 1, 2)
            return as_tensor.to(pred_images.dtype) / 127.5 - 1.0

        return guide

    def invert_at_yaw(self, images: np.ndarray, yaws: np.ndarray) -> np.ndarray:
        """float64 [N,3,S,S]: each uint8 image [N,S,S,3] inverted by the yaw-conditioned generator under
        its own yaw, as the embed stage inverts (its DDIM steps and iterations), its noise predictions
        regularised when `inversion_regularization` (every batch from the same seed, so a face's latent
        does not depend on its batch)."""
        from headrot.model.conditioning import at_yaw
        from headrot.model.noise_regularization import regularized
        from headrot.model.sampler import ddim_inversion

        out = np.zeros((len(images), 3, *images.shape[1:3]))
        for s in range(0, len(images), self.batch_size):
            with self.acc.busy.timing(), self.acc.autocast():
                x = self.acc.to_device(np.ascontiguousarray(images[s:s + self.batch_size])).permute(0, 3, 1, 2).float()
                net = at_yaw(self.yaw_model, yaws[s:s + self.batch_size])
                if self.config.inversion_regularization:
                    net = regularized(net, seed=0, strength=self.config.inversion_regularization)
                out[s:s + self.batch_size] = ddim_inversion(net, x / 127.5 - 1.0, self.steps, None,
                                                            *self.config.inversion_iterations).float().cpu().numpy()
        return out

    def source_images(self, ids: list[str]) -> np.ndarray:
        return read_source_images(self.config.data, ids, self.model_config.image_size)

    def advance(self, latents: np.ndarray, to_step: int) -> np.ndarray:
        """float64 [N,3,S,S]: the sampler's path from each latent after `to_step` of its steps."""
        if not to_step:
            return latents
        from headrot.model.sampler import advance

        out = np.zeros_like(latents)
        for s in range(0, len(latents), self.batch_size):
            with self.acc.busy.timing(), self.acc.autocast():  # as `decode`: its path, under the same precision
                x = self.acc.to_device(np.ascontiguousarray(latents[s:s + self.batch_size], np.float32))
                out[s:s + self.batch_size] = advance(self.model, x, self.steps, to_step).float().cpu().numpy()
        return out

    def drift_guard(self, base: np.ndarray, repeats: int = 1):
        """images [repeats*N] -> valid [repeats*N]: colour drift from the unmoved renders `base`
        [N] within max_drift (None when the guard is off)."""
        if self.config.max_drift is None:
            return None
        from headrot.labels.nuisance import image_statistics

        ref = np.concatenate([image_statistics(base)] * repeats)
        return lambda images: D.drift(image_statistics(images), ref) <= self.config.max_drift

    def novel_guard(self, base: np.ndarray, repeats: int = 1):
        """images [repeats*N] (as `guard_view` shows them) -> valid [repeats*N]: at most
        `max_novel_colour` of their pixels in colours the unmoved render `base` [N] lacks (None
        when the guard is off). Judged after the linear colour map, unlike the drift guard: that
        map undoes a global shift, and what it leaves new is a local break (a blotch, a band, a
        face relit)."""
        if self.config.max_novel_colour is None:
            return None
        from headrot.colour import novel_colour_share

        ref = np.concatenate([base] * repeats)
        return lambda images: novel_colour_share(images, ref, self.config.novel_colour_tau) <= self.config.max_novel_colour

    @staticmethod
    def both(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
        """The verdicts of two guards, either of which may be off (None)."""
        if a is None or b is None:
            return b if a is None else a
        return np.asarray(a, bool) & np.asarray(b, bool)

    def recoloured(self, images: np.ndarray, reference: np.ndarray, colour: bool) -> np.ndarray:
        """images [k*N] (k renders of each of the N sources, source-major within each block of
        N) with their reference's [N] colours by `colour_map` when `colour` (headrot.colour),
        else unchanged."""
        if not colour:
            return images
        from headrot.colour import keep_colours, transport_colours

        mapped = transport_colours if self.config.colour_map == "transport" else keep_colours
        return mapped(images, np.concatenate([reference] * (len(images) // max(len(reference), 1))))

    @staticmethod
    def guard_view(raw: np.ndarray, base: np.ndarray, colour: bool) -> np.ndarray:
        """What the novel-colour guard judges of decoded renders [k*N]: with -colour, the linear map
        onto the unmoved renders `base` [N]. Never the transport map, whatever `colour_map`: that
        gives every render its reference's colours, which would pass every render the guard is
        there to refuse (max_novel_colour was measured on the linear map, bench/NOTES.md)."""
        if not colour:
            return raw
        from headrot.colour import keep_colours

        return keep_colours(raw, np.concatenate([base] * (len(raw) // max(len(base), 1))))

    def colour_reference(self, base: np.ndarray, sources: np.ndarray | None) -> np.ndarray:
        """The images [N] -colour renders take their colours from: the sources' own (read once
        per shard when `colours_from_source`), else the method's unmoved renders `base`."""
        return base if sources is None else sources

    def leg_guard(self):
        """(images, images at the leg's start) -> valid: a leg's render at least `min_leg_psnr`
        dB from where the leg started (None when the guard is off). On the demo model the +-10
        renders less than 18 dB from their unmoved render had lost hair or shading and cost 1.8-2.8
        dB against ground truth on average; the demo's 19.5 measured best (bench/NOTES.md)."""
        if self.config.min_leg_psnr is None:
            return None
        from headrot.evaluate.metrics import psnr_batch

        return lambda images, start: psnr_batch(images, start) >= self.config.min_leg_psnr

    def calibrated(self, z: np.ndarray, moves: list[np.ndarray], norm: bool, colour: bool,
                   base: np.ndarray, reference: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Per delta, the renders of each source with its step scaled until the reader reads
        the requested yaw change from `base` (the unmoved renders); every round's decode is kept,
        so the chosen round's images are the output. (images per delta, scales [D,N], read [D,N])."""
        nonzero = [d for d, delta in enumerate(self.deltas) if delta != 0]
        z_rep = np.concatenate([z] * len(nonzero)) if nonzero else z[:0]
        m_rep = np.concatenate([moves[d] for d in nonzero]) if nonzero else z[:0]
        return self.calibrate(lambda scale: self.decode(place(z_rep, m_rep, scale, norm)), colour, base, reference)

    def yaw_methods(self, src: "Sources", methods: list[tuple[int, Variant]], images: np.ndarray,
                    colour_sources: np.ndarray | None) -> dict[int, tuple[list[np.ndarray], np.ndarray, np.ndarray]]:
        """{method position: conditioned()'s (images per delta, scales, reads)} of every yaw method,
        from one inversion of each source image [N] under its yaw, shared by all of them. With
        `pivotal_steps`, each source is drawn (its unmoved render too) by its own copy of the yaw
        generator tuned on it (headrot.model.pivotal), the inversion by the untuned one its pivot; the
        copies of PIVOTAL_GROUP sources draw together as one batched network (headrot.model.pivotal)."""
        z = self.invert_at_yaw(images, src.yaw)
        if not self.config.pivotal_steps:
            inverted = (z, self.decode_at_yaw(z, src.yaw))
            return {m: self.conditioned(src, v, inverted, colour_sources) for m, v in methods}
        untuned, parts = self.yaw_model, []
        try:
            for start in range(0, len(z), PIVOTAL_GROUP):
                rows = slice(start, start + PIVOTAL_GROUP)
                part = src.part(rows)
                self.yaw_model = self.tuned_on(untuned, images[rows], z[rows], part.yaw,
                                               part.table.column("image_id").to_pylist())
                inverted = (z[rows], self.decode_at_yaw(z[rows], part.yaw))
                references = None if colour_sources is None else colour_sources[rows]
                parts.append({m: self.conditioned(part, v, inverted, references) for m, v in methods})
        finally:
            self.yaw_model = untuned
        return {m: ([np.concatenate([p[m][0][d] for p in parts]) for d in range(len(self.deltas))],
                    np.concatenate([p[m][1] for p in parts], axis=1),
                    np.concatenate([p[m][2] for p in parts], axis=1)) for m, _ in methods}

    def tuned_on(self, net, images: np.ndarray, pivots: np.ndarray, yaws: np.ndarray, image_ids: list[str]):
        """`net` (the yaw generator) as copies (headrot.model.pivotal.Copies), copy k tuned `pivotal_steps` on
        source k (uint8 [K,S,S,3]) whose inversion under its yaw is pivots[k] [3,S,S]; each seeded by its
        image id, so a face's renders do not depend on its shard or its neighbours."""
        import zlib

        import torch

        from headrot.model.pivotal import tune_copies

        with self.acc.busy.timing(), torch.inference_mode(False):
            x = self.acc.to_device(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            z = self.acc.to_device(np.ascontiguousarray(pivots, np.float32))
            return tune_copies(net, x, z, [float(y) for y in yaws], self.config.pivotal_steps,
                               self.config.pivotal_lr, seeds=[zlib.crc32(i.encode()) for i in image_ids],
                               batch=PIVOTAL_BATCH)

    def conditioned(self, src: "Sources", variant: Variant, inverted: tuple[np.ndarray, np.ndarray],
                    sources: np.ndarray | None) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Per delta, each source drawn by the yaw-conditioned generator at yaw + delta from its own
        inversion under its yaw (`inverted`: yaw_methods; -cal: the offset scaled until the reader
        reads delta); delta 0 is that generator's reconstruction, the unmoved render. (images per
        delta, scales [D,N], reads [D,N])."""
        n = len(src.z)
        z, base = inverted
        reference = self.colour_reference(base, sources)
        if variant.colour:
            # -colour maps the unmoved render too, as it maps the turns. A tuned copy's reconstruction
            # drifts in colour (its first optimizer steps move every weight a little), and the yaw
            # generator trained on turns reconstructs in colours of its own too: untuned, its delta-0
            # renders read 27.4 dB against the truth on the demo, mapped 31.0 (bench/NOTES.md,
            # twenty-sixth session).
            base = self.recoloured(base, reference, True)
        nonzero = [delta for delta in self.deltas if delta != 0]
        z_rep, yaw_rep = np.concatenate([z] * len(nonzero)) if nonzero else z[:0], np.tile(src.yaw, len(nonzero))
        wanted = np.repeat(np.asarray(nonzero, np.float64), n)
        # -colour: the colours are also kept while the turned head is drawn, not only after it (the
        # white caps and light hair the generator draws darker on a turn keep more of their colour).
        guides = np.concatenate([reference] * len(nonzero)) if variant.colour and nonzero else None
        decode_at = lambda scale: self.decode_at_yaw(z_rep, yaw_rep + scale * wanted, guides)  # noqa: E731
        if variant.cal:
            return self.calibrate(decode_at, variant.colour, base, reference, guarded=self.config.yaw_guards)
        images = self.recoloured(decode_at(np.ones(len(wanted))), reference, variant.colour)
        per_delta, k = [], 0
        for delta in self.deltas:
            per_delta.append(base if delta == 0 else images[k * n:(k + 1) * n])
            k += delta != 0
        return per_delta, np.ones((len(self.deltas), n)), np.full((len(self.deltas), n), np.nan)

    def calibrate(self, decode_at, colour: bool, base: np.ndarray, reference: np.ndarray,
                  guarded: bool = True) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """The -cal loop of every source of a move: `decode_at(scale [K*N])` decodes the K nonzero
        deltas' renders (delta-major) with each one's move scaled; rounds until the reader reads
        the wanted change from `base`, the guards (when `guarded`) refusing what breaks (a face no
        round passes stays at `base`). (images per delta, scales [D,N], read [D,N])."""
        n, n_d = len(base), len(self.deltas)
        nonzero = [d for d, delta in enumerate(self.deltas) if delta != 0]
        y0 = self.reader.predict(base)
        wanted = np.repeat(np.asarray([self.deltas[d] for d in nonzero], np.float64), n)
        rounds: list[np.ndarray] = []

        valid_of = self.drift_guard(base, len(nonzero)) if guarded else None
        novel_of = self.novel_guard(base, len(nonzero)) if guarded else None

        def achieved_at(scale: np.ndarray):
            raw = decode_at(scale)
            # The drift guard judges the decoded render: -colour would hide the drift it looks for.
            valid = valid_of(raw) if valid_of is not None else None
            rounds.append(self.recoloured(raw, reference, colour))
            valid = self.both(valid, novel_of(self.guard_view(raw, base, colour)) if novel_of is not None else None)
            reading = self.reader.predict(rounds[-1]) - np.tile(y0, len(nonzero))
            return reading if valid is None else (reading, valid)

        scales, read = np.ones((n_d, n)), np.zeros((n_d, n))
        images = [base] * n_d
        if nonzero:
            cal = D.calibrate(achieved_at, wanted, self.config.calibration_rounds)
            kept = cal.best_round >= 0     # no render passed the guard: the unmoved one stays
            chosen = np.stack(rounds)[np.maximum(cal.best_round, 0), np.arange(len(wanted))]
            chosen = np.where(kept[:, None, None, None], chosen, np.concatenate([base] * len(nonzero)))
            for k, d in enumerate(nonzero):
                rows = slice(k * n, (k + 1) * n)
                images[d], scales[d], read[d] = chosen[rows], cal.scale[rows], cal.achieved[rows]
        return images, scales, read

    def local(self, z: np.ndarray, variant: Variant, base: np.ndarray,
              reference: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Per delta, each face moved along its own conditional step (headrot.local_directions),
        each side's deltas reached in legs of `local_segment` degrees: the steps from the
        labeller's Jacobian, each leg's length calibrated by what the reader reads (uncalibrated:
        one decode per leg at the first-order length). (images per delta, multipliers [D,N],
        reads [D,N])."""
        import torch

        from headrot import local_directions as L
        from headrot.model.sampler import reverse_diffusion

        y0 = self.reader.predict(base)
        # What the step is kept off besides light (-ortho) and what a corrector steers back: only
        # these regions' colours are read, so the Jacobian costs one backward pass per reading kept.
        read = L.readings(self.steer, self.model_config.image_size, self.config.local_keep)
        # Where the move happens: x_T (k = 0), or the sampler's path after k of its steps, whose
        # coarse layout is already drawn (everything below moves that point instead of x_T).
        k = self.config.local_edit_step
        z = self.advance(z, k)

        def render(x):
            with self.acc.busy.timing():
                return reverse_diffusion(self.model, x.to(self.device),
                                         steps=self.config.local_jacobian_steps or self.steps,
                                         start_step=k).float().cpu()

        def linearise(latents):
            with torch.inference_mode(False):
                return L.jacobian(render, read, latents, self.config.local_lowpass)

        # Both sides start at z: one linearisation there serves both (made on the first leg, so
        # never when no delta moves), and its readings are what every later corrector steers back to.
        at_z: list[tuple[np.ndarray, np.ndarray]] = []

        def step_at(latents):
            if latents is z and not at_z:
                at_z.append(linearise(z))
            values, jac = at_z[0] if latents is z else linearise(latents)
            step = L.conditional_steps(jac, variant.ortho)
            if not self.config.local_correct or latents is z:
                return step
            return step, self.config.local_correct * L.correction(jac, values, at_z[0][0])

        guard, novel = self.drift_guard(base), self.novel_guard(base)

        def decode_read(latents):
            raw = self.decode(latents, k)
            # The drift guard judges the decoded render: -colour would hide the drift it looks for.
            valid = guard(raw) if guard is not None else None
            images = self.recoloured(raw, reference, variant.colour)
            valid = self.both(valid, novel(self.guard_view(raw, base, variant.colour)) if novel is not None else None)
            return images, self.reader.predict(images) - y0, valid

        n = len(z)
        images, scales, reads = [base] * len(self.deltas), np.ones((len(self.deltas), n)), np.zeros((len(self.deltas), n))
        rounds = self.config.calibration_rounds if variant.cal else 1
        for sign in (-1, 1):
            wanted = [d for d in self.deltas if d * sign > 0]
            if not wanted:
                continue
            got = L.follow(z, base, wanted, step_at, decode_read, self.config.local_segment, rounds, variant.norm,
                           leg_valid=self.leg_guard())
            for d, delta in enumerate(self.deltas):
                if float(delta) in got:
                    images[d], reads[d], scales[d] = got[float(delta)]
        return images, scales, reads

    def _render(self, latents_uri: str, take: int, shard) -> dict[str, np.ndarray]:
        src = self.sources(latents_uri, take)
        out = self.render_sources(src)
        meta = self.meta(src, out)
        return {
            "shard": shard,
            "n": np.array([len(out.images)]),
            "size": np.array([self.model_config.image_size]),
            "images": np.array([out.images.tobytes()], dtype=object),
            "meta": np.array([tables.to_ipc(meta)], dtype=object),
            "rejected": np.array([json.dumps(src.rejected)], dtype=object),
            # The actor's running totals (model time, wall time): the stage's busy fraction.
            "busy": np.array([json.dumps({"actor": self.actor, **self.acc.busy.snapshot()})], dtype=object),
        }

    def sources(self, latents_uri: str, take: int) -> "Sources":
        """The shard's sources to render: those with a finite yaw (the others are rejected)."""
        table = tables.read_parquet(latents_uri)
        table = select_sources(table.drop_columns([c for c in ("landmarks",) if c in table.column_names]),
                               self.split, take)
        yaw = table.column("yaw").to_numpy(zero_copy_only=False).astype(np.float64)
        good = np.isfinite(yaw)
        rejected = table.column("image_id").filter(pa.array(~good)).to_pylist()
        table = table.filter(pa.array(good))
        n, size = table.num_rows, self.model_config.image_size
        z = tables.tensor_to_numpy(table.column("latent")).astype(np.float64) if n else np.zeros((0, 3, size, size))
        if z.shape[1:] != (3, size, size):
            raise ValueError(f"{latents_uri}: latents of shape {z.shape[1:]} do not fit the generator "
                             f"({size}x{size}); render with the generator the latents were embedded with")
        values = np.stack([table.column(a).to_numpy(zero_copy_only=False) for a in self.index.attributes], 1) \
            if self.index.attributes else np.zeros((n, 0), bool)
        return Sources(table, z, yaw[good], table.column("light").to_pylist(), values, rejected)

    def positions(self, n: int, m: int, d: int) -> np.ndarray:
        """Where the renders of method m at delta d sit: render (source j, m, d) is row
        j*M*D + m*D + d, so a shard's rows are grouped by source."""
        n_m, n_d = len(self.methods), len(self.deltas)
        return np.arange(n) * n_m * n_d + m * n_d + d

    def render_sources(self, src: "Sources") -> "Rendered":
        """Every (source, method, delta): plain moves decoded in one pass, then the calibrated
        and local ones (which read G(z), the unmoved render, as their zero); -colour renders get
        their colour reference's colours (colour_reference)."""
        n, size, n_d = len(src.z), self.model_config.image_size, len(self.deltas)
        out = Rendered.empty(n * len(self.methods) * n_d, size)
        plain_pos, plain_z, later, recolour = [], [], [], []
        for m, method in enumerate(self.methods):
            variant = self.variants[method]
            if variant is not None and variant.source in (LOCAL, YAW):
                for d in range(n_d):
                    pos = self.positions(n, m, d)
                    out.fallback[pos], out.traj_key[pos] = "none", variant.source
                later.append((m, variant, None))
                continue
            moves = []
            for d, delta in enumerate(self.deltas):
                moved, fbs, keys = self.moves[method](self.index, src.z, src.yaw, src.yaw + delta, src.lights,
                                                      src.values)
                pos = self.positions(n, m, d)
                out.fallback[pos], out.traj_key[pos] = fbs, keys
                moves.append(moved)
                if variant is None or not variant.cal:
                    plain_pos.append(pos)
                    plain_z.append(place(src.z, moved, 1.0, variant is not None and variant.norm))
                    if variant is not None and variant.colour:
                        recolour.append(pos)
            if variant is not None and variant.cal:
                later.append((m, variant, moves))
        if plain_pos:
            out.images[np.concatenate(plain_pos)] = self.decode(np.concatenate(plain_z))
        if (later or recolour) and n:
            latent = recolour or any(v.source != YAW for _, v, _ in later)
            # G(z): the latent methods' delta-0 render, calibration's zero, the guards' reference (and
            # -colour's, when the sources are not read). The yaw methods draw with their own
            # generator, from one inversion for all of them.
            base = self.decode(src.z) if latent else None
            yaw = any(v.source == YAW for _, v, _ in later)
            # The sources' own images: what the yaw methods invert, and the -colour reference when
            # colours come from the source; read once per shard for all of them.
            sources = (self.source_images(src.table.column("image_id").to_pylist())
                       if yaw or self.config.colours_from_source() else None)
            colour_sources = sources if self.config.colours_from_source() else None
            yawed = self.yaw_methods(src, [(m, v) for m, v, _ in later if v.source == YAW], sources,
                                     colour_sources) if yaw else {}
            reference = self.colour_reference(base, colour_sources) if latent else None
            for pos in recolour:
                out.images[pos] = self.recoloured(out.images[pos], reference, True)
            for m, variant, moves in later:
                if variant.source == YAW:
                    images, scales, read = yawed[m]
                elif moves is None:
                    images, scales, read = self.local(src.z, variant, base, reference)
                else:
                    images, scales, read = self.calibrated(src.z, moves, variant.norm, variant.colour, base,
                                                           reference)
                for d in range(n_d):
                    pos = self.positions(n, m, d)
                    out.images[pos], out.step_scale[pos], out.labeller_read[pos] = images[d], scales[d], read[d]
        return out

    def meta(self, src: "Sources", out: "Rendered") -> pa.Table:
        """The rotated table without its images (schema in docs/CONTRACTS.md rotated/)."""
        n_m, n_d = len(self.methods), len(self.deltas)
        total = len(src.z) * n_m * n_d
        src_idx = np.arange(total) // (n_m * n_d)
        meth_idx, delta_idx = (np.arange(total) // n_d) % n_m, np.arange(total) % n_d
        labels = src.table.select(["image_id", *LABELS, *attribute_columns(src.table.schema)])
        meta = labels.take(pa.array(src_idx, pa.int64())).rename_columns(["source_id", *labels.column_names[1:]])
        deltas = np.asarray(self.deltas, np.int16)[delta_idx]
        meta = meta.add_column(1, "delta", pa.array(deltas, pa.int16()))
        meta = meta.add_column(2, "target_yaw", pa.array((src.yaw[src_idx] + deltas).astype(np.float32), pa.float32()))
        meta = meta.add_column(3, "method", pa.array([self.methods[i] for i in meth_idx], pa.string()))
        meta = meta.add_column(4, "trajectory_key", pa.array(out.traj_key.tolist(), pa.string()))
        meta = meta.add_column(5, "fallback", pa.array(out.fallback.tolist(), pa.string()))
        # Calibration: the step's multiplier, and the yaw change calibration's reader read (-cal, local).
        meta = meta.append_column("step_scale", pa.array(out.step_scale, pa.float32()))
        return meta.append_column("labeller_yaw_change", pa.array(out.labeller_read, pa.float32()))


@dataclass
class Sources:
    """One shard's sources as the actor renders them."""
    table: pa.Table          # their latents rows (labels and attributes)
    z: np.ndarray            # [N,3,S,S] float64
    yaw: np.ndarray          # [N] degrees
    lights: list[str]
    values: np.ndarray       # [N, attributes] bool: the fit's key attributes
    rejected: list[str]      # image ids without a finite yaw

    def part(self, rows: slice) -> "Sources":
        """The sources of `rows` (pivotal tuning draws each group of sources with its own copies)."""
        start, stop, _ = rows.indices(len(self.z))
        return Sources(self.table.slice(start, stop - start), self.z[rows], self.yaw[rows], self.lights[rows],
                       self.values[rows], [])


@dataclass
class Rendered:
    """Every render of a shard (row order: RenderShards.positions) and its per-render columns."""
    images: np.ndarray
    fallback: np.ndarray
    traj_key: np.ndarray
    step_scale: np.ndarray
    labeller_read: np.ndarray

    @classmethod
    def empty(cls, total: int, size: int) -> "Rendered":
        return cls(np.zeros((total, size, size, 3), np.uint8), np.empty(total, dtype=object),
                   np.empty(total, dtype=object), np.ones(total, np.float32), np.full(total, np.nan, np.float32))


# ---------------------------------------------------------------------------
# The write task


def hf_features(schema: pa.Schema) -> dict[str, Any]:
    """Hugging Face `datasets` features for the rotated schema (`image` decodes as an Image)."""
    dtypes = {pa.string(): "string", pa.int8(): "int8", pa.int16(): "int16", pa.int32(): "int32",
              pa.int64(): "int64", pa.float32(): "float32", pa.float64(): "float64", pa.bool_(): "bool"}
    features: dict[str, Any] = {}
    for f in schema:
        if f.name == "image":
            features[f.name] = {"_type": "Image"}
        elif f.type in dtypes:
            features[f.name] = {"dtype": dtypes[f.type], "_type": "Value"}
    return features


def png_encode(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def write_shard(row: dict[str, Any], root: str, out_dir: str, fmt: str) -> dict[str, Any]:
    """CPU task: PNG-encode a shard's renders and write rotated/<shard>.parquet (whole, last)."""
    started = time.time()
    meta = tables.from_ipc(row["meta"])
    n, size = int(row["n"]), int(row["size"])
    images = np.frombuffer(row["images"], dtype=np.uint8).reshape(n, size, size, 3)
    ids = meta.column("source_id").to_pylist()
    methods = meta.column("method").to_pylist()
    deltas = meta.column("delta").to_pylist()
    paths = [storage.safe_name(f"{i}_{m}_{d}.png", "render path") for i, m, d in zip(ids, methods, deltas)]
    pngs = [png_encode(images[i]) for i in range(n)]
    if fmt == "png":
        # The PNGs first: a shard whose Parquet file exists is complete, PNGs included.
        for path, data in zip(paths, pngs):
            storage.write_bytes(storage.join(out_dir, "images", path), data)
    image = pa.StructArray.from_arrays([pa.array(pngs, pa.binary()), pa.array(paths, pa.string())],
                                       names=["bytes", "path"])
    table = meta.append_column("image", image)
    info = {"info": {"features": hf_features(table.schema)}}
    table = table.replace_schema_metadata({b"huggingface": json.dumps(info).encode()})
    rejected = json.loads(row["rejected"])
    rejects.write_rejected(root, STAGE, row["shard"],
                           {"image_id": rejected, "reason": ["render: yaw is not a finite number"] * len(rejected)})
    tables.write_parquet(storage.join(out_dir, f"{row['shard']}.parquet"), table)
    return {"shard": row["shard"], "renders": n, "rejected": len(rejected),
            "write_s": round(time.time() - started, 3), "busy": row.get("busy", "{}")}


# ---------------------------------------------------------------------------
# The stage


def plan_shards(config: RenderConfig, files: list[str]) -> list[dict[str, Any]]:
    """One item per latents file that holds sources to render: the first `limit` sources of
    the split in file order (files sorted by name), so shards are deterministic."""
    left = config.limit
    items = []
    for uri in files:
        if left is not None and left <= 0:
            break
        part = tables.read_parquet(uri, columns=["partition"]).column("partition").to_numpy()
        n = int(len(part) if config.split == "all" else (part == SPLITS[config.split]).sum())
        take = n if left is None else min(n, left)
        if take > 0:
            name = uri.rsplit("/", 1)[-1][: -len(".parquet")]
            items.append({"shard": name, "latents_uri": uri, "take": take})
        if left is not None:
            left -= take
    return items


def _fingerprint(config: RenderConfig, files: list[str]) -> str:
    layout = RunLayout(config.root)
    return runs.fingerprint({
        "latents": runs.hash_uris([storage.join(layout.latents, storage.SUCCESS)]),
        "files": [f.rsplit("/", 1)[-1] for f in files],
        "trajectories": runs.hash_uris([storage.join(layout.trajectories, storage.SUCCESS)]),
        "samples": runs.hash_uris([storage.join(layout.samples, storage.SUCCESS)]),
        "generator": runs.hash_uris([config.generator_uri()]),
        **({"yaw_generator": runs.hash_uris([config.yaw_generator_uri()])} if config.has_yaw_methods() else {}),
        # `data` is covered by the latents' fingerprint (the embed stage's covers its data).
        "config": {k: v for k, v in to_mapping(config).items()
                   if k not in ("root", "batch_size", "max_actors", "generator", "yaw_generator", "data",
                                "sheet_sources", "compile")},
    })


@locked(lambda config: config.root, STAGE)  # one writer per run root (headrot/lock.py)
def run_render(config: RenderConfig) -> dict[str, Any]:
    """Render (or resume, or skip when complete) the rotated dataset; returns its summary."""
    layout, out_dir = RunLayout(config.root), config.out_dir()
    # Every latents file the embed stage made, checked against its _SUCCESS (runs.stage_files).
    files = runs.stage_files(layout.latents, STAGE, "embed", rows_key="written")
    fit_summary = storage.completion(layout.trajectories)
    if fit_summary is None:
        raise ValueError(f"{runs.redact_uri(layout.trajectories)} is not complete: run `headrot fit` first")
    if not storage.exists(config.generator_uri()):
        raise ValueError(f"generator checkpoint {runs.redact_uri(config.generator_uri())} not found: "
                         "train one with `headrot train generator` or pass --generator")
    if config.has_yaw_methods() and not storage.exists(config.yaw_generator_uri()):
        raise ValueError(f"yaw-conditioned generator {runs.redact_uri(config.yaw_generator_uri())} not found: the yaw "
                         "methods need one (render.yaw_generator; README, Models)")
    items = plan_shards(config, files)
    todo = sharding.pending(out_dir, [i["shard"] for i in items])
    # A render into another folder is a stage of its own in run.json.
    name = STAGE if config.out is None else f"{STAGE}@{runs.redact_uri(config.out)}"
    stage = Stage(name, config.root, out_dir, _fingerprint(config, files), to_mapping(config),
                  "renders", "renders", pending=todo)
    return run_stage(stage, lambda: _render_all(config, items, set(todo)))


def _render_all(config: RenderConfig, items: list[dict[str, Any]], todo: set[str]) -> dict[str, Any]:
    """The work: the model actor pool over the missing shards, the contact sheets; the summary."""
    import ray

    started = time.time()
    per_source = len(config.methods) * len(config.deltas)
    log.info("render: %d shards, %d to do (%d renders each source)", len(items), len(todo), per_source)
    summaries = []
    work = [i for i in items if i["shard"] in todo]
    if work:
        plan = sharding.plan_pool(config.max_actors)
        ds = ray.data.from_items(work, override_num_blocks=len(work))
        ds = plan.map_batches(ds, RenderShards, batch_size=1, fn_constructor_kwargs={
            "config": config, "torch_threads": plan.torch_threads})
        ds = ds.map(write_shard, fn_kwargs={"root": config.root, "out_dir": config.out_dir(), "fmt": config.format},
                    num_cpus=0.25)
        progress = sharding.Progress("render", len(work), sum(i["take"] for i in work) * per_source)
        for summary in ds.iter_rows():
            summaries.append(summary)
            progress.update(1, int(summary["renders"]))
    render_s = time.time() - started
    sheets = write_contact_sheets(config, items)
    # The stage's own accounting: every planned shard's file, by name (never a listing).
    renders = sum(tables.count_rows(storage.join(config.out_dir(), f"{item['shard']}.parquet")) for item in items)
    n_new = sum(int(s["renders"]) for s in summaries)
    return {
        "shards": len(items),
        "shards_this_run": len(summaries),
        "sources": sum(i["take"] for i in items),
        "renders": renders,
        "renders_this_run": n_new,
        "rejected_this_run": sum(int(s["rejected"]) for s in summaries),
        "renders_per_s": round(n_new / render_s, 2) if summaries and render_s > 0 else None,
        "model_busy_fraction": sharding.busy_fraction(s["busy"] for s in summaries),
        "methods": list(config.methods),
        "deltas": list(config.deltas),
        "decodes_per_render": calls_per_render(config),
        "contact_sheets": sheets,
        "seconds": round(time.time() - started, 1),
    }


# ---------------------------------------------------------------------------
# Contact sheets


def write_contact_sheets(config: RenderConfig, items: list[dict[str, Any]]) -> list[str]:
    """report/contact_sheet_<method>.png: up to `sheet_sources` sources per light class, one row
    each, columns = deltas; the first column is the source image itself when render.data is
    known, else its reconstruction G(z) (the plain generator's delta-0 render; decoded here when 0
    is not among the deltas)."""
    from PIL import Image

    from headrot.report.contact_sheet import contact_sheet

    out_dir = config.out_dir()
    chosen: dict[str, list[str]] = {}
    renders: dict[tuple[str, str, int], np.ndarray] = {}
    light_of: dict[str, str] = {}
    for item in items:
        if all(len(v) >= config.sheet_sources for v in chosen.values()) and len(chosen) >= 3:
            break
        table = tables.read_parquet(storage.join(out_dir, f"{item['shard']}.parquet"),
                                    columns=["source_id", "light", "method", "delta", "image"])
        ids = table.column("source_id").to_pylist()
        lights = table.column("light").to_pylist()
        new = set()
        for sid, light in zip(ids, lights):
            if sid in light_of or sid in new:
                continue
            if len(chosen.setdefault(light, [])) < config.sheet_sources:
                chosen[light].append(sid)
                light_of[sid] = light
                new.add(sid)
        if not new:
            continue
        images = table.column("image").combine_chunks().field("bytes").to_pylist()
        for sid, m, d, data in zip(ids, table.column("method").to_pylist(),
                                   table.column("delta").to_pylist(), images):
            if sid in new:
                renders[(sid, m, d)] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    if not light_of:
        return []
    order = [sid for light in sorted(chosen) for sid in chosen[light]]
    if config.data:
        size = next(iter(renders.values())).shape[0]
        sources = dict(zip(order, read_source_images(config.data, order, size)))
    else:
        sources = _source_images(config, items, order, renders)
    deltas = sorted(config.deltas)
    written = []
    for method in config.methods:
        rows = [(sources[sid], [renders[(sid, method, d)] for d in deltas]) for sid in order]
        labels = [f"{light_of[sid]} {sid.rsplit('.', 1)[0]}" for sid in order]
        sheet = contact_sheet(rows, [f"{d:+d}" for d in deltas], labels,
                              source_label="source" if config.data else "G(z)")
        buf = io.BytesIO()
        sheet.save(buf, format="PNG")
        uri = RunLayout(config.root).report_file(f"contact_sheet_{method}.png")
        storage.write_bytes(uri, buf.getvalue())
        written.append(runs.redact_uri(uri))
    return written


def _source_images(config, items, order, renders) -> dict[str, np.ndarray]:
    """G(z) of the sheet's sources: a plain latent method's delta-0 render, else decoded here."""
    plain = [m for m in config.methods if (v := parse_variant(m)) is None or v.source != YAW]
    if 0 in config.deltas and plain:
        return {sid: renders[(sid, plain[0], 0)] for sid in order}
    import torch

    from headrot.model.checkpoint import load_model
    from headrot.model.sampler import reverse_diffusion
    from headrot.report.grid import to_uint8

    model, _, _ = load_model(config.generator_uri(), "generator")
    wanted, out = set(order), {}
    for item in items:
        table = tables.read_parquet(item["latents_uri"], columns=["image_id", "latent"])
        ids = table.column("image_id").to_pylist()
        rows = [i for i, sid in enumerate(ids) if sid in wanted]
        if rows:
            z = tables.tensor_to_numpy(table.take(pa.array(rows)).column("latent")).astype(np.float32)
            with torch.inference_mode():
                images = to_uint8(reverse_diffusion(model, torch.from_numpy(z), steps=config.steps))
            out.update({ids[i]: images[k] for k, i in enumerate(rows)})
        if len(out) == len(wanted):
            break
    return out
