"""Stage 2, fit: latents/*.parquet (+ samples/*.parquet) -> trajectories/trajectories.parquet.

    one Ray task per latents file: read the needed columns, reduce to a Partial
    (per light x attribute values x yaw bin: count, yaw sum, latent sum; float64)
    -> the driver merges Partials as they finish (sums: order-independent)
    -> fits every mode, group, level and side (headrot.trajectories) -> one Parquet file.

Direction sources (`sources`), each a set of rows of the table (column `source`):
    embeddings        the paper's: centroids of the data's latents (every mode)
    samples           the generator's own labelled samples (headrot.stages.samples), in the
                      low-pass subspace of x_T, the same light-conditioned two-sided fit, each
                      line's slope turned into the one-degree readout step (headrot.directions)
    <source>_ortho    the light-conditioned lines of a source with the step projected off the
                      nuisance directions (colours, light: from the samples' sums)

The latent column is the only large one and is read once; the driver holds only
the sums (groups x bins x 3 x S x S float64), never the rows.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from headrot import directions as D
from headrot import runs, storage, tables
from headrot import trajectories as tr
from headrot.config import to_mapping
from headrot.layout import RunLayout
from headrot.lock import locked
from headrot.moves import ORTHO, SOURCES
from headrot.stages.protocol import Stage, run_stage

log = logging.getLogger(__name__)

STAGE = "fit"
SPLITS = {"train": 0, "val": 1, "test": 2}


# ---------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class FitConfig:
    root: str                                              # run root (local path or s3://)
    bins: tuple[float, ...] = (-45.0, 45.0, 10.0)          # lo,hi,step or explicit edges (degrees)
    attributes: tuple[str, ...] = ("Male", "Eyeglasses")   # key attributes; dropped last-first on fallback
    min_images: int = 50                                   # a group needs this many images on a side ...
    min_bins: int = 3                                      # ... and this many populated bins, else it falls back
    splits: tuple[str, ...] = ()                           # partitions to fit on (train/val/test); () = all
    sources: tuple[str, ...] = ("embeddings",)             # direction sources (see the module docstring)
    lowpass: int = 8                                       # samples: blocks per side of the low-pass subspace

    def __post_init__(self) -> None:
        tr.parse_bins(self.bins)
        bad = [s for s in self.sources if s not in SOURCES]
        if bad or "embeddings" not in self.sources or len(set(self.sources)) != len(self.sources):
            # embeddings always: the baselines and the paper's own method move along them.
            raise ValueError(f"fit: sources {list(self.sources)}: use embeddings, optionally with samples")
        if self.lowpass < 0:
            raise ValueError("fit: lowpass must be >= 0 (0: the full latent)")
        for s in self.splits:
            if s not in SPLITS:
                raise ValueError(f"fit: unknown split {s!r}; use some of {sorted(SPLITS)}")
        if self.min_images < 1 or self.min_bins < 2:
            raise ValueError("fit: min_images must be >= 1 and min_bins >= 2 (a line needs 2 bins)")
        if len(set(self.attributes)) != len(self.attributes):
            raise ValueError(f"fit: attributes listed twice in {self.attributes}")


# ---------------------------------------------------------------------------
# One latents file -> Partial (a Ray task)


def reduce_file(uri: str, edges: np.ndarray, attributes: tuple[str, ...],
                partitions: tuple[int, ...] | None) -> tr.Partial:
    """Read only the columns the fit needs and reduce them to sums (runs as a Ray task)."""
    columns = ["latent", "yaw", "light", *attributes] + (["partition"] if partitions else [])
    try:
        table = tables.read_parquet(uri, columns=columns)
    except (KeyError, pa.ArrowInvalid) as exc:
        raise ValueError(f"{runs.redact_uri(uri)}: cannot read columns {columns} ({exc}); "
                         "check --attributes against the latents' attribute names") from None
    if partitions:
        part = table.column("partition").to_numpy()
        table = table.filter(pa.array(np.isin(part, partitions)))
    latents = tables.tensor_to_numpy(table.column("latent")) if table.num_rows else np.zeros((0, 3, 1, 1))
    attrs = {a: table.column(a).to_numpy(zero_copy_only=False) for a in attributes}
    return tr.reduce_rows(latents, table.column("yaw").to_numpy(zero_copy_only=False),
                          table.column("light").to_pylist(), attrs, edges, attributes)


def reduce_samples_file(uri: str, edges: np.ndarray, blocks: int, names: tuple[str, ...]) -> tuple[tr.Partial, D.NuisanceSums]:
    """One samples file -> (Partial of low-passed latents by light, nuisance sums) (a Ray task)."""
    table = tables.read_parquet(uri, columns=["latent", "yaw", "light", "nuisance"])
    latents = D.lowpass(tables.tensor_to_numpy(table.column("latent")), blocks)
    partial = tr.reduce_rows(latents, table.column("yaw").to_numpy(zero_copy_only=False),
                             table.column("light").to_pylist(), None, edges, ())
    return partial, D.reduce_nuisance(latents, tables.tensor_to_numpy(table.column("nuisance")), names)


def sample_lines(partial: tr.Partial, config: FitConfig) -> list[tr.Line]:
    """Light-conditioned two-sided lines of the samples, each slope turned into the step that
    turns the generator's heads by one degree (D.readout_step: samples are white in x_T)."""
    dims = D.subspace_dim(partial.shape, config.lowpass)
    lines = tr.fit_all(partial, config.min_images, config.min_bins, modes=("light_conditioned",))
    for line in lines:
        mask = tr.side_bins(partial.edges, line.side) & (line.sums.count > 0)
        line.slope = D.readout_step(line.slope, line.sums.yaw_var(mask), line.n_images, dims)
        line.source = "samples"
    return lines


