"""Stage 3, render: latents + trajectories -> rotated/part-NNNNN.parquet (the augmented dataset).

    shards (driver: one Ray Data row per latents file, latents/part-N -> rotated/part-N)
    -> RenderShards (model actor pool, batch_size=1): move every source latent along its
       trajectory for every (method, delta), decode with the 10-step DDIM, uint8 images
    -> write_shard (CPU task): PNG-encode, write the shard's Parquet (and PNGs with --format png)
    -> contact sheets (driver) -> rotated/_SUCCESS last.

Methods (how z moves; see headrot.trajectories and headrot.directions):
    headrot           the paper's: light-conditioned two-sided lines of the source's own group
                      (embeddings source), with fallback
    light_agnostic    the same without light (the paper's first attempts)
    single_direction  one line over both sides, light-conditioned groups
    centroid_path     z + c(target) - c(source) through the group's bin centroids
    no_move           z itself (the reconstruction: what the embedding alone gives)
    <source>[-ortho][-norm][-cal]   the ablation grid of the two-sided move: source
                      embeddings (the paper's lines; `embeddings` alone is `headrot`), samples
                      (the generator's own, light-conditioned lines) or local (each face's own
                      step from the generator's Jacobian, headrot.local_directions, followed in
                      legs of `local_segment` degrees); -ortho: the step off the nuisance
                      directions; -norm: the moved latent rescaled to the source's norm;
                      -cal: per face, the step scaled until the samples stage's labeller reads
                      the requested yaw change (`calibration_rounds` decodes per render)

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
from headrot import trajectories as tr
from headrot.config import to_mapping
from headrot.lock import locked
from headrot.stages import sharding
from headrot.stages.fit import FILE as TRAJECTORIES_FILE
from headrot.stages.fit import ORTHO, SOURCES, SPLITS, TRAJECTORIES

log = logging.getLogger(__name__)

STAGE = "render"
LATENTS = "latents"
ROTATED = "rotated"
METHODS = ("headrot", "no_move", "light_agnostic", "single_direction", "centroid_path")
VARIANT_FLAGS = ("ortho", "norm", "cal")
LOCAL = "local"  # the render-time source: no fit rows, a step per face (headrot.local_directions)
# The trajectory rows each method reads: (mode, sides).
METHOD_MODE = {
    "headrot": "light_conditioned",
    "light_agnostic": "light_agnostic",
    "single_direction": "single_direction",
    "centroid_path": "single_direction",  # its rows carry every bin's centroid of the group
}
# Source labels copied to every render (besides the attribute columns).
LABELS = ("partition", "identity", "yaw", "light")


# ---------------------------------------------------------------------------
# Methods of the ablation grid


@dataclass(frozen=True)
class Variant:
    """A light-conditioned two-sided move: which lines, and what is done to the step."""

    source: str             # embeddings | samples: whose latents the lines were fitted on; local: per face
    ortho: bool = False     # the step projected off the nuisance directions (fit rows <source>_ortho)
    norm: bool = False      # the moved latent rescaled to the source latent's norm
    cal: bool = False       # the step scaled per face until the labeller reads the requested change

    @property
    def lines(self) -> str:
        """The trajectories' `source` value whose rows this variant moves along."""
        return self.source + (ORTHO if self.ortho else "")


def parse_variant(method: str) -> Variant | None:
    """`headrot` and `<source>[-ortho][-norm][-cal]` (flags in that order) -> Variant; None otherwise."""
    if method == "headrot":
        return Variant("embeddings")
    source, *flags = method.split("-")
    if source not in (*SOURCES, LOCAL) or flags != [f for f in VARIANT_FLAGS if f in flags]:
        return None
    return Variant(source, "ortho" in flags, "norm" in flags, "cal" in flags)


