"""Trajectories in latent space: per-group yaw-bin centroids, lines through them, moves along them.

Pure maths in float64 (numpy only; no Ray, no I/O), so the stage code in
headrot/stages/fit.py and render.py stays wiring.

Glossary:
    group       (light, key): the images that share a light class ("any" when light is
                ignored) and the values of some key attributes (key "Male=1,Eyeglasses=0";
                "" for none).
    bin         a yaw interval [lo, hi) of the bin edges (the last bin is closed [lo, hi]).
    centroid    the mean latent of a group's images in one bin; its yaw is the bin's mean yaw.
    line        centroid ~= intercept + slope * yaw, fitted by weighted least squares
                over a side's populated bins (weights = image counts).
    side        left: bins that hold some yaw < 0 (lo < 0); right: bins that hold some
                yaw > 0 (hi > 0). A bin straddling 0 (lo < 0 < hi, e.g. [-5, 5)) serves
                both sides; a bin with an edge at 0 serves only its own side. Defined from
                the edges rather than the bin's mean yaw, so which bins a side uses never
                depends on the data.

Reduction: `reduce_rows` turns any set of rows into a `Partial` of sums and counts at
the finest grouping (light x all key attributes x bin); `merge` adds Partials. Sums are
exact up to float64 rounding, so the result does not depend on how rows were split or
in what order the pieces were merged. Coarser groups are sums of finer ones (`aggregate`).

Fallback hierarchy (`chain`): a group that is too small (fewer than `min_images`
images, or fewer than `min_bins` populated bins on a side) borrows the line of a
coarser group: drop the key attributes one at a time (the last listed first), then
drop the light condition, down to the global group ("any", ""). The global group
serves whatever its size, as long as it has 2 populated bins on the side; failing
that, its both-sides line serves ("side" dropped). The fallback is recorded as
"none" or "drop:<what was dropped, in order>", e.g. "drop:Eyeglasses,Male".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

MODES = ("light_conditioned", "light_agnostic", "single_direction")
SIDES = ("left", "right", "both")
ANY_LIGHT = "any"


# ---------------------------------------------------------------------------
# Bins


def parse_bins(values: Sequence[float]) -> np.ndarray:
    """Bin edges from either (lo, hi, step) or explicit strictly increasing edges.

    Three values that are not increasing (the step is below hi, e.g. -45,45,10) read as
    lo, hi, step: edges lo, lo+step, ..., hi. Anything else must be increasing edges."""
    v = [float(x) for x in values]
    if len(v) == 3 and not (v[0] < v[1] < v[2]):
        lo, hi, step = v
        if step <= 0 or hi <= lo:
            raise ValueError(f"bins {values}: as lo,hi,step need hi > lo and step > 0")
        n = int(round((hi - lo) / step))
        if n < 1 or not np.isclose(lo + n * step, hi):
            raise ValueError(f"bins {values}: (hi - lo) must be a whole number of steps")
        return lo + step * np.arange(n + 1, dtype=np.float64)
    edges = np.asarray(v, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0) or not np.all(np.isfinite(edges)):
        raise ValueError(f"bins {values}: give lo,hi,step or at least 2 strictly increasing edges")
    return edges


def bin_index(yaw: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each yaw (-1 outside [edges[0], edges[-1]] or not finite); the last bin is closed."""
    yaw = np.asarray(yaw, dtype=np.float64)
    idx = np.searchsorted(edges, yaw, side="right") - 1
    idx = np.where(yaw == edges[-1], len(edges) - 2, idx)
    ok = np.isfinite(yaw) & (yaw >= edges[0]) & (yaw <= edges[-1])
    return np.where(ok, idx, -1)


def side_bins(edges: np.ndarray, side: str) -> np.ndarray:
    """Boolean mask over bins: which bins a side uses (see the module docstring)."""
    lo, hi = edges[:-1], edges[1:]
    if side == "left":
        return lo < 0
    if side == "right":
        return hi > 0
    if side == "both":
        return np.ones(len(lo), dtype=bool)
    raise ValueError(f"unknown side {side!r}; use one of {SIDES}")


# ---------------------------------------------------------------------------
# Keys


def key_string(attributes: Sequence[str], values: Sequence[bool]) -> str:
    return ",".join(f"{a}={int(bool(v))}" for a, v in zip(attributes, values))


# ---------------------------------------------------------------------------
# Partial sums