def orthogonal_lines(lines: list[tr.Line], nuisances: np.ndarray) -> list[tr.Line]:
    """Copies of each source's light-conditioned lines with the step off the nuisance directions."""
    import dataclasses

    return [dataclasses.replace(l, slope=D.orthogonalise(l.slope, nuisances), source=l.source + ORTHO)
            for l in lines if l.mode == "light_conditioned"]


# ---------------------------------------------------------------------------
# Lines -> the trajectories table


def lines_table(lines: list[tr.Line], edges: np.ndarray) -> pa.Table:
    bins_type = pa.list_(pa.struct([("yaw_lo", pa.float32()), ("yaw_hi", pa.float32()),
                                    ("mean_yaw", pa.float32()), ("count", pa.int64()),
                                    ("spread", pa.float32())]))
    bins = []
    for line in lines:
        means = line.sums.mean_yaws()
        spread = _spread(line.sums)
        bins.append([
            {"yaw_lo": float(edges[b]), "yaw_hi": float(edges[b + 1]),
             "mean_yaw": None if line.sums.count[b] == 0 else float(means[b]),
             "count": int(line.sums.count[b]),
             "spread": None if line.sums.count[b] < 2 else float(spread[b])}
            for b in range(len(edges) - 1)
        ])
    return pa.table({
        "source": pa.array([l.source for l in lines], pa.string()),
        "mode": pa.array([l.mode for l in lines], pa.string()),
        "light": pa.array([l.light for l in lines], pa.string()),
        "key": pa.array([l.key for l in lines], pa.string()),
        "side": pa.array([l.side for l in lines], pa.string()),
        "slope": tables.tensor_column(np.stack([l.slope for l in lines]).astype(np.float32)),
        "intercept": tables.tensor_column(np.stack([l.intercept for l in lines]).astype(np.float32)),
        "bins": pa.array(bins, bins_type),
        "centroids": tables.tensor_column(np.stack([l.sums.centroids() for l in lines]).astype(np.float32)),
        "r2": pa.array([l.r2 for l in lines], pa.float64()),
        # How much of the misfit is the centroids' sampling noise (tr.Reliability).
        "r2_reliable": pa.array([l.reliability.r2_reliable for l in lines], pa.float64()),
        "noise_share": pa.array([l.reliability.noise_share for l in lines], pa.float64()),
        "yaw_min": pa.array([l.yaw_min for l in lines], pa.float32()),
        "yaw_max": pa.array([l.yaw_max for l in lines], pa.float32()),
        "n_images": pa.array([l.n_images for l in lines], pa.int64()),
        "fallback": pa.array([l.fallback for l in lines], pa.string()),
        # Beyond CONTRACTS.md: the group whose data made the line, "light|key".
        "served_by": pa.array([f"{l.served_by[0]}|{l.served_by[1]}" for l in lines], pa.string()),
    })


