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
# The full colour distribution: sliced optimal transport, its grain smoothed away

# Random 3-D rotations of sliced transport (Pitie, Kokaram & Dahyot, "Automated colour grading
# using colour distribution transfer", CVIU 2007). With 30 (the only count measured) the raw
# transport left a median 0.1% of a demo render's pixels further than tau = 0.12 from its
# reference's colours, against 1.3% before it at -30 (bench/NOTES.md, fifteenth session).
TRANSPORT_ITERATIONS = 30
# The guided filter (He, Sun & Tang, "Guided image filtering", TPAMI 2013) that smooths the
# transport's per-pixel colour change, with the render as its guide: radius 4 and eps 0.01
# measured best on the demo's renders (PSNR against ground truth; bench/NOTES.md, fifteenth session).
SMOOTH_RADIUS = 4
SMOOTH_EPS = 0.01


def _sliced_transport(x: np.ndarray, r: np.ndarray, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """[P,3] colours moved so that their distribution is r's [R,3]: per iteration a random
    rotation, then along each rotated axis every pixel takes the reference's value at its own
    quantile (exact 1-D transport by sorting)."""
    levels_x = (np.arange(len(x)) + 0.5) / len(x)
    levels_r = (np.arange(len(r)) + 0.5) / len(r)
    for _ in range(iterations):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        xp, rp = x @ q, r @ q
        moved = np.empty_like(xp)
        for k in range(3):
            moved[np.argsort(xp[:, k], kind="stable"), k] = np.interp(levels_x, levels_r, np.sort(rp[:, k]))
        x = x + (moved - xp) @ q.T
    return x


def _box(a: np.ndarray, r: int) -> np.ndarray:
    """[S,S,C] mean over each (2r+1)^2 window (edges reflected), by summed-area table."""
    s, k = a.shape[0], 2 * r + 1
    c = np.pad(np.pad(a, ((r, r), (r, r), (0, 0)), mode="reflect").cumsum(0).cumsum(1), ((1, 0), (1, 0), (0, 0)))
    return (c[k:k + s, k:k + s] - c[:s, k:k + s] - c[k:k + s, :s] + c[:s, :s]) / (k * k)


def _guided(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """src [S,S,C] smoothed within the edges of guide [S,S,3] (uint8; its grey level in 0..1)."""
    g = guide.astype(np.float64).mean(-1, keepdims=True) / 255.0
    mg, ms = _box(g, r), _box(src, r)
    a = (_box(g * src, r) - mg * ms) / (_box(g * g, r) - mg * mg + eps)
    return _box(a, r) * g + _box(ms - a * mg, r)


def transport_colours(images: np.ndarray, references: np.ndarray, seed: int = 0) -> np.ndarray:
    """uint8 [N,S,S,3]: each image with the whole colour distribution of its reference, not only
    its mean and covariance (keep_colours): sliced optimal transport of the pixel colours, whose
    per-pixel colour change is then smoothed by a guided filter on the image itself.

    The linear map cannot undo a fault confined to one region (blonde hair drawn orange on a head
    whose skin and background kept their colours): the transport can, since the orange mass has
    nowhere to go but the reference's blonde. Per pixel, 1-D transport scatters neighbours of one
    colour to different quantiles (grain, salt and pepper); smoothing the change within the
    image's edges keeps it a recolouring of regions (the "regraining" of Pitie et al.). It moves
    no pixel, so the pose a render shows stays. `references`: [N,S',S',3] or [S',S',3] (any size);
    deterministic for a seed."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"transport_colours: expected square images [N,S,S,3], got {images.shape}")
    references = np.asarray(references)
    if references.ndim == 3:
        references = np.broadcast_to(references, (len(images), *references.shape))
    if references.ndim != 4 or len(references) != len(images) or references.shape[-1] != 3:
        raise ValueError(f"transport_colours: references {references.shape} do not pair with images {images.shape}")
    radius = min(SMOOTH_RADIUS, images.shape[1] - 1)   # reflection needs the window inside the image
    out = np.empty(images.shape, np.uint8)
    for i, (image, ref) in enumerate(zip(images, references)):
        x = image.reshape(-1, 3).astype(np.float64)
        moved = _sliced_transport(x, ref.reshape(-1, 3).astype(np.float64), TRANSPORT_ITERATIONS,
                                  np.random.default_rng(seed))
        change = _guided(image, (moved - x).reshape(image.shape), radius, SMOOTH_EPS)
        out[i] = np.clip(np.rint(image + change), 0, 255).astype(np.uint8)
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