@dataclass
class GroupSums:
    """Per-bin sums of one group: counts [B], yaw sums [B], latent sums [B,3,S,S] (float64),
    per-bin yaw min/max (merged by min/max, so exact), yaw_sq [B] (sums of yaw^2, for the
    yaw variance the sample-direction gain needs), and sq_dev [B]: the sum over the bin's
    images of ||latent - bin centroid||^2 (merged with Chan et al.'s pairwise update, so it
    needs no second pass and does not depend on the split). sq_dev is what tells how much of
    a line's misfit is the centroids' sampling noise (`Reliability`)."""

    count: np.ndarray
    yaw_sum: np.ndarray
    latent_sum: np.ndarray
    yaw_min: np.ndarray
    yaw_max: np.ndarray
    sq_dev: np.ndarray
    yaw_sq: np.ndarray

    @classmethod
    def zeros(cls, n_bins: int, shape: tuple[int, ...]) -> "GroupSums":
        return cls(
            count=np.zeros(n_bins, np.int64),
            yaw_sum=np.zeros(n_bins, np.float64),
            latent_sum=np.zeros((n_bins, *shape), np.float64),
            yaw_min=np.full(n_bins, np.inf),
            yaw_max=np.full(n_bins, -np.inf),
            sq_dev=np.zeros(n_bins, np.float64),
            yaw_sq=np.zeros(n_bins, np.float64),
        )

    def add(self, other: "GroupSums") -> "GroupSums":
        n = self.count + other.count
        # Chan's update: M2 = M2_a + M2_b + |mean_b - mean_a|^2 * n_a * n_b / n, per bin.
        gap = ((other.centroids() - self.centroids()) ** 2).reshape(len(n), -1).sum(axis=1)
        cross = gap * self.count * other.count / np.maximum(n, 1)
        return GroupSums(
            count=n,
            yaw_sum=self.yaw_sum + other.yaw_sum,
            latent_sum=self.latent_sum + other.latent_sum,
            yaw_min=np.minimum(self.yaw_min, other.yaw_min),
            yaw_max=np.maximum(self.yaw_max, other.yaw_max),
            sq_dev=self.sq_dev + other.sq_dev + cross,
            yaw_sq=self.yaw_sq + other.yaw_sq,
        )

    @property
    def n_images(self) -> int:
        return int(self.count.sum())

    def mean_yaws(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.yaw_sum / np.maximum(self.count, 1), np.nan)

    def yaw_var(self, mask: np.ndarray) -> float:
        """Variance of the yaws of the images in the bins of `mask` (0 when fewer than 2)."""
        n = int(self.count[mask].sum())
        if n < 2:
            return 0.0
        mean = float(self.yaw_sum[mask].sum()) / n
        return max(float(self.yaw_sq[mask].sum()) / n - mean * mean, 0.0)

    def centroids(self) -> np.ndarray:
        """[B,3,S,S] mean latents per bin (zeros where the bin is empty)."""
        denom = np.maximum(self.count, 1).reshape(-1, *([1] * (self.latent_sum.ndim - 1)))
        return self.latent_sum / denom


@dataclass
class Partial:
    """Sums and counts of some rows at the finest grouping: (light, attribute values) -> GroupSums."""

    edges: np.ndarray
    attributes: tuple[str, ...]
    shape: tuple[int, ...] | None = None
    groups: dict[tuple[str, tuple[bool, ...]], GroupSums] = field(default_factory=dict)
    n_rows: int = 0          # rows seen
    n_out_of_range: int = 0  # rows whose yaw fell outside the bins (or was not finite)

    def total(self) -> GroupSums:
        return aggregate(self, lambda light, values: (ANY_LIGHT, ()))[(ANY_LIGHT, ())]


