"""How a source latent moves: the render stage's methods as a table of move functions.

    MOVES[name](index, z, yaw, target, lights, values) -> (z', fallbacks, trajectory keys)

Named methods (the paper's and the baselines):
    headrot           light-conditioned two-sided lines of the source's own group (the paper)
    light_agnostic    the same without light (the paper's first attempts)
    single_direction  one line over both sides, light-conditioned groups
    centroid_path     z + c(target) - c(source) through the group's bin centroids
    no_move           z itself (the reconstruction: what the embedding alone gives)
The ablation grid `<source>[-ortho][-norm][-cal][-colour]` (a Variant) moves two-sided along the
light-conditioned lines of `source` (`embeddings`, the paper's, alone is `headrot`); the
render stage then applies the variant's norm and calibration (`place`) and keeps the unmoved
render's colours (-colour: headrot.colour, before any calibration reading); `local` sources
have no fit rows: each face's own step comes from the generator (headrot.local_directions).
`yaw[-cal][-colour]` moves no latent at all: a yaw-conditioned generator inverts the source
under its yaw and draws it under yaw + delta (headrot.model.conditioning; -cal scales the
offset until the reader reads the change).

Pure: numpy over the trajectories table (TrajectoryIndex); the render actor and the tests
use it without Ray.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from headrot import directions as D
from headrot import tables
from headrot import trajectories as tr

SOURCES = ("embeddings", "samples")   # direction sources of the fit (fit.sources)
ORTHO = "_ortho"                      # the fit's rows of a source with the step off the nuisances
LOCAL = "local"                       # the render-time source: no fit rows, a step per face
YAW = "yaw"                           # the conditional generator's source: no move, another yaw
RENDER_TIME = (LOCAL, YAW)            # sources without fit rows
VARIANT_FLAGS = ("ortho", "norm", "cal", "colour")


# ---------------------------------------------------------------------------
# Variants of the ablation grid


@dataclass(frozen=True)
class Variant:
    """A light-conditioned two-sided move: which lines, and what is done to the step."""

    source: str             # embeddings | samples: whose latents the lines were fitted on; local: per face;
                            # yaw: the conditional generator's condition
    ortho: bool = False     # the step projected off the nuisance directions (fit rows <source>_ortho)
    norm: bool = False      # the moved latent rescaled to the source latent's norm
    cal: bool = False       # the step scaled per face until the reader (else the labeller) reads the requested change
    colour: bool = False    # each render mapped onto the unmoved render's colours (headrot.colour)

    @property
    def lines(self) -> str:
        """The trajectories' `source` value whose rows this variant moves along."""
        return self.source + (ORTHO if self.ortho else "")


def parse_variant(method: str) -> Variant | None:
    """`headrot` and `<source>[-ortho][-norm][-cal][-colour]` (flags in that order; `yaw` takes only
    -cal and -colour: it has no step to project or rescale) -> Variant; None otherwise."""
    if method == "headrot":
        return Variant("embeddings")
    source, *flags = method.split("-")
    if source not in (*SOURCES, *RENDER_TIME) or flags != [f for f in VARIANT_FLAGS if f in flags]:
        return None
    if source == YAW and {"ortho", "norm"} & set(flags):
        return None
    return Variant(source, *(f in flags for f in VARIANT_FLAGS))


def place(z: np.ndarray, moved: np.ndarray, scale, norm: bool) -> np.ndarray:
    """z + scale * (moved - z), rescaled to z's norm when `norm` (rows: scale is [N] or a number)."""
    scale = np.asarray(scale, dtype=np.float64).reshape(-1, *([1] * (z.ndim - 1)))
    out = z + scale * (moved - z)
    return D.keep_norm(out, z) if norm else out


# ---------------------------------------------------------------------------
# Trajectory lookup