def place(z: np.ndarray, moved: np.ndarray, scale, norm: bool) -> np.ndarray:
    """z + scale * (moved - z), rescaled to z's norm when `norm` (rows: scale is [N] or a number)."""
    scale = np.asarray(scale, dtype=np.float64).reshape(-1, *([1] * (z.ndim - 1)))
    out = z + scale * (moved - z)
    return D.keep_norm(out, z) if norm else out


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
    batch_size: int = 64                                          # renders per network call
    steps: int = 10                                               # DDIM steps (the paper's 10)
    max_actors: int | None = None                                 # model actors (default: one per GPU, else 1)
    sheet_sources: int = 8                                        # contact-sheet rows per light class
    precision: Literal["auto", "fp32", "bf16"] = "auto"           # auto: bf16 autocast on GPUs, fp32 on CPU
    compile: bool = False                                         # torch.compile the generator (CUDA graphs on GPU)
    calibration_rounds: int = 3                                   # -cal methods: decodes (labeller reads) per render
    max_drift: float | None = 0.05                                # -cal and local: refuse renders whose colours drift
                                                                  # more (directions.drift); None: no guard
    local_lowpass: int = 8                                        # local: blocks per side of the step's subspace
    local_segment: float = 10.0                                   # local: re-linearise every this many degrees (0: once)
    local_jacobian_steps: int | None = None                       # local: DDIM steps inside the Jacobian (None: steps)

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS and parse_variant(m) is None]
        if bad or not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"render: methods {list(self.methods)}: use distinct ones of {list(METHODS)} or "
                             f"<source>[-ortho][-norm][-cal] with a source of {[*SOURCES, LOCAL]}")
        if self.local_segment < 0:
            raise ValueError("render: local_segment must be >= 0 (0: one linearisation at the source)")
        if self.calibration_rounds < 1:
            raise ValueError("render: calibration_rounds must be >= 1")
        if self.max_drift is not None and self.max_drift <= 0:
            raise ValueError("render: max_drift must be > 0 (or null: no guard)")
        if not self.deltas or len(set(self.deltas)) != len(self.deltas):
            raise ValueError(f"render: deltas {list(self.deltas)} must be distinct and non-empty")
        if any(abs(d) > 180 for d in self.deltas):
            raise ValueError(f"render: deltas {list(self.deltas)} must lie in [-180, 180] degrees")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"render: limit must be >= 1, got {self.limit}")
        if self.batch_size < 1 or self.steps < 1:
            raise ValueError("render: batch_size and steps must be >= 1")

    def out_dir(self) -> str:
        return self.out or storage.join(self.root, ROTATED)

    def generator_uri(self) -> str:
        return self.generator or storage.join(self.root, "checkpoints", "generator", "model.pt")

    def trajectories_uri(self) -> str:
        return storage.join(self.root, TRAJECTORIES, TRAJECTORIES_FILE)

    def labeller_uri(self) -> str:
        from headrot.stages.samples import LABELLER

        return storage.join(self.root, *LABELLER)


# ---------------------------------------------------------------------------
# Trajectory lookup (pure: the actor and the tests use it)