def reduce_rows(
    latents: np.ndarray,
    yaw: np.ndarray,
    light: Sequence[str],
    attrs: np.ndarray | Mapping[str, Sequence[bool]] | None,
    bins: Sequence[float] | np.ndarray,
    attributes: Sequence[str] = (),
) -> Partial:
    """Per-(light, attribute values, bin) counts and sums of `latents` [N,3,S,S].

    attrs: bool [N, len(attributes)] (columns in `attributes` order) or a mapping name -> column.
    bins: edges (increasing). Rows outside the bins are counted in n_out_of_range only."""
    edges = np.asarray(bins, dtype=np.float64)
    attributes = tuple(attributes)
    latents = np.asarray(latents)
    n = latents.shape[0]
    yaw = np.asarray(yaw, dtype=np.float64).reshape(-1)
    light = np.asarray(light, dtype=object).reshape(-1)
    if isinstance(attrs, Mapping):
        attrs = np.stack([np.asarray(attrs[a], dtype=bool) for a in attributes], axis=1) if attributes else None
    attrs = np.zeros((n, 0), bool) if attrs is None else np.asarray(attrs, dtype=bool).reshape(n, len(attributes))
    if len(yaw) != n or len(light) != n:
        raise ValueError(f"reduce_rows: {n} latents but {len(yaw)} yaws and {len(light)} lights")
    shape = tuple(latents.shape[1:])
    out = Partial(edges=edges, attributes=attributes, shape=shape, n_rows=n)
    b = bin_index(yaw, edges)
    ok = b >= 0
    out.n_out_of_range = int((~ok).sum())
    if not ok.any():
        return out
    # One integer code per (light, attribute values), then sort once and add runs.
    group_keys = [(str(l), tuple(bool(x) for x in a)) for l, a in zip(light[ok], attrs[ok])]
    uniq = sorted(set(group_keys))
    code = {k: i for i, k in enumerate(uniq)}
    gid = np.array([code[k] for k in group_keys], dtype=np.int64)
    n_bins = len(edges) - 1
    cell = gid * n_bins + b[ok]
    order = np.argsort(cell, kind="stable")
    cell_sorted = cell[order]
    starts = np.flatnonzero(np.r_[True, cell_sorted[1:] != cell_sorted[:-1]])
    rows = np.flatnonzero(ok)[order]
    y = yaw[rows]
    ends = np.r_[starts[1:], len(rows)]
    # One gather and one float64-accumulating sum per cell: 10x faster than casting the whole
    # shard to float64 and reduceat-ing it (bench/fit.py), with the same float64 sums.
    lat_sums, sq_devs = [], []
    for s, e in zip(starts, ends):
        x = latents[rows[s:e]]
        total = x.sum(axis=0, dtype=np.float64)
        lat_sums.append(total)
        # Deviations in the latents' own dtype (the centroid is exact; only the squares are
        # rounded there), squares summed with float64 accumulation: a diagnostic, not a sum
        # the fit uses, and a float64 copy of the cell would double the stage's time.
        dtype = np.promote_types(x.dtype, np.float32)  # float16 latents: square in float32
        dev = x.astype(dtype, copy=False) - (total / (e - s)).astype(dtype)
        np.square(dev, out=dev)
        sq_devs.append(float(dev.sum(dtype=np.float64)))
    yaw_sums = np.add.reduceat(y, starts)
    yaw_sqs = np.add.reduceat(y * y, starts)
    yaw_mins = np.minimum.reduceat(y, starts)
    yaw_maxs = np.maximum.reduceat(y, starts)
    counts = np.diff(np.r_[starts, len(cell_sorted)])
    for j, s in enumerate(starts):
        g, k = divmod(int(cell_sorted[s]), n_bins)
        sums = out.groups.setdefault(uniq[g], GroupSums.zeros(n_bins, shape))
        sums.count[k] += counts[j]
        sums.yaw_sum[k] += yaw_sums[j]
        sums.yaw_sq[k] += yaw_sqs[j]
        sums.latent_sum[k] += lat_sums[j]
        sums.yaw_min[k] = min(sums.yaw_min[k], yaw_mins[j])
        sums.yaw_max[k] = max(sums.yaw_max[k], yaw_maxs[j])
        sums.sq_dev[k] = sq_devs[j]  # each (group, bin) cell is one run of the sort: set once
    return out


def merge(partials: Iterable[Partial]) -> Partial:
    """Sum of Partials over the same bins and attributes (order-independent up to float64 rounding)."""
    partials = list(partials)
    if not partials:
        raise ValueError("merge: no partials")
    first = partials[0]
    out = Partial(edges=first.edges, attributes=first.attributes, shape=None)
    for p in partials:
        if not np.array_equal(p.edges, first.edges) or p.attributes != first.attributes:
            raise ValueError("merge: partials were reduced with different bins or attributes")
        if p.shape is not None and p.groups:
            if out.shape is not None and p.shape != out.shape:
                raise ValueError(f"merge: latent shapes differ ({out.shape} vs {p.shape})")
            out.shape = p.shape
        out.n_rows += p.n_rows
        out.n_out_of_range += p.n_out_of_range
        for key, sums in p.groups.items():
            out.groups[key] = out.groups[key].add(sums) if key in out.groups else sums
    # Iterate groups in a canonical order, so the merged dict never depends on merge order.
    out.groups = dict(sorted(out.groups.items()))
    return out


