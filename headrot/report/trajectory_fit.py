"""report/trajectories.png: how straight the light-conditioned trajectories are.

The fit summarises each (light, side) by a line through the bin centroids, and R^2 says
how much of the centroids' spread the line explains. This figure shows where the rest is:

- top row, one panel per light class: each bin centroid's position along its side's fitted
  direction, (c_b - intercept) . u with u = slope / |slope|, against the bin's mean yaw,
  beside the fitted line |slope| * yaw. A straight trajectory puts the points on the line.
- bottom row: each centroid's distance from its line, against the same yaw, and the
  centroids' spread about their mean for scale. Distances that grow toward the ends of a
  side mean the path bends (one line fits large rotations badly, as the paper notes);
  distances flat across the bins at the level of 1/sqrt(count) x the latents' spread are
  sampling noise.

Distances are RMS per latent element, so any latent size reads the same.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from headrot import trajectories as tr
from headrot.evaluate.plots import _png, _pyplot

SIDE_STYLE = {"left": ("tab:blue", "o"), "right": ("tab:red", "s")}


def side_points(line: tr.Line, edges: np.ndarray) -> dict[str, np.ndarray]:
    """The populated bins of the line's side: mean yaw, count, position along the line's
    direction and RMS distance from the line (both per latent element)."""
    sums = line.sums
    mask = tr.side_bins(edges, line.side) & (sums.count > 0)
    yaw = sums.mean_yaws()[mask]
    cents = sums.centroids()[mask].reshape(int(mask.sum()), -1)
    slope = line.slope.reshape(-1).astype(np.float64)
    intercept = line.intercept.reshape(-1).astype(np.float64)
    size = slope.size
    norm = float(np.linalg.norm(slope))
    u = slope / norm if norm > 0 else slope
    along = (cents - intercept) @ u / np.sqrt(size)
    resid = cents - (intercept + np.outer(yaw, slope))
    w = sums.count[mask].astype(np.float64)
    mean = (w[:, None] * cents).sum(0) / w.sum()
    return {
        "yaw": yaw, "count": sums.count[mask], "along": along,
        "off_line": np.sqrt((resid ** 2).mean(axis=1)),
        "spread": np.sqrt(((cents - mean) ** 2).mean(axis=1)),
        "rate": norm / np.sqrt(size),
    }


def trajectory_figure(lines: Sequence[tr.Line], edges: np.ndarray) -> bytes | None:
    """PNG of the light-conditioned lines of the attribute-free groups (None when there are none)."""
    mine = [l for l in lines if l.mode == "light_conditioned" and l.key == "" and l.light != tr.ANY_LIGHT]
    lights = sorted({l.light for l in mine})
    if not lights:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(lights), figsize=(4.2 * len(lights), 6.4), squeeze=False, sharex=True)
    for col, light in enumerate(lights):
        top, bottom = axes[0][col], axes[1][col]
        for line in (l for l in mine if l.light == light):
            pts = side_points(line, edges)
            if len(pts["yaw"]) == 0:
                continue
            color, marker = SIDE_STYLE.get(line.side, ("k", "x"))
            label = f"{line.side}: R\u00b2 {line.r2:.2f}, n {line.n_images}"
            top.scatter(pts["yaw"], pts["along"], color=color, marker=marker, s=18 + pts["count"] / 4, label=label)
            xs = np.linspace(pts["yaw"].min(), pts["yaw"].max(), 20)
            top.plot(xs, pts["rate"] * xs, color=color, lw=1.2)
            bottom.plot(pts["yaw"], pts["off_line"], color=color, marker=marker, lw=1.2, label=f"{line.side}: off the line")
            bottom.plot(pts["yaw"], pts["spread"], color=color, ls=":", lw=1, label=f"{line.side}: off the mean")
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
            bottom.legend(fontsize=7, loc="best")
    fig.suptitle("Light-conditioned trajectories: bin centroids against the fitted lines", fontsize=11)
    return _png(fig)
