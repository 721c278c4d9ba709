"""PSNR and SSIM (headrot.evaluate.metrics): exact values on cases with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from headrot.evaluate.metrics import gaussian_window, psnr, psnr_batch, ssim, ssim_batch


def _face(seed=0, size=32):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = 128 + 60 * np.sin(x / 5.0) * np.cos(y / 7.0)
    return np.clip(base[..., None] + rng.normal(0, 10, (size, size, 3)), 0, 255).astype(np.uint8)


def test_psnr_identical_is_the_cap():
    a = _face()
    assert psnr(a, a) == 100.0
    assert psnr(a, a, cap=60.0) == 60.0
    assert np.all(psnr_batch(np.stack([a, a]), np.stack([a, a])) == 100.0)


def test_psnr_of_a_constant_offset():
    a = np.full((16, 16, 3), 100, np.uint8)
    b = a + np.uint8(5)  # MSE = 25
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / 25), abs=1e-9)
    # Model range [-1, 1]: an offset of 0.1 on data range 2 -> 10 log10(4 / 0.01).
    x = np.zeros((8, 8, 3))
    assert psnr(x, x + 0.1, data_range=2.0) == pytest.approx(10 * math.log10(400), abs=1e-9)


def test_psnr_batch_is_per_image_and_never_above_the_cap():
    a = np.zeros((3, 8, 8, 3))
    b = a.copy()
    b[1] += 1.0
    b[2] += 1e-9  # tiny error: above the cap before clipping
    out = psnr_batch(a, b)
    assert out[0] == 100.0 and out[2] == 100.0
    assert out[1] == pytest.approx(10 * math.log10(255 ** 2), abs=1e-9)


def test_ssim_identical_is_one_and_noise_lowers_it():
    a = _face()
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(1)
    mild = np.clip(a + rng.normal(0, 5, a.shape), 0, 255)
    strong = np.clip(a + rng.normal(0, 40, a.shape), 0, 255)
    s_mild, s_strong = ssim(a, mild), ssim(a, strong)
    assert 0 < s_strong < s_mild < 1
    assert ssim(a, strong, channel="luma") < ssim(a, mild, channel="luma") < 1


def test_ssim_of_constant_images_matches_the_formula():
    # Flat images: variances and covariance vanish, SSIM = (2 m1 m2 + C1) / (m1^2 + m2^2 + C1).
    a, b = np.full((20, 20), 100.0), np.full((20, 20), 140.0)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 140 + c1) / (100 ** 2 + 140 ** 2 + c1)
    assert ssim(a, b) == pytest.approx(expected, rel=1e-12)


def test_ssim_batch_small_images_and_window():
    assert gaussian_window().sum() == pytest.approx(1.0)
    a = np.stack([_face(0, 8), _face(1, 8)])
    out = ssim_batch(a, a)
    assert out.shape == (2,) and np.allclose(out, 1.0)
    with pytest.raises(ValueError):
        ssim(a[0], a[0][:7])


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    a = torch.zeros(4, 4, 3)
    assert psnr(a, a + 0.5, data_range=1.0) == pytest.approx(10 * math.log10(4), abs=1e-6)


def test_block_psnr_sees_recoloured_regions_not_fine_misplacement():
    """The evaluate stage's colour figure: a render one pixel off its truth keeps its block colours
    (the full PSNR drops), a render whose 'hair' changed colour loses them."""
    from headrot.evaluate.metrics import block_psnr_batch

    rng = np.random.default_rng(0)
    truth = np.kron(rng.integers(60, 200, (1, 2, 2, 3)), np.ones((1, 16, 16, 1))).astype(np.uint8)   # regions
    truth = np.clip(truth + rng.normal(0, 20, truth.shape), 0, 255).astype(np.uint8)   # fine detail
    shifted = np.roll(truth, 1, axis=2)
    recoloured = truth.copy()
    recoloured[:, :16] = np.clip(recoloured[:, :16].astype(int) + (60, -30, -60), 0, 255)   # the "hair"
    assert block_psnr_batch(truth, truth)[0] == 100.0
    assert block_psnr_batch(shifted, truth)[0] - psnr_batch(shifted, truth)[0] > 5
    assert block_psnr_batch(recoloured, truth)[0] < block_psnr_batch(shifted, truth)[0] - 5
    with pytest.raises(ValueError, match="divisible by 4"):
        block_psnr_batch(truth[:, :30, :30], truth[:, :30, :30])
