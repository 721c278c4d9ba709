"""Colours kept through a move: the render's colours mapped onto the unmoved render's.

On the demo model a turned head also shifts its colours: hair from brown to orange or black,
backgrounds to another hue (bench/NOTES.md, issues 14 and 15), and the latent-space guards
(orthogonal steps, the corrector) hold them only to first order. A head turn by 30 degrees
hardly changes an image's colour distribution (the same hair, skin, background and light, seen
from another side), so each moved render gets the colour distribution of its own unmoved
render G(z) back: the linear optimal-transport map between the two pixel clouds (Pitie &
Kokaram, "The linear Monge-Kantorovitch linear colour mapping for example-based colour
transfer", CVMP 2007): the affine map x -> T (x - mu_x) + mu_ref with

    T = S_x^-1/2 (S_x^1/2 S_ref S_x^1/2)^1/2 S_x^-1/2

which moves the render's mean and 3x3 colour covariance onto the reference's with the least
squared pixel change. It changes colours only, never where a pixel is, so the pose a render
shows stays. The render stage applies it before the reader reads a render (calibration
judges what is written) and after the guards have judged the decoded one (a blackened head,
recoloured, would pass a colour guard). Measured on the demo model's renders (32 faces, PSNR
against ground truth at the target yaw): +0.5 to +1.4 dB at every delta over the same renders
unmapped (bench/NOTES.md).

Pure numpy; per image, a 3x3 eigen-decomposition.
"""
from __future__ import annotations

import numpy as np

# Added to both covariances (in squared 0..255 units): a flat image (one colour, a singular
# covariance) gets a finite map instead of a division by zero, and colour noise this small
# (about 1/255 per channel) is never amplified.
RIDGE = 1.0


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root (eigenvalues clipped at 0 against rounding)."""
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.maximum(w, 0.0))) @ v.T


def transfer_map(image: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T [3,3], mu_image [3], mu_reference [3]) of the linear Monge-Kantorovich colour map."""
    x = np.asarray(image, np.float64).reshape(-1, 3)
    r = np.asarray(reference, np.float64).reshape(-1, 3)
    mx, mr = x.mean(0), r.mean(0)
    cx = np.cov(x - mx, rowvar=False) + RIDGE * np.eye(3)
    cr = np.cov(r - mr, rowvar=False) + RIDGE * np.eye(3)
    half = _sqrtm(cx)
    inv_half = np.linalg.inv(half)
    return inv_half @ _sqrtm(half @ cr @ half) @ inv_half, mx, mr


def keep_colours(images: np.ndarray, references: np.ndarray) -> np.ndarray:
    """uint8 [N,S,S,3]: each image with the colour distribution (mean and covariance of its
    pixels) of its reference, by the least-change linear map. `references`: [N,S,S,3] (one per
    image) or [S,S,3] (one for all)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"keep_colours: expected images [N,S,S,3], got {images.shape}")
    references = np.broadcast_to(np.asarray(references), images.shape)
    out = np.empty(images.shape, np.uint8)
    for i, (image, ref) in enumerate(zip(images, references)):
        t, mx, mr = transfer_map(image, ref)
        mapped = (image.reshape(-1, 3).astype(np.float64) - mx) @ t.T + mr
        out[i] = np.clip(np.rint(mapped), 0, 255).astype(np.uint8).reshape(image.shape)
    return out
