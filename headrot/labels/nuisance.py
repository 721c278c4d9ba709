"""What must stay when a head turns: colour statistics of the regions a rotation drifted.

On the demo model, moving x_T along a plain pose direction turned heads but also blackened
hair, darkened skin and recoloured backgrounds (bench/NOTES.md, issue 14). These statistics
name those changes so the fit can find the latent directions along which they move
(headrot.directions.NuisanceSums) and keep the pose step off them.

Regions of an aligned S x S face (CelebA's central crop): the border (background and
shoulders), the central square (skin), the top strip above the centre (hair). Each gives
its mean R, G, B in [0, 1], plus the whole image's: 12 statistics. The light azimuth the
labeller reads is appended by the samples stage (light must stay too: the paper's point).
"""
from __future__ import annotations

import numpy as np

REGIONS = ("image", "border", "centre", "hair")
NAMES = tuple(f"{region}_{c}" for region in REGIONS for c in "rgb")


def region_masks(size: int) -> dict[str, np.ndarray]:
    """Boolean [S,S] masks of the regions (fractions of S, so the same at every size)."""
    border = np.zeros((size, size), bool)
    edge = max(1, size // 6)
    border[:edge] = border[-max(1, size // 8):] = True
    border[:, :edge] = border[:, -edge:] = True
    centre = np.zeros((size, size), bool)
    centre[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = True
    hair = np.zeros((size, size), bool)
    hair[: size // 4, size // 4: 3 * size // 4] = True
    return {"image": np.ones((size, size), bool), "border": border, "centre": centre, "hair": hair}


def image_statistics(images: np.ndarray) -> np.ndarray:
    """[N, 12] float32: mean R, G, B of each region (NAMES order) of uint8 [N,S,S,3] images."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"image_statistics: expected uint8 [N,S,S,3], got {images.shape}")
    x = images.astype(np.float32) / 255.0
    masks = region_masks(images.shape[1])
    return np.concatenate([x[:, masks[r]].mean(axis=1) for r in REGIONS], axis=1).astype(np.float32)
