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


# ---------------------------------------------------------------------------
# Colours a turn cannot make


def novel_colour_share(images: np.ndarray, references: np.ndarray, tau: float = 0.12,
                       max_reference_pixels: int = 1024) -> np.ndarray:
    """float [N]: the share of each image's pixels whose colour lies further than `tau` (RGB in
    0..1, Euclidean) from every pixel colour of its reference.

    A head turned by 30 degrees shows the same hair, skin, background and light from another side:
    it rearranges the unmoved render's colours and makes few new ones. The breaks the global
    colour map cannot hide (a blue blotch over a face, a dark band across the eyes, a face lit
    from the other side) are new colours: on the demo model's renders the broken ones had 4-28%
    of their pixels so, the clean ones under 3% (bench/NOTES.md). `references`: [N,S,S,3] or
    [S,S,3]; a reference larger than `max_reference_pixels` is subsampled on a regular stride.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"novel_colour_share: expected images [N,S,S,3], got {images.shape}")
    if not tau > 0:
        raise ValueError(f"novel_colour_share: tau must be > 0, got {tau}")
    references = np.broadcast_to(np.asarray(references), images.shape)
    out = np.empty(len(images), np.float64)
    for i, (image, ref) in enumerate(zip(images, references)):
        a = image.reshape(-1, 3).astype(np.float32) / 255.0
        b = ref.reshape(-1, 3).astype(np.float32) / 255.0
        b = b[:: max(1, -(-len(b) // max_reference_pixels))]
        # squared distances by |a|^2 + |b|^2 - 2ab: one matmul per image, no [P, R, 3] temporary
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        out[i] = float((d2.min(axis=1) > tau * tau).mean())
    return out