def _spread(sums: tr.GroupSums) -> np.ndarray:
    """[B] RMS per latent element of each bin's images around its centroid (nan below 2 images)."""
    elements = int(np.prod(sums.latent_sum.shape[1:]))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(sums.sq_dev / ((sums.count - 1) * elements))


# ---------------------------------------------------------------------------
# The stage


def _fingerprint(config: FitConfig, files: list[str], sample_files: list[str]) -> str:
    layout = RunLayout(config.root)
    return runs.fingerprint({
        "latents": runs.hash_uris([storage.join(layout.latents, storage.SUCCESS)]),
        "files": [f.rsplit("/", 1)[-1] for f in files],
        "samples": runs.hash_uris([storage.join(layout.samples, storage.SUCCESS)]) if sample_files else None,
        "sample_files": [f.rsplit("/", 1)[-1] for f in sample_files],
        "config": {k: v for k, v in to_mapping(config).items() if k != "root"},
    })


def _sample_files(config: FitConfig) -> tuple[list[str], dict[str, Any] | None]:
    if "samples" not in config.sources:
        return [], None
    samples_dir = RunLayout(config.root).samples
    done = storage.completion(samples_dir)
    if done is None:
        raise ValueError(f"{runs.redact_uri(samples_dir)} is not complete (no _SUCCESS): run `headrot samples` "
                         "first (or drop 'samples' from fit.sources)")
    if not done.get("rows"):
        raise ValueError(f"{runs.redact_uri(samples_dir)} holds no samples (the samples stage ran with n 0: "
                         "its networks only): rerun `headrot samples` with n >= 10, or drop 'samples' "
                         "from fit.sources")
    # Every samples file the samples stage made, checked against its _SUCCESS (runs.stage_files).
    return runs.stage_files(samples_dir, STAGE, "samples", rows_key="rows"), done


def _reduce_all(refs) -> Any:
    """Merge the tasks' results as they finish: Partials, or (Partial, NuisanceSums) pairs."""
    import ray

    merged = None
    while refs:
        ready, refs = ray.wait(refs, num_returns=1)
        part = ray.get(ready[0])
        if merged is None:
            merged = part
        elif isinstance(part, tuple):
            merged = (tr.merge([merged[0], part[0]]), merged[1].add(part[1]))
        else:
            merged = tr.merge([merged, part])
    return merged


@locked(lambda config: config.root, STAGE)  # one writer per run root (headrot/lock.py)
def run_fit(config: FitConfig) -> dict[str, Any]:
    """Fit (or skip, when complete with the same inputs) the trajectories; returns the summary."""
    layout = RunLayout(config.root)
    # Every latents file the embed stage made, checked against its _SUCCESS (runs.stage_files).
    files = runs.stage_files(layout.latents, STAGE, "embed", rows_key="written")
    if not files:
        raise ValueError(f"{runs.redact_uri(layout.latents)}: no latents files")
    sample_files, samples_done = _sample_files(config)
    stage = Stage(STAGE, config.root, layout.trajectories, _fingerprint(config, files, sample_files),
                  to_mapping(config), "rows", "trajectories")
    return run_stage(stage, lambda: _fit(config, layout, files, sample_files, samples_done))


