"""Contact sheets: one row per source, its reconstruction then one render per delta."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from headrot.report.grid import image_grid

# Sheets are looked at by people: small renders are magnified to about this many pixels.
TARGET_CELL_PX = 96
# Light grey between cells: white or black renders must not merge with the margin.
BACKGROUND = (200, 200, 200)


def contact_sheet(
    rows: Sequence[tuple[np.ndarray, Sequence[np.ndarray]]],
    column_labels: Sequence[str],
    row_labels: Sequence[str] | None = None,
    source_label: str = "G(z)",
) -> Image.Image:
    """A PIL image: row i = rows[i][0] (the source, uint8 [S,S,3]) then rows[i][1] (its renders).

    column_labels name the render columns (e.g. the deltas); the source column is `source_label`.
    Every row must hold the same number of renders, all the source's size."""
    if not rows:
        raise ValueError("contact_sheet: no rows")
    n_cols = len(rows[0][1])
    if len(column_labels) != n_cols:
        raise ValueError(f"contact_sheet: {len(column_labels)} column labels for {n_cols} renders per row")
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"contact_sheet: {len(row_labels)} row labels for {len(rows)} rows")
    cells = []
    for i, (source, renders) in enumerate(rows):
        if len(renders) != n_cols:
            raise ValueError(f"contact_sheet: row {i} has {len(renders)} renders, expected {n_cols}")
        cells.append(np.asarray(source, dtype=np.uint8))
        cells.extend(np.asarray(r, dtype=np.uint8) for r in renders)
    images = np.stack(cells)
    upscale = max(1, TARGET_CELL_PX // images.shape[1])
    return image_grid(images, nrow=n_cols + 1, upscale=upscale, row_labels=row_labels,
                      col_labels=[source_label, *column_labels], background=BACKGROUND)