# ---------------------------------------------------------------------------
# Groups and the fallback chain


def group_of(mode: str, light: str, values: Sequence[bool], attributes: Sequence[str],
             n_attributes: int | None = None) -> tuple[str, str]:
    """(light, key) of a row's group at a level keeping the first `n_attributes` attributes."""
    k = len(attributes) if n_attributes is None else n_attributes
    light = ANY_LIGHT if mode == "light_agnostic" else light
    return light, key_string(attributes[:k], values[:k])


def chain(mode: str, light: str, values: Sequence[bool], attributes: Sequence[str]) -> list[tuple[tuple[str, str], str]]:
    """The fallback hierarchy of a row's group: [((light, key), dropped component), ...], finest first.

    The dropped component names what the *next* level drops ("" for the last level).
    light_conditioned / single_direction: attributes (last first), then light, down to ("any", "").
    light_agnostic: light is ignored from the start; attributes (last first) down to ("any", "")."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    attributes = tuple(attributes)
    levels: list[tuple[tuple[str, str], str]] = []
    for k in range(len(attributes), -1, -1):
        drop = attributes[k - 1] if k > 0 else ("light" if mode != "light_agnostic" else "")
        levels.append((group_of(mode, light, values, attributes, k), drop))
    if mode != "light_agnostic":
        levels.append(((ANY_LIGHT, ""), ""))
    return levels


def fallback_name(dropped: Sequence[str]) -> str:
    return "drop:" + ",".join(dropped) if dropped else "none"


def aggregate(partial: Partial, group_fn) -> dict[tuple, GroupSums]:
    """Sums at a coarser grouping: group_fn(light, values) -> group key; finer groups add up."""
    out: dict[tuple, GroupSums] = {}
    for (light, values), sums in partial.groups.items():
        key = group_fn(light, values)
        out[key] = out[key].add(sums) if key in out else sums
    if not out:
        out[group_fn(ANY_LIGHT, ())] = GroupSums.zeros(len(partial.edges) - 1, partial.shape or (0,))
    return out


def all_groups(partial: Partial, mode: str) -> dict[tuple[str, str], GroupSums]:
    """Every group at every level of the hierarchy that holds at least one row, with its sums."""
    attributes = partial.attributes
    out: dict[tuple[str, str], GroupSums] = {}
    for (light, values), sums in partial.groups.items():
        for group, _ in chain(mode, light, values, attributes):
            out[group] = out[group].add(sums) if group in out else sums
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------
# Lines


def fit_line(mean_yaws: np.ndarray, centroids: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Weighted least squares of centroid [B,...] on mean yaw [B] (weights = counts [B]).

    Returns (slope [...] per degree, intercept [...], r2). R^2 = 1 - SS_res/SS_tot with both
    sums over all latent elements, weighted by the counts; 1.0 when the centroids are all equal
    (the fitted line is then exact). Empty bins (count 0) are ignored. Needs 2 distinct yaws."""
    slope, intercept, ss_res, ss_tot = _weighted_fit(mean_yaws, centroids, counts)
    return slope, intercept, _r2(ss_res, ss_tot)


def _r2(ss_res: float, ss_tot: float) -> float:
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0


def _weighted_fit(mean_yaws, centroids, counts) -> tuple[np.ndarray, np.ndarray, float, float]:
    """fit_line's work: (slope, intercept, SS_res, SS_tot), the sums weighted by the counts."""
    w = np.asarray(counts, dtype=np.float64)
    keep = w > 0
    y = np.asarray(mean_yaws, dtype=np.float64)[keep]
    c = np.asarray(centroids, dtype=np.float64)[keep]
    w = w[keep]
    if len(y) < 2 or np.ptp(y) == 0:
        raise ValueError(f"fit_line: need populated bins at 2 distinct yaws, got {len(y)}")
    W = w.sum()
    ybar = (w * y).sum() / W
    wb = w.reshape(-1, *([1] * (c.ndim - 1)))
    cbar = (wb * c).sum(axis=0) / W
    dy = (y - ybar).reshape(wb.shape)
    slope = (wb * dy * (c - cbar)).sum(axis=0) / (w * (y - ybar) ** 2).sum()
    intercept = cbar - slope * ybar
    resid = c - (intercept + slope * y.reshape(wb.shape))
    ss_res = float((wb * resid**2).sum())
    ss_tot = float((wb * (c - cbar) ** 2).sum())
    return slope, intercept, ss_res, ss_tot