class TrajectoryIndex:
    """The trajectories table, indexed by (source, mode, light, key, side), with the fallback walk.

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
                source: str = "embeddings", label: str | None = None) -> tuple[int, str, str]:
        """(row, fallback relative to the source's group, trajectory key `[source:]label/served_by`;
        label defaults to the mode)."""
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
                return i, tr.fallback_name(dropped + more), f"{prefix}{label or mode}/{self.meta[i]['served_by']}"
            if drop:
                dropped.append(drop)
        raise ValueError(f"trajectories hold no {source} {mode} row for side {side} at any level "
                         "(not even any|''): refit")


# ---------------------------------------------------------------------------
# The move functions

Moved = tuple[np.ndarray, list[str], list[str]]
Move = Callable[[TrajectoryIndex, np.ndarray, np.ndarray, np.ndarray, list[str], np.ndarray], Moved]


def _values(values: np.ndarray, j: int) -> tuple[bool, ...]:
    return tuple(bool(x) for x in values[j])


def no_move(index, z, yaw, target, lights, values) -> Moved:
    n = len(z)
    return tr.no_move(z), ["none"] * n, ["none"] * n


def two_sided(mode: str, lines: str = "embeddings") -> Move:
    """Along the left line for yaw <= 0 and the right one for yaw >= 0 (switching at 0)."""
    def move(index, z, yaw, target, lights, values) -> Moved:
        out, fallbacks, keys = np.empty_like(z), [], []
        for j in range(len(z)):
            il, fl, kl = index.resolve(mode, "left", lights[j], _values(values, j), lines)
            ir, fr, kr = index.resolve(mode, "right", lights[j], _values(values, j), lines)
            out[j] = tr.move(z[j], yaw[j], target[j], index.slopes[il], index.slopes[ir])
            # Both sides' fallbacks: a move within one side uses only one line, but which
            # side(s) it used depends on the delta; record both when they differ.
            fallbacks.append(fl if fl == fr else f"left:{fl};right:{fr}")
            keys.append(kl if kl == kr else f"{kl};{kr}")
        return out, fallbacks, keys
    return move


def single_direction(index, z, yaw, target, lights, values) -> Moved:
    out, fallbacks, keys = np.empty_like(z), [], []
    for j in range(len(z)):
        i, f, k = index.resolve("single_direction", "both", lights[j], _values(values, j))
        out[j] = tr.move(z[j], yaw[j], target[j], index.slopes[i], index.slopes[i])
        fallbacks.append(f)
        keys.append(k)
    return out, fallbacks, keys


def centroid_path(index, z, yaw, target, lights, values) -> Moved:
    """Through the bin centroids of the single-direction group (its rows carry every bin's centroid)."""
    out, fallbacks, keys = np.empty_like(z), [], []
    for j in range(len(z)):
        i, f, k = index.resolve("single_direction", "both", lights[j], _values(values, j), label="centroid_path")
        cents = index.centroids[i][index.populated[i]]
        out[j] = tr.centroid_path(z[j], yaw[j], target[j], index.mean_yaws[i], cents)
        fallbacks.append(f)
        keys.append(k)
    return out, fallbacks, keys


MOVES: dict[str, Move] = {
    "headrot": two_sided("light_conditioned"),
    "no_move": no_move,
    "light_agnostic": two_sided("light_agnostic"),
    "single_direction": single_direction,
    "centroid_path": centroid_path,
}
METHODS = tuple(MOVES)


def move_of(method: str) -> Move:
    """The move function of a named method or of a Variant (its plain move, before `place`)."""
    if method in MOVES:
        return MOVES[method]
    variant = parse_variant(method)
    if variant is None:
        raise ValueError(f"unknown method {method!r}: use one of {list(METHODS)}, "
                         f"<source>[-ortho][-norm][-cal][-colour] with a source of {[*SOURCES, LOCAL]}, "
                         f"or {YAW}[-cal][-colour]")
    return two_sided("light_conditioned", variant.lines)