class TrajectoryIndex:
    """The trajectories table, indexed by (mode, light, key, side), with the fallback walk.

    `resolve` starts at the source's own group and walks its chain to the first group the
    fit produced (a group absent from the fit data); that row's own fallback continues
    the same chain, so the two compose into the fallback relative to the source."""

    def __init__(self, table: pa.Table, attributes: tuple[str, ...]):
        self.attributes = tuple(attributes)
        cols = table.select(["mode", "light", "key", "side", "fallback", "served_by"]).to_pylist()
        # Tables written before direction sources existed hold the paper's lines only.
        sources = table.column("source").to_pylist() if "source" in table.column_names else ["embeddings"] * len(cols)
        self.rows = {(src, r["mode"], r["light"], r["key"], r["side"]): i
                     for i, (src, r) in enumerate(zip(sources, cols))}
        self.sources = set(sources)
        self.meta = cols
        self.slopes = tables.tensor_to_numpy(table.column("slope")).astype(np.float64)
        self.centroids = tables.tensor_to_numpy(table.column("centroids")).astype(np.float64)
        bins = table.column("bins").to_pylist()
        self.mean_yaws = [np.array([b["mean_yaw"] for b in row if b["count"] > 0], np.float64) for row in bins]
        self.populated = [np.array([b["count"] > 0 for b in row], bool) for row in bins]

    def resolve(self, mode: str, side: str, light: str, values: tuple[bool, ...],
                source: str = "embeddings") -> tuple[int, str, str]:
        """(row, fallback relative to the source's group, trajectory key)."""
        if source not in self.sources:
            raise ValueError(f"trajectories hold no {source!r} lines: fit with sources including "
                             f"{source.removesuffix(ORTHO)!r} (fit.sources; samples need `headrot samples` first)")
        levels = tr.chain(mode, light, values, self.attributes)
        dropped: list[str] = []
        prefix = "" if source == "embeddings" else f"{source}:"
        for group, drop in levels:
            i = self.rows.get((source, mode, group[0], group[1], side))
            if i is not None:
                own = self.meta[i]["fallback"]
                more = own[len("drop:"):].split(",") if own.startswith("drop:") else []
                return i, tr.fallback_name(dropped + more), f"{prefix}{mode}/{self.meta[i]['served_by']}"
            if drop:
                dropped.append(drop)
        raise ValueError(f"trajectories hold no {source} {mode} row for side {side} at any level "
                         "(not even any|''): refit")

    def moved(self, method: str, z: np.ndarray, yaw: np.ndarray, target: np.ndarray,
              lights: list[str], values: np.ndarray) -> tuple[np.ndarray, list[str], list[str]]:
        """z' for every source (z [N,3,S,S] float64) and each source's (fallback, trajectory key).
        For a Variant this is the plain move along its lines: `place` scales and renormalises it."""
        if method == "no_move":
            n = len(z)
            return tr.no_move(z), ["none"] * n, ["none"] * n
        variant = parse_variant(method)
        mode = METHOD_MODE.get(method, "light_conditioned")
        lines = variant.lines if variant is not None else "embeddings"
        out = np.empty_like(z)
        fallbacks, keys = [], []
        for j in range(len(z)):
            v = tuple(bool(x) for x in values[j])
            if variant is not None or method == "light_agnostic":
                il, fl, kl = self.resolve(mode, "left", lights[j], v, lines)
                ir, fr, kr = self.resolve(mode, "right", lights[j], v, lines)
                out[j] = tr.move(z[j], yaw[j], target[j], self.slopes[il], self.slopes[ir])
                # Both sides' fallbacks: a move within one side uses only one line, but
                # which side(s) it used depends on the delta; record both when they differ.
                fallbacks.append(fl if fl == fr else f"left:{fl};right:{fr}")
                keys.append(kl if kl == kr else f"{kl};{kr}")
            else:
                i, f, k = self.resolve(mode, "both", lights[j], v)
                if method == "single_direction":
                    out[j] = tr.move(z[j], yaw[j], target[j], self.slopes[i], self.slopes[i])
                else:
                    cents = self.centroids[i][self.populated[i]]
                    out[j] = tr.centroid_path(z[j], yaw[j], target[j], self.mean_yaws[i], cents)
                    k = k.replace("single_direction/", "centroid_path/", 1)
                fallbacks.append(f)
                keys.append(k)
        return out, fallbacks, keys


def labeller_key(root: str) -> dict | None:
    """The PoseConfig key of the labeller the samples stage trained (None: no samples stage)."""
    from headrot.stages.samples import SAMPLES

    done = storage.completion(storage.join(root, SAMPLES))
    return None if done is None else done.get("labeller")