@dataclass(frozen=True)
class Reliability:
    """How much of a line's R^2 the centroids' sampling noise explains.

    A centroid of n images carries noise of variance s2/n (s2: the images' spread around
    their bin centroid, summed over latent elements, pooled over the bins). Weighted by the
    counts, that noise is the same s2 in every bin, so it adds (B-1)*s2 to SS_tot and
    (B-2)*s2 to SS_res in expectation (B populated bins; a line has 2 parameters).

    noise_share  (B-1)*s2 / SS_tot: the part of the centroids' spread that sampling noise alone
                 would give. Near 1: the bins are too small to show a trajectory at all.
    r2_reliable  1 - (SS_res - (B-2)*s2) / (SS_tot - (B-1)*s2): R^2 of the line on the
                 centroids' noise-free spread (what more images per bin would tend to; the
                 "explainable variance" correction). None when the spread is all noise.
                 Low r2_reliable = the trajectory bends; low r2 with high r2_reliable = more
                 images per bin (or wider bins) would straighten it. The images' yaw spread
                 inside a bin counts as noise here: slope^2 x var(yaw in bin), ~0.1% of s2 for
                 10-degree bins of the demo's latents (see CONTRACTS.md trajectories/).
    """

    noise_share: float | None
    r2_reliable: float | None

    @classmethod
    def of(cls, ss_res: float, ss_tot: float, counts: np.ndarray, sq_dev: np.ndarray) -> "Reliability":
        counts = np.asarray(counts)
        keep = counts > 0
        dof = int((counts[keep] - 1).sum())
        if dof <= 0 or ss_tot <= 0:
            return cls(None, None)  # one image per bin: no spread to estimate the noise from
        s2 = float(np.asarray(sq_dev)[keep].sum()) / dof
        n_bins = int(keep.sum())
        noise_tot, noise_res = (n_bins - 1) * s2, (n_bins - 2) * s2
        signal = ss_tot - noise_tot
        r2 = min(1.0, 1.0 - (ss_res - noise_res) / signal) if signal > 0 else None
        return cls(min(1.0, noise_tot / ss_tot), r2)


@dataclass
class Line:
    """One fitted trajectory row (see CONTRACTS.md trajectories/)."""

    mode: str
    light: str
    key: str
    side: str
    slope: np.ndarray
    intercept: np.ndarray
    r2: float
    reliability: Reliability
    yaw_min: float
    yaw_max: float
    n_images: int
    fallback: str
    served_by: tuple[str, str]          # the (light, key) group whose data made the line
    sums: GroupSums                     # the serving group's sums (bins and centroids)
    source: str = "embeddings"          # whose latents: the data's embeddings or the generator's samples


def _adequate(sums: GroupSums, mask: np.ndarray, min_images: int, min_bins: int) -> bool:
    counts = sums.count[mask]
    return int(counts.sum()) >= min_images and int((counts > 0).sum()) >= max(min_bins, 2)


def _fittable(sums: GroupSums, mask: np.ndarray) -> bool:
    return int((sums.count[mask] > 0).sum()) >= 2


def _line(sums: GroupSums, mask: np.ndarray) -> tuple:
    m = mask & (sums.count > 0)
    slope, intercept, ss_res, ss_tot = _weighted_fit(sums.mean_yaws()[m], sums.centroids()[m], sums.count[m])
    r2 = _r2(ss_res, ss_tot)
    reliability = Reliability.of(ss_res, ss_tot, sums.count[m], sums.sq_dev[m])
    return (slope, intercept, r2, reliability, float(sums.yaw_min[m].min()), float(sums.yaw_max[m].max()),
            int(sums.count[m].sum()))


