"""Image quality metrics: PSNR and SSIM, pure numpy (torch tensors accepted), exact and tested.

Inputs are images HWC (one) or NHWC (a batch), uint8 or float, compared on the scale
given by `data_range` (255 for uint8 images; 2.0 for the model's [-1, 1] floats).
Torch tensors are converted with `.detach().cpu().numpy()`; they must be HWC/NHWC too
(use headrot.report.grid.to_uint8 for NCHW model outputs).

PSNR = 10 log10(data_range^2 / MSE), MSE over every pixel and channel of one image.
Identical images have MSE 0 and an infinite PSNR: we return `cap` (100 dB by default)
instead, so means over a set stay finite; every PSNR is also clipped to at most `cap`.

SSIM is the standard one of Wang, Bovik, Sheikh and Simoncelli (IEEE TIP 2004):
an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, C = (K * data_range)^2,
the SSIM map over the window's 'valid' positions (no padding), averaged. Colour images
are scored per channel and the channel means averaged (`channel="mean"`, what
scikit-image's channel_axis does) or on the BT.601 luminance (`channel="luma"`).
Images smaller than the window use the largest odd window that fits (a 5x5 image: 5x5).
"""
from __future__ import annotations

import numpy as np

WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03
LUMA = np.array([0.299, 0.587, 0.114])


def _array(x) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(x, dtype=np.float64)


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _array(a), _array(b)
    if a.shape != b.shape:
        raise ValueError(f"metrics: images of different shapes {a.shape} and {b.shape}")
    if a.ndim not in (2, 3, 4):
        raise ValueError(f"metrics: expected HW, HWC or NHWC images, got shape {a.shape}")
    return a, b


# ---------------------------------------------------------------------------
# PSNR


def psnr_batch(a, b, data_range: float = 255.0, cap: float = 100.0) -> np.ndarray:
    """Per-image PSNR (dB) of two NHWC batches: [N] float64, each at most `cap`."""
    a, b = _pair(a, b)
    if a.ndim < 4:
        raise ValueError(f"psnr_batch: expected NHWC batches, got shape {a.shape}")
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        value = 10.0 * np.log10(float(data_range) ** 2 / mse)
    return np.minimum(np.where(mse > 0, value, cap), cap)


def block_psnr_batch(a, b, block: int = 4) -> np.ndarray:
    """Per-image PSNR (dB) of the two NHWC batches' block-x-block mean colours: how far a render's
    colours are from the reference's region by region, whatever its fine detail and a pixel or two
    of misplacement (which the full-resolution PSNR mostly measures)."""
    a, b = _pair(a, b)
    if a.ndim < 4 or a.shape[1] % block or a.shape[2] % block:
        raise ValueError(f"block_psnr_batch: expected NHWC batches with sides divisible by {block}, got {a.shape}")
    pool = lambda x: x.reshape(len(x), x.shape[1] // block, block, x.shape[2] // block, block, -1).mean((2, 4))  # noqa: E731
    return psnr_batch(pool(a), pool(b))


def psnr(a, b, data_range: float = 255.0, cap: float = 100.0) -> float:
    """PSNR (dB) of one image pair (HW or HWC); identical images give `cap`."""
    a, b = _pair(a, b)
    return float(psnr_batch(a[None], b[None], data_range, cap)[0])


# ---------------------------------------------------------------------------
# SSIM


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> np.ndarray:
    """The normalised 1-D Gaussian taps (the 2-D window is their outer product)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    w = np.exp(-(x ** 2) / (2.0 * sigma ** 2))
    return w / w.sum()


def _filter_valid(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of [N, H, W] over H then W."""
    k = len(taps)
    h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
    rows = sum(taps[i] * x[:, i:i + h, :] for i in range(k))
    return sum(taps[i] * rows[:, :, i:i + w] for i in range(k))


def _ssim_planes(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    """Mean SSIM of each plane pair, x and y [N, H, W] -> [N]."""
    size = min(WINDOW, x.shape[1], x.shape[2])
    size -= (size + 1) % 2  # odd
    taps = gaussian_window(size, SIGMA)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_x, mu_y = _filter_valid(x, taps), _filter_valid(y, taps)
    xx, yy, xy = _filter_valid(x * x, taps), _filter_valid(y * y, taps), _filter_valid(x * y, taps)
    var_x, var_y, cov = xx - mu_x ** 2, yy - mu_y ** 2, xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)
    return (num / den).reshape(len(x), -1).mean(axis=1)


def ssim_batch(a, b, data_range: float = 255.0, channel: str = "mean") -> np.ndarray:
    """Per-image SSIM of two NHWC (or NHW grey) batches: [N] float64 in [-1, 1], 1 when identical."""
    a, b = _pair(a, b)
    if a.ndim == 3:  # NHW grey
        a, b = a[..., None], b[..., None]
    if a.ndim != 4:
        raise ValueError(f"ssim_batch: expected NHWC batches, got shape {a.shape}")
    if channel == "luma" and a.shape[-1] == 3:
        a, b = (a @ LUMA)[..., None], (b @ LUMA)[..., None]
    elif channel not in ("mean", "luma"):
        raise ValueError(f"ssim: channel must be 'mean' or 'luma', got {channel!r}")
    n, _, _, c = a.shape
    planes_a = np.moveaxis(a, -1, 1).reshape(n * c, a.shape[1], a.shape[2])
    planes_b = np.moveaxis(b, -1, 1).reshape(n * c, b.shape[1], b.shape[2])
    return _ssim_planes(planes_a, planes_b, float(data_range)).reshape(n, c).mean(axis=1)


def ssim(a, b, data_range: float = 255.0, channel: str = "mean") -> float:
    """SSIM of one image pair (HW or HWC)."""
    a, b = _pair(a, b)
    if a.ndim == 4:
        raise ValueError("ssim: one image (HW or HWC); use ssim_batch for batches")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    return float(ssim_batch(a[None], b[None], data_range, channel)[0])
