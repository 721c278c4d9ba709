"""report/trajectories.png: the numbers behind the figure (read from the fit's table), and the figure."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from headrot import tables
from headrot import trajectories as tr
from headrot.report.trajectory_fit import side_points, trajectory_figure
from headrot.stages.fit import lines_table

EDGES = tr.parse_bins([-45, 45, 10])


def table_for(latents, yaw, light):
    """The fit's trajectories table (what the figure reads) for these rows."""
    lines = tr.fit_all(tr.reduce_rows(latents, yaw, light, None, EDGES, ()), min_images=10, min_bins=2)
    return lines_table(lines, EDGES)


def points(table, select):
    """side_points of every row for which select(row) holds, with the row."""
    rows = table.drop_columns(["slope", "intercept", "centroids"]).to_pylist()
    slopes, intercepts, cents = (tables.tensor_to_numpy(table.column(c)) for c in ("slope", "intercept", "centroids"))
    return [(r, side_points(r, slopes[i], intercepts[i], cents[i])) for i, r in enumerate(rows) if select(r)]


def test_straight_trajectories_lie_on_their_lines():
    rng = np.random.default_rng(0)
    n = 3000
    yaw = rng.uniform(-44, 44, n)
    light = rng.choice(["left", "center", "right"], n)
    direction = rng.normal(size=(3, 4, 4))
    latents = 0.3 + 0.01 * yaw.reshape(-1, 1, 1, 1) * direction          # exactly linear, one slope
    found = points(table_for(latents, yaw, light),
                   lambda r: r["mode"] == "light_conditioned" and r["light"] != tr.ANY_LIGHT)
    assert len(found) == 6                                             # 3 lights x 2 sides
    for _, pts in found:
        # float32 storage of slope, intercept and centroids: agreement to ~1e-6, not 1e-12.
        np.testing.assert_allclose(pts["off_line"], 0, atol=1e-5)
        np.testing.assert_allclose(pts["along"], pts["rate"] * pts["yaw"], atol=1e-5)
        assert np.isclose(pts["rate"], 0.01 * np.linalg.norm(direction) / np.sqrt(direction.size), rtol=1e-5)


def test_a_bent_trajectory_shows_off_the_line_at_its_ends():
    rng = np.random.default_rng(1)
    n = 3000
    yaw = rng.uniform(-44, 44, n)
    bend = rng.normal(size=(3, 4, 4))
    latents = 0.01 * yaw.reshape(-1, 1, 1, 1) + 1e-4 * (yaw ** 2).reshape(-1, 1, 1, 1) * bend
    [(row, pts)] = points(table_for(latents, yaw, ["center"] * n),
                          lambda r: (r["mode"], r["light"], r["side"]) == ("light_conditioned", "center", "left"))
    # Least squares through a parabola at 5 equally spaced yaws leaves residuals 2, -1, -2, -1, 2
    # (times a constant): each end sits twice as far off the line as its neighbour.
    off = pts["off_line"]
    assert len(off) == 5 and row["r2"] < 1
    assert off[0] > 1.5 * off[1] and off[-1] > 1.5 * off[-2] and off[2] > 1.5 * off[1]


def test_figure_is_a_png_with_one_column_per_light():
    rng = np.random.default_rng(2)
    n = 1500
    yaw = rng.uniform(-44, 44, n)
    light = rng.choice(["left", "center", "right"], n)
    latents = rng.normal(size=(n, 3, 4, 4)) * 0.1 + 0.01 * yaw.reshape(-1, 1, 1, 1)
    table = table_for(latents, yaw, light)
    # The dashed sampling-noise level: the bin's image spread / sqrt(count). Per element the
    # images spread by 0.1 (noise) and 0.01 x the bin's yaw spread (10/sqrt(12) degrees).
    for _, pts in points(table, lambda r: r["mode"] == "light_conditioned" and r["light"] != tr.ANY_LIGHT):
        expect = np.hypot(0.1, 0.01 * 10 / np.sqrt(12)) / np.sqrt(pts["count"])
        np.testing.assert_allclose(pts["noise"], expect, rtol=0.15)
    png = trajectory_figure(table)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.width > 1.5 * image.height   # 3 panels across, 2 down
    only_any = table_for(latents, yaw, ["center"] * n)
    keep = [r == tr.ANY_LIGHT for r in only_any.column("light").to_pylist()]
    assert trajectory_figure(only_any.filter(keep)) is None
