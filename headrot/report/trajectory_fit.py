"""report/trajectories.png: how straight the light-conditioned trajectories are (drawn by the
evaluate stage from trajectories/trajectories.parquet, so the fit stage stays bound by its read).

The fit summarises each (light, side) by a line through the bin centroids, and R^2 says
how much of the centroids' spread the line explains. This figure shows where the rest is:

- top row, one panel per light class: each bin centroid's position along its side's fitted
  direction, (c_b - intercept) . u with u = slope / |slope|, against the bin's mean yaw,
  beside the fitted line |slope| * yaw. A straight trajectory puts the points on the line.
- bottom row: each centroid's distance from its line, against the same yaw, the
  centroids' spread about their mean for scale, and (dashed) the sampling noise a centroid
  of that many images carries (the bin's image spread / sqrt(count)). Distances that grow
  toward the ends of a side mean the path bends (one line fits large rotations badly, as
  the paper notes); distances at the dashed line are sampling noise. The legend gives R^2
  and, in brackets, R^2 on the noise-free spread (headrot.trajectories.Reliability).

Distances are RMS per latent element, so any latent size reads the same.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from headrot import tables
from headrot import trajectories as tr
from headrot.report.plots import _png, _pyplot

SIDE_STYLE = {"left": ("tab:blue", "o"), "right": ("tab:red", "s")}


def side_points(row: dict[str, Any], slope: np.ndarray, intercept: np.ndarray,
                centroids: np.ndarray) -> dict[str, np.ndarray]:
    """One trajectories row's populated bins on its side: mean yaw, count, position along the
    line's direction and RMS distance from the line (both per latent element).

    row: the row's scalar fields (side, bins); slope, intercept [...]; centroids [bins, ...]."""
    bins = row["bins"]
    edges = np.array([b["yaw_lo"] for b in bins] + [bins[-1]["yaw_hi"]], np.float64)
    counts = np.array([b["count"] for b in bins], np.int64)
    mask = tr.side_bins(edges, row["side"]) & (counts > 0)
    yaw = np.array([b["mean_yaw"] for b, m in zip(bins, mask) if m], np.float64)
    cents = np.asarray(centroids, np.float64)[mask].reshape(int(mask.sum()), -1)
    slope = np.asarray(slope, np.float64).reshape(-1)
    intercept = np.asarray(intercept, np.float64).reshape(-1)
    size = slope.size
    norm = float(np.linalg.norm(slope))
    u = slope / norm if norm > 0 else slope
    resid = cents - (intercept + np.outer(yaw, slope))
    w = counts[mask].astype(np.float64)
    mean = (w[:, None] * cents).sum(0) / w.sum() if len(w) else np.zeros(size)
    # Tables written before the bins carried their spread have no noise level to draw.
    spread = np.array([np.nan if b.get("spread") is None else b["spread"] for b, m in zip(bins, mask) if m],
                      np.float64)
    return {
        "yaw": yaw, "count": counts[mask], "along": (cents - intercept) @ u / np.sqrt(size),
        "off_line": np.sqrt((resid ** 2).mean(axis=1)),
        "spread": np.sqrt(((cents - mean) ** 2).mean(axis=1)),
        "rate": norm / np.sqrt(size),
        "noise": spread / np.sqrt(np.maximum(w, 1)),
    }


def trajectory_figure(table: pa.Table) -> bytes | None:
    """PNG of the light-conditioned lines of the attribute-free groups of a trajectories table
    (trajectories/trajectories.parquet); None when it has none."""
    rows = table.drop_columns(["slope", "intercept", "centroids"]).to_pylist()
    mine = [i for i, r in enumerate(rows)
            if r["mode"] == "light_conditioned" and r["key"] == "" and r["light"] != tr.ANY_LIGHT]
    lights = sorted({rows[i]["light"] for i in mine})
    if not lights:
        return None
    slopes = tables.tensor_to_numpy(table.column("slope"))
    intercepts = tables.tensor_to_numpy(table.column("intercept"))
    centroids = tables.tensor_to_numpy(table.column("centroids"))
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(lights), figsize=(4.2 * len(lights), 6.4), squeeze=False, sharex=True)
    for col, light in enumerate(lights):
        top, bottom = axes[0][col], axes[1][col]
        for i in (i for i in mine if rows[i]["light"] == light):
            row = rows[i]
            pts = side_points(row, slopes[i], intercepts[i], centroids[i])
            if len(pts["yaw"]) == 0:
                continue
            color, marker = SIDE_STYLE.get(row["side"], ("k", "x"))
            label = f"{row['side']}: R\u00b2 {row['r2']:.2f}"
            if row.get("r2_reliable") is not None:
                label += f" ({row['r2_reliable']:.2f} w/o noise)"
            label += f", n {row['n_images']}"
            top.scatter(pts["yaw"], pts["along"], color=color, marker=marker, s=18 + pts["count"] / 4, label=label)
            xs = np.linspace(pts["yaw"].min(), pts["yaw"].max(), 20)
            top.plot(xs, pts["rate"] * xs, color=color, lw=1.2)
            bottom.plot(pts["yaw"], pts["off_line"], color=color, marker=marker, lw=1.2,
                        label=f"{row['side']}: off the line")
            bottom.plot(pts["yaw"], pts["spread"], color=color, ls=":", lw=1, label=f"{row['side']}: off the mean")
            if np.isfinite(pts["noise"]).any():
                bottom.plot(pts["yaw"], pts["noise"], color=color, ls="--", lw=0.8, alpha=0.6,
                            label=f"{row['side']}: sampling noise")
        top.set_title(f"light {light}", fontsize=10)
        top.axvline(0, color="0.7", lw=0.8)
        top.grid(alpha=0.3)
        top.legend(fontsize=7, loc="best")
        bottom.axvline(0, color="0.7", lw=0.8)
        bottom.grid(alpha=0.3)
        bottom.set_xlabel("bin mean yaw (degrees)")
        if col == 0:
            top.set_ylabel("centroid along the fitted direction\n(RMS per latent element)")
            bottom.set_ylabel("centroid distance\n(RMS per latent element)")
            # One key for the bottom row, under the panels, so it hides no point.
            handles, labels = bottom.get_legend_handles_labels()
            fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, bbox_to_anchor=(0.5, -0.02))
    fig.subplots_adjust(bottom=0.16)
    fig.suptitle("Light-conditioned trajectories: bin centroids against the fitted lines", fontsize=11)
    return _png(fig)