def calls_per_render(config: RenderConfig) -> dict[str, float]:
    """Generator decodes per output render, per method (1 for a plain move): the cost of
    calibration and of local steps. A -cal method decodes every nonzero delta
    `calibration_rounds` times and shares one G(z). A local method computes a Jacobian where its
    legs say so (local_directions.JACOBIAN_DECODES each) and decodes each leg `rounds` times."""
    from headrot.local_directions import JACOBIAN_DECODES, plan_legs

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
                jacobians += sum(1 for _, _, fresh in plan if fresh)
            # A Jacobian through fewer DDIM steps costs that much less.
            share = (config.local_jacobian_steps or config.steps) / config.steps
            out[m] = round((jacobians * JACOBIAN_DECODES * share + legs * rounds + 1) / n_d, 3)
        elif v is not None and v.cal:
            nonzero = sum(1 for d in config.deltas if d != 0)
            out[m] = round((nonzero * rounds + 1) / n_d, 3)
        else:
            out[m] = 1.0
    return out


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
    once; renders one shard per call. Callable without Ray: RenderShards(config, ...)(batch)."""

    def __init__(self, config: RenderConfig, fit_attributes: tuple[str, ...], labeller_key: dict | None,
                 torch_threads: int):
        self.config = config
        self.acc, self.model, self.model_config, self.batch_size = sharding.generator_actor(
            config.generator_uri(), config.precision, config.compile, torch_threads, config.batch_size)
        self.device = self.acc.device
        self.index = TrajectoryIndex(tables.read_parquet(config.trajectories_uri()), fit_attributes)
        self.methods, self.deltas, self.split = tuple(config.methods), tuple(config.deltas), config.split
        self.variants = {m: parse_variant(m) for m in self.methods}
        self.labeller = None
        if any(v is not None and (v.cal or v.source == LOCAL) for v in self.variants.values()):
            from headrot.stages.samples import load_labeller

            if not labeller_key:
                raise ValueError("render: -cal and local methods need the samples stage's labeller: run "
                                 "`headrot samples` and fit with sources [embeddings, samples]")
            self.labeller = load_labeller(config.labeller_uri(), labeller_key)
        self.steps = config.steps
        self.actor = sharding.actor_name()
        self.calls = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        self.calls += 1
        sharding.fault_point(self.calls, STAGE)  # tests only (HEADROT_FAULT); a no-op otherwise
        with torch.inference_mode():
            return self._render(str(batch["latents_uri"][0]), int(batch["take"][0]), batch["shard"])

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """uint8 [N,S,S,3] renders of latents [N,3,S,S], in batches of the actor's size."""
        from headrot.model.sampler import reverse_diffusion
        from headrot.report.grid import to_uint8

        size = self.model_config.image_size
        out = np.zeros((len(latents), size, size, 3), np.uint8)
        for s in range(0, len(latents), self.batch_size):
            with self.acc.busy.timing(), self.acc.autocast():
                x = self.acc.to_device(np.ascontiguousarray(latents[s:s + self.batch_size], np.float32))
                out[s:s + self.batch_size] = to_uint8(reverse_diffusion(self.model, x, steps=self.steps))
        return out

    def drift_guard(self, base: np.ndarray, repeats: int = 1):
        """images [repeats*N] -> valid [repeats*N]: colour drift from the unmoved renders `base`
        [N] within max_drift (None when the guard is off)."""
        if self.config.max_drift is None:
            return None
        from headrot.labels.nuisance import image_statistics

        ref = np.concatenate([image_statistics(base)] * repeats)
        return lambda images: D.drift(image_statistics(images), ref) <= self.config.max_drift

    def calibrated(self, z: np.ndarray, moves: list[np.ndarray], norm: bool,
                   base: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Per delta, the renders of each source with its step scaled until the labeller reads
        the requested yaw change from `base` (the unmoved renders); every round's decode is kept,
        so the chosen round's images are the output. (images per delta, scales [D,N], read [D,N])."""
        n, n_d = len(z), len(self.deltas)
        nonzero = [d for d, delta in enumerate(self.deltas) if delta != 0]
        y0 = self.labeller.predict(base)
        z_rep = np.concatenate([z] * len(nonzero)) if nonzero else z[:0]
        m_rep = np.concatenate([moves[d] for d in nonzero]) if nonzero else z[:0]
        wanted = np.repeat(np.asarray([self.deltas[d] for d in nonzero], np.float64), n)
        rounds: list[np.ndarray] = []

        valid_of = self.drift_guard(base, len(nonzero))

        def achieved_at(scale: np.ndarray):
            rounds.append(self.decode(place(z_rep, m_rep, scale, norm)))
            reading = self.labeller.predict(rounds[-1]) - np.tile(y0, len(nonzero))
            return reading if valid_of is None else (reading, valid_of(rounds[-1]))

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

    def local(self, z: np.ndarray, variant: Variant, base: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Per delta, each face moved along its own conditional step (headrot.local_directions),
        each side's deltas reached in legs of `local_segment` degrees; uncalibrated: one decode
        per leg at the first-order length. (images per delta, multipliers [D,N], reads [D,N])."""
        import torch

        from headrot import local_directions as L
        from headrot.model.sampler import reverse_diffusion

        y0 = self.labeller.predict(base)
        read = L.readings(self.labeller, self.model_config.image_size)

        def render(x):
            with self.acc.busy.timing():
                return reverse_diffusion(self.model, x.to(self.device),
                                         steps=self.config.local_jacobian_steps or self.steps).float().cpu()

        def step_at(latents):
            with torch.inference_mode(False):
                jac = L.jacobian(render, read, latents, self.config.local_lowpass)
            return L.conditional_steps(jac, variant.ortho)

        def decode_read(latents):
            images = self.decode(latents)
            return images, self.labeller.predict(images) - y0

        n = len(z)
        images, scales, reads = [base] * len(self.deltas), np.ones((len(self.deltas), n)), np.zeros((len(self.deltas), n))
        rounds = self.config.calibration_rounds if variant.cal else 1
        for sign in (-1, 1):
            wanted = [d for d in self.deltas if d * sign > 0]
            if not wanted:
                continue
            got = L.follow(z, base, wanted, step_at, decode_read, self.config.local_segment, rounds, variant.norm,
                           self.drift_guard(base))
            for d, delta in enumerate(self.deltas):
                if float(delta) in got:
                    images[d], reads[d], scales[d] = got[float(delta)]
        return images, scales, reads

    def _render(self, latents_uri: str, take: int, shard) -> dict[str, np.ndarray]:
        table = tables.read_parquet(latents_uri)
        table = select_sources(table.drop_columns([c for c in ("landmarks",) if c in table.column_names]),
                               self.split, take)
        yaw = table.column("yaw").to_numpy(zero_copy_only=False).astype(np.float64)
        good = np.isfinite(yaw)
        rejected = table.column("image_id").filter(pa.array(~good)).to_pylist()
        table = table.filter(pa.array(good))
        yaw = yaw[good]
        n, size = table.num_rows, self.model_config.image_size
        z = tables.tensor_to_numpy(table.column("latent")).astype(np.float64) if n else np.zeros((0, 3, size, size))
        if z.shape[1:] != (3, size, size):
            raise ValueError(f"{latents_uri}: latents of shape {z.shape[1:]} do not fit the generator "
                             f"({size}x{size}); render with the generator the latents were embedded with")
        lights = table.column("light").to_pylist()
        values = np.stack([table.column(a).to_numpy(zero_copy_only=False) for a in self.index.attributes], 1) \
            if self.index.attributes else np.zeros((n, 0), bool)
        n_m, n_d = len(self.methods), len(self.deltas)
        total = n * n_m * n_d
        images = np.zeros((total, size, size, 3), np.uint8)
        # Render i of source j, method m, delta d sits at j*M*D + m*D + d: rows grouped by source.
        src_idx = np.repeat(np.arange(n), n_m * n_d)
        meth_idx = np.tile(np.repeat(np.arange(n_m), n_d), n)
        delta_idx = np.tile(np.arange(n_d), n * n_m)
        fallback = np.empty(total, dtype=object)
        traj_key = np.empty(total, dtype=object)
        step_scale = np.ones(total, np.float32)
        labeller_read = np.full(total, np.nan, np.float32)
        # Uncalibrated moves are decoded in one pass; calibrated ones after, round by round.
        plain_pos, plain_z, calibrate_later = [], [], []
        local_later = []
        for m, method in enumerate(self.methods):
            variant = self.variants[method]
            if variant is not None and variant.source == LOCAL:
                for d in range(n_d):
                    pos = np.arange(n) * n_m * n_d + m * n_d + d
                    fallback[pos], traj_key[pos] = "none", LOCAL
                local_later.append((m, variant))
                continue
            moves = []
            for d, delta in enumerate(self.deltas):
                moved, fbs, keys = self.index.moved(method, z, yaw, yaw + delta, lights, values)
                pos = np.arange(n) * n_m * n_d + m * n_d + d
                fallback[pos] = fbs
                traj_key[pos] = keys
                moves.append(moved)
                if variant is None or not variant.cal:
                    plain_pos.append(pos)
                    plain_z.append(place(z, moved, 1.0, variant is not None and variant.norm))
            if variant is not None and variant.cal:
                calibrate_later.append((m, variant, moves))
        if plain_pos:
            images[np.concatenate(plain_pos)] = self.decode(np.concatenate(plain_z))
        if (calibrate_later or local_later) and n:
            base = self.decode(z)  # G(z): every method's delta-0 render, and the labeller's zero
            for m, variant in local_later:
                out, scales, read = self.local(z, variant, base)
                for d in range(n_d):
                    pos = np.arange(n) * n_m * n_d + m * n_d + d
                    images[pos], step_scale[pos], labeller_read[pos] = out[d], scales[d], read[d]
            for m, variant, moves in calibrate_later:
                out, scales, read = self.calibrated(z, moves, variant.norm, base)
                for d in range(n_d):
                    pos = np.arange(n) * n_m * n_d + m * n_d + d
                    images[pos], step_scale[pos], labeller_read[pos] = out[d], scales[d], read[d]
        labels = table.select(["image_id", *LABELS, *[c for c in attribute_columns(table.schema)]])
        meta = labels.take(pa.array(src_idx, pa.int64())).rename_columns(
            ["source_id", *labels.column_names[1:]])
        deltas = np.asarray(self.deltas, np.int16)[delta_idx]
        meta = meta.add_column(1, "delta", pa.array(deltas, pa.int16()))
        meta = meta.add_column(2, "target_yaw", pa.array((yaw[src_idx] + deltas).astype(np.float32), pa.float32()))
        meta = meta.add_column(3, "method", pa.array([self.methods[i] for i in meth_idx], pa.string()))
        meta = meta.add_column(4, "trajectory_key", pa.array(traj_key.tolist(), pa.string()))
        meta = meta.add_column(5, "fallback", pa.array(fallback.tolist(), pa.string()))
        # Calibration: the step's multiplier, and the yaw change the method's labeller read (-cal only).
        meta = meta.append_column("step_scale", pa.array(step_scale, pa.float32()))
        meta = meta.append_column("labeller_yaw_change", pa.array(labeller_read, pa.float32()))
        return {
            "shard": shard,
            "n": np.array([total]),
            "size": np.array([size]),
            "images": np.array([images.tobytes()], dtype=object),
            "meta": np.array([tables.to_ipc(meta)], dtype=object),
            "rejected": np.array([json.dumps(rejected)], dtype=object),
            # The actor's running totals (model time, wall time): the stage's busy fraction.
            "busy": np.array([json.dumps({"actor": self.actor, **self.acc.busy.snapshot()})], dtype=object),
        }


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
    root = config.root
    return runs.fingerprint({
        "latents": runs.hash_uris([storage.join(root, LATENTS, storage.SUCCESS)]),
        "files": [f.rsplit("/", 1)[-1] for f in files],
        "trajectories": runs.hash_uris([storage.join(root, TRAJECTORIES, storage.SUCCESS)]),
        "samples": runs.hash_uris([storage.join(root, "samples", storage.SUCCESS)]),
        "generator": runs.hash_uris([config.generator_uri()]),
        "config": {k: v for k, v in to_mapping(config).items()
                   if k not in ("root", "batch_size", "max_actors", "generator", "sheet_sources", "compile")},
    })


@locked(lambda config: config.root, STAGE)  # one writer per run root (headrot/lock.py)
def run_render(config: RenderConfig) -> dict[str, Any]:
    """Render (or resume, or skip when complete) the rotated dataset; returns its summary."""
    import ray

    started = time.time()
    root, out_dir = config.root, config.out_dir()
    latents_dir = storage.join(root, LATENTS)
    traj_dir = storage.join(root, TRAJECTORIES)
    # Every latents file the embed stage made, checked against its _SUCCESS (runs.stage_files).
    files = runs.stage_files(latents_dir, STAGE, "embed", rows_key="written")
    fit_summary = storage.completion(traj_dir)
    if fit_summary is None:
        raise ValueError(f"{runs.redact_uri(traj_dir)} is not complete: run `headrot fit` first")
    if not storage.exists(config.generator_uri()):
        raise ValueError(f"generator checkpoint {runs.redact_uri(config.generator_uri())} not found: "
                         "train one with `headrot train generator` or pass --generator")
    digest = _fingerprint(config, files)
    stage_key = STAGE if config.out is None else f"{STAGE}@{runs.redact_uri(config.out)}"
    runs.claim_stage(root, stage_key, digest, to_mapping(config), out_dir)

    items = plan_shards(config, files)
    per_source = len(config.methods) * len(config.deltas)
    todo = set(sharding.pending(out_dir, [i["shard"] for i in items]))
    skipped = None if todo else runs.completed(STAGE, out_dir, digest, "renders", "renders")
    if skipped is not None:
        return skipped
    log.info("render: %d shards, %d to do (%d renders each source)", len(items), len(todo), per_source)

    summaries = []
    work = [i for i in items if i["shard"] in todo]
    if work:
        plan = sharding.plan_pool(config.max_actors)
        ds = ray.data.from_items(work, override_num_blocks=len(work))
        ds = plan.map_batches(
            ds, RenderShards, batch_size=1,
            fn_constructor_kwargs={"config": config, "fit_attributes": tuple(fit_summary.get("attributes", ())),
                                   "labeller_key": labeller_key(root), "torch_threads": plan.torch_threads},
        )
        ds = ds.map(write_shard, fn_kwargs={"root": root, "out_dir": out_dir, "fmt": config.format},
                    num_cpus=0.25)
        progress = sharding.Progress("render", len(work), sum(i["take"] for i in work) * per_source)
        for summary in ds.iter_rows():
            summaries.append(summary)
            progress.update(1, int(summary["renders"]))
    render_s = time.time() - started

    sheets = write_contact_sheets(config, items)
    # The stage's own accounting: every planned shard's file, by name (never a listing).
    renders = sum(tables.count_rows(storage.join(out_dir, f"{item['shard']}.parquet")) for item in items)
    n_new = sum(int(s["renders"]) for s in summaries)
    summary = {
        "fingerprint": digest,
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
    storage.mark_complete(out_dir, summary)
    log.info("render: done: %s", json.dumps({k: v for k, v in summary.items() if k != "fingerprint"}))
    return summary


# ---------------------------------------------------------------------------
# Contact sheets


def write_contact_sheets(config: RenderConfig, items: list[dict[str, Any]]) -> list[str]:
    """report/contact_sheet_<method>.png: up to `sheet_sources` sources per light class, one row
    each, columns = deltas; the first column is the source's reconstruction G(z) (the delta-0
    render, which equals it for every method; decoded here when 0 is not among the deltas)."""
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
    sources = _source_images(config, items, order, renders)
    deltas = sorted(config.deltas)
    written = []
    for method in config.methods:
        rows = [(sources[sid], [renders[(sid, method, d)] for d in deltas]) for sid in order]
        labels = [f"{light_of[sid]} {sid.rsplit('.', 1)[0]}" for sid in order]
        sheet = contact_sheet(rows, [f"{d:+d}" for d in deltas], labels)
        buf = io.BytesIO()
        sheet.save(buf, format="PNG")
        uri = storage.join(config.root, "report", f"contact_sheet_{method}.png")
        storage.write_bytes(uri, buf.getvalue())
        written.append(runs.redact_uri(uri))
    return written


def _source_images(config, items, order, renders) -> dict[str, np.ndarray]:
    if 0 in config.deltas:
        m = config.methods[0]
        return {sid: renders[(sid, m, 0)] for sid in order}
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
