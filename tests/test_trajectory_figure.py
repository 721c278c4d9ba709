"""report/trajectories.png: the numbers behind the figure, and the figure itself."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from headrot import trajectories as tr
from headrot.report.trajectory_fit import side_points, trajectory_figure

EDGES = tr.parse_bins([-45, 45, 10])


def lines_for(latents, yaw, light):
    return tr.fit_all(tr.reduce_rows(latents, yaw, light, None, EDGES, ()), min_images=10, min_bins=2)


def test_straight_trajectories_lie_on_their_lines():
    rng = np.random.default_rng(0)
    n = 3000
    yaw = rng.uniform(-44, 44, n)
    light = rng.choice(["left", "center", "right"], n)
    direction = rng.normal(size=(3, 4, 4))
    latents = 0.3 + 0.01 * yaw.reshape(-1, 1, 1, 1) * direction          # exactly linear, one slope
    for line in lines_for(latents, yaw, light):
        if line.mode != "light_conditioned" or line.light == tr.ANY_LIGHT:
            continue
        pts = side_points(line, EDGES)
        np.testing.assert_allclose(pts["off_line"], 0, atol=1e-9)
        np.testing.assert_allclose(pts["along"], pts["rate"] * pts["yaw"], atol=1e-9)
        assert np.isclose(pts["rate"], 0.01 * np.linalg.norm(direction) / np.sqrt(direction.size))


def test_a_bent_trajectory_shows_off_the_line_at_its_ends():
    rng = np.random.default_rng(1)
    n = 3000
    yaw = rng.uniform(-44, 44, n)
    bend = rng.normal(size=(3, 4, 4))
    latents = 0.01 * yaw.reshape(-1, 1, 1, 1) + 1e-4 * (yaw ** 2).reshape(-1, 1, 1, 1) * bend
    line = next(l for l in lines_for(latents, yaw, ["center"] * n)
                if (l.mode, l.light, l.side) == ("light_conditioned", "center", "left"))
    pts = side_points(line, EDGES)
    # Least squares through a parabola at 5 equally spaced yaws leaves residuals 2, -1, -2, -1, 2
    # (times a constant): each end sits twice as far off the line as its neighbour.
    off = pts["off_line"]
    assert len(off) == 5 and line.r2 < 1
    assert off[0] > 1.5 * off[1] and off[-1] > 1.5 * off[-2] and off[2] > 1.5 * off[1]


def test_figure_is_a_png_with_one_column_per_light():
    rng = np.random.default_rng(2)
    n = 1500
    yaw = rng.uniform(-44, 44, n)
    light = rng.choice(["left", "center", "right"], n)
    latents = rng.normal(size=(n, 3, 4, 4)) * 0.1 + 0.01 * yaw.reshape(-1, 1, 1, 1)
    png = trajectory_figure(lines_for(latents, yaw, light), EDGES)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.width > 1.5 * image.height   # 3 panels across, 2 down
    only_any = lines_for(latents, yaw, ["center"] * n)
    assert trajectory_figure([l for l in only_any if l.light == tr.ANY_LIGHT], EDGES) is None