def fit_all(partial: Partial, min_images: int = 50, min_bins: int = 3,
            modes: Sequence[str] = MODES) -> list[Line]:
    """Lines for every group at every level of every mode (one per side), each with its fallback."""
    if not partial.groups:
        raise ValueError("fit: no rows with a yaw inside the bins; widen --bins or check the latents")
    edges = partial.edges
    lines: list[Line] = []
    for mode in modes:
        groups = all_groups(partial, mode)
        sides = ("both",) if mode == "single_direction" else ("left", "right")
        # Each group's own chain is the tail of the chain of any of its finer groups, so
        # walking from the group's level up finds the same fallback a finer group would.
        chains = _group_chains(partial, mode)
        for group, _ in groups.items():
            for side in sides:
                mask = side_bins(edges, side)
                dropped: list[str] = []
                served = None
                for level_group, drop in chains[group]:
                    sums = groups[level_group]
                    last = level_group == (ANY_LIGHT, "")
                    if _adequate(sums, mask, min_images, min_bins) or (last and _fittable(sums, mask)):
                        served = (level_group, sums, mask)
                        break
                    if drop:
                        dropped.append(drop)
                if served is None:
                    total = groups[(ANY_LIGHT, "")]
                    both = side_bins(edges, "both")
                    if not _fittable(total, both):
                        raise ValueError(
                            "fit: fewer than 2 populated yaw bins in the whole data set; "
                            "use finer --bins or more images"
                        )
                    dropped.append("side")
                    served = ((ANY_LIGHT, ""), total, both)
                level_group, sums, m = served
                slope, intercept, r2, reliability, ymin, ymax, n = _line(sums, m)
                lines.append(Line(mode, group[0], group[1], side, slope, intercept, r2, reliability, ymin, ymax, n,
                                  fallback_name(dropped), level_group, sums))
    return lines


def _group_chains(partial: Partial, mode: str) -> dict[tuple[str, str], list[tuple[tuple[str, str], str]]]:
    out: dict[tuple[str, str], list] = {}
    for light, values in partial.groups:
        levels = chain(mode, light, values, partial.attributes)
        for i, (group, _) in enumerate(levels):
            out.setdefault(group, levels[i:])
    return out


# ---------------------------------------------------------------------------
# Moves


def move(z: np.ndarray, yaw_src, yaw_tgt, traj_left: np.ndarray, traj_right: np.ndarray) -> np.ndarray:
    """z + the integral of the slope from yaw_src to yaw_tgt, with the left slope below 0
    and the right slope above it: crossing 0 walks the source side's line to 0, then the
    target side's line; on one side it is one slope.

    z [N,...] (or [...]); yaws scalars or [N]; slopes [...] or [N,...] (per degree)."""
    z = np.asarray(z)
    ys = np.asarray(yaw_src, dtype=np.float64)
    yt = np.asarray(yaw_tgt, dtype=np.float64)
    extra = z.ndim - (1 if ys.ndim else 0)
    shape = ys.shape + (1,) * extra if ys.ndim else ()
    left = (np.minimum(yt, 0.0) - np.minimum(ys, 0.0)).reshape(shape)
    right = (np.maximum(yt, 0.0) - np.maximum(ys, 0.0)).reshape(shape)
    return z + left * np.asarray(traj_left) + right * np.asarray(traj_right)


def interpolate_centroid(yaw, mean_yaws: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """c(yaw): piecewise-linear through (mean_yaws[b], centroids[b]) (sorted, distinct),
    clamped to the end centroids outside their range. yaw scalar or [N]."""
    x = np.asarray(mean_yaws, dtype=np.float64)
    c = np.asarray(centroids, dtype=np.float64)
    y = np.atleast_1d(np.asarray(yaw, dtype=np.float64))
    if len(x) == 0:
        raise ValueError("centroid path: no populated bins")
    if len(x) == 1:
        out = np.repeat(c[:1], len(y), axis=0)
    else:
        yc = np.clip(y, x[0], x[-1])
        hi = np.clip(np.searchsorted(x, yc, side="right"), 1, len(x) - 1)
        lo = hi - 1
        t = ((yc - x[lo]) / (x[hi] - x[lo])).reshape(-1, *([1] * (c.ndim - 1)))
        out = c[lo] + t * (c[hi] - c[lo])
    return out if np.ndim(yaw) else out[0]


def centroid_path(z: np.ndarray, yaw_src, yaw_tgt, bins: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """z' = z + c(yaw_tgt) - c(yaw_src), c piecewise-linear through the populated bins'
    centroids at their mean yaws (`bins`: mean yaws [B], sorted), clamped at the ends."""
    order = np.argsort(np.asarray(bins, dtype=np.float64), kind="stable")
    x = np.asarray(bins, dtype=np.float64)[order]
    c = np.asarray(centroids, dtype=np.float64)[order]
    return np.asarray(z) + interpolate_centroid(yaw_tgt, x, c) - interpolate_centroid(yaw_src, x, c)


def no_move(z: np.ndarray, *_args) -> np.ndarray:
    return np.asarray(z)
