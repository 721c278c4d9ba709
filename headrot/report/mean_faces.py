"""The paper's figure of mean faces: the mean image per (light class x yaw bin), with counts."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

# Each cell is upscaled so a 32x32 mean face is readable in a report.
CELL = 96
MARGIN = 64


def mean_face_grid(sums: np.ndarray, counts: np.ndarray, lights: Sequence[str],
                   edges: Sequence[float]) -> Image.Image:
    """sums [L, B, S, S, 3] float64 and counts [L, B] -> a labelled grid (rows: light, columns: yaw bin).

    An empty cell stays grey with "n=0": a missing combination is visible, not hidden.
    """
    n_lights, n_bins = counts.shape
    width = MARGIN + n_bins * CELL
    height = MARGIN // 2 + n_lights * (CELL + 16) + 8
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for b in range(n_bins):
        draw.text((MARGIN + b * CELL + 6, 6), f"yaw {edges[b]:+.0f}..{edges[b + 1]:+.0f}", fill=(0, 0, 0))
    for li in range(n_lights):
        y = MARGIN // 2 + li * (CELL + 16)
        draw.text((4, y + CELL // 2 - 6), f"light\n{lights[li]}", fill=(0, 0, 0))
        for b in range(n_bins):
            x = MARGIN + b * CELL
            n = int(counts[li, b])
            if n:
                mean = np.clip(sums[li, b] / n, 0, 255).astype(np.uint8)
                cell = Image.fromarray(mean).resize((CELL - 4, CELL - 4), Image.Resampling.NEAREST)
            else:
                cell = Image.new("RGB", (CELL - 4, CELL - 4), (200, 200, 200))
            sheet.paste(cell, (x + 2, y + 2))
            draw.text((x + 4, y + CELL + 1), f"n={n}", fill=(0, 0, 0))
    return sheet