def _fit(config: FitConfig, layout: RunLayout, files, sample_files, samples_done) -> dict[str, Any]:
    """The work: the reduce tasks, the fits, the table; returns the summary."""
    import ray

    started = time.time()
    edges = tr.parse_bins(config.bins)
    partitions = tuple(SPLITS[s] for s in config.splits) or None
    task = ray.remote(num_cpus=1)(reduce_file)
    merged = tr.merge([_reduce_all([task.remote(f, edges, tuple(config.attributes), partitions) for f in files])])
    lines = tr.fit_all(merged, config.min_images, config.min_bins)
    if sample_files:
        names = tuple(samples_done.get("nuisances", ()))
        sample_task = ray.remote(num_cpus=1)(reduce_samples_file)
        sampled, nuisance = _reduce_all([sample_task.remote(f, edges, config.lowpass, names) for f in sample_files])
        lines += sample_lines(tr.merge([sampled]), config)
        lines += orthogonal_lines(lines, nuisance.directions())
    reduce_s = time.time() - started
    tables.write_parquet(layout.trajectories_table, lines_table(lines, edges))
    return _summary(merged, lines, files, started, reduce_s)


def _summary(merged: tr.Partial, lines: list[tr.Line], files, started, reduce_s) -> dict[str, Any]:
    elapsed = time.time() - started
    fallbacks: dict[str, dict[str, int]] = {}
    groups: dict[str, int] = {}
    sources = _sources_summary(lines)
    lines = [l for l in lines if l.source == "embeddings"]
    for mode in tr.MODES:
        mine = [l for l in lines if l.mode == mode]
        groups[mode] = len({(l.light, l.key) for l in mine})
        fallbacks[mode] = dict(Counter(l.fallback for l in mine))
    by_light = [l for l in lines if l.mode == "light_conditioned" and l.key == "" and l.light != tr.ANY_LIGHT]
    overall = [l for l in lines if l.mode == "light_conditioned" and (l.light, l.key) == (tr.ANY_LIGHT, "")]

    def per_line(chosen, value, key=lambda l: l.light + "/" + l.side):
        return {key(l): (None if value(l) is None else round(value(l), 6)) for l in chosen}
    n_used = merged.n_rows - merged.n_out_of_range
    return {
        "files": len(files),
        "rows": len(lines),
        "rows_read": merged.n_rows,
        "rows_used": n_used,
        "rows_out_of_bins": merged.n_out_of_range,
        "groups": groups,
        "fallbacks": fallbacks,
        "r2_by_light": per_line(by_light, lambda l: l.r2),
        "r2_global": per_line(overall, lambda l: l.r2, key=lambda l: l.side),
        # How much of each line's misfit the centroids' sampling noise explains (tr.Reliability).
        "r2_reliable_by_light": per_line(by_light, lambda l: l.reliability.r2_reliable),
        "noise_share_by_light": per_line(by_light, lambda l: l.reliability.noise_share),
        "r2_reliable_global": per_line(overall, lambda l: l.reliability.r2_reliable, key=lambda l: l.side),
        "noise_share_global": per_line(overall, lambda l: l.reliability.noise_share, key=lambda l: l.side),
        "bins": [float(e) for e in merged.edges],
        "attributes": list(merged.attributes),
        "latent_shape": list(merged.shape or ()),
        "rows_per_s": round(merged.n_rows / reduce_s, 1) if reduce_s > 0 else None,
        "sources": sources,
        "seconds": round(elapsed, 2),
    }


def _sources_summary(lines: list[tr.Line]) -> dict[str, Any]:
    """Per direction source, its light-conditioned lines (per light class and side): the yaw a
    unit step turns by (1 / |step|; samples sources: the generator's response) and the cosine
    with the paper's (embeddings) line of the same group."""
    paper = {(l.light, l.side): l.slope for l in lines
             if l.source == "embeddings" and l.mode == "light_conditioned" and l.key == ""}
    out: dict[str, Any] = {}
    for source in sorted({l.source for l in lines}):
        mine = [l for l in lines if l.source == source and l.mode == "light_conditioned" and l.key == ""]
        out[source] = {"lines": sum(1 for l in lines if l.source == source), "by_light": {
            f"{l.light}/{l.side}": {
                "deg_per_unit_step": round(1.0 / float(np.linalg.norm(l.slope)), 4),
                "cos_with_embeddings": None if (l.light, l.side) not in paper else round(float(
                    (l.slope * paper[(l.light, l.side)]).sum()
                    / (np.linalg.norm(l.slope) * np.linalg.norm(paper[(l.light, l.side)]))), 4),
                "n_images": l.n_images}
            for l in mine}}
    return out
