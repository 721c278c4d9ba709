"""Schedule and DDIM sampler against analytic stand-in networks, with exact expected numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from headrot.model.sampler import advance, ddim_inversion, denoise, noise_for_seeds, reverse_diffusion
from headrot.model.schedule import ScheduleConfig, diffusion_schedule

START, END = math.acos(0.95), math.acos(0.02)


def rates(t: float) -> tuple[float, float]:
    """(noise, signal) by hand, float64."""
    angle = START + t * (END - START)
    return math.sin(angle), math.cos(angle)


class Linear(nn.Module):
    """eps(x, var) = c * x; records the variances it was called with."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c
        self.variances: list[torch.Tensor] = []

    def forward(self, x, noise_variances):
        self.variances.append(noise_variances.detach().clone())
        return self.c * x


class Zero(nn.Module):
    def forward(self, x, noise_variances):
        return torch.zeros_like(x)


def arange_images(n: int = 2) -> torch.Tensor:
    return (torch.arange(n * 3 * 2 * 2, dtype=torch.float64).reshape(n, 3, 2, 2) / 10.0) - 1.0


# ---------------------------------------------------------------------------
# Schedule


def test_schedule_endpoints_and_unit_norm():
    noise, signal = diffusion_schedule(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    assert signal[0].item() == pytest.approx(0.95, abs=1e-12)
    assert signal[2].item() == pytest.approx(0.02, abs=1e-12)
    assert signal[1].item() == pytest.approx(rates(0.5)[1], abs=1e-12)
    np.testing.assert_allclose((signal**2 + noise**2).numpy(), 1.0, atol=1e-12)
    times = torch.rand(4, 1, 1, 1)
    n, s = diffusion_schedule(times)
    assert n.shape == s.shape == (4, 1, 1, 1) and n.dtype == torch.float32


def test_schedule_config_checked():
    noise, signal = diffusion_schedule(torch.tensor([0.0, 1.0]), ScheduleConfig(0.9, 0.1))
    assert signal.tolist() == pytest.approx([0.9, 0.1])
    with pytest.raises(ValueError, match="min_signal_rate"):
        ScheduleConfig(max_signal_rate=0.5, min_signal_rate=0.6)


# ---------------------------------------------------------------------------
# denoise / reverse_diffusion, exact values


def test_denoise_passes_variance_and_inverts_mixture():
    net = Linear(0.5)
    x = arange_images()
    noise_rates = torch.full((2, 1, 1, 1), 0.6, dtype=torch.float64)
    signal_rates = torch.full((2, 1, 1, 1), 0.8, dtype=torch.float64)
    eps, x0 = denoise(net, x, noise_rates, signal_rates)
    torch.testing.assert_close(net.variances[0], torch.full((2, 1, 1, 1), 0.36, dtype=torch.float64))
    torch.testing.assert_close(eps, 0.5 * x)
    torch.testing.assert_close(x0, (x - 0.6 * 0.5 * x) / 0.8)


def test_reverse_diffusion_one_step():
    c = 0.3
    x_T = arange_images()
    out = reverse_diffusion(Linear(c), x_T, steps=1)
    sigma, alpha = rates(1.0)
    torch.testing.assert_close(out, x_T * (1 - c * sigma) / alpha)


def test_reverse_diffusion_two_steps_by_hand():
    c = 0.3
    net = Linear(c)
    x_T = arange_images()
    out = reverse_diffusion(net, x_T, steps=2)
    # step 0 at t=1, step 1 at t=0.5 (the Keras loop)
    s1, a1 = rates(1.0)
    s2, a2 = rates(0.5)
    x = x_T.numpy()
    eps = c * x
    x0 = (x - s1 * eps) / a1
    x_half = a2 * x0 + s2 * eps
    expected = (x_half - s2 * c * x_half) / a2
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
    assert [v.flatten()[0].item() for v in net.variances] == pytest.approx([s1**2, s2**2])


def test_a_guide_rewrites_the_first_steps_x0_estimates_and_keeps_the_predicted_noise():
    """reverse_diffusion(guide=, guide_steps=g): the first g x_0 estimates become guide(x_0
    estimate) before re-noising with the network's noise (the render stage's colour guidance)."""
    c, k = 0.3, 0.25
    net = Linear(c)
    x_T = arange_images()
    constant = lambda x0: torch.full_like(x0, k)   # noqa: E731
    out = reverse_diffusion(net, x_T, steps=2, guide=constant, guide_steps=1)
    s1, _ = rates(1.0)
    s2, a2 = rates(0.5)
    x_half = a2 * k + s2 * c * x_T.numpy()          # the guided estimate, re-noised with eps = c x_T
    np.testing.assert_allclose(out.numpy(), (x_half - s2 * c * x_half) / a2, rtol=1e-12)
    # guide_steps covering the whole path: the last estimate is the guide's too
    torch.testing.assert_close(reverse_diffusion(net, x_T, steps=2, guide=constant, guide_steps=2),
                               torch.full_like(x_T, k))
    # the identity guide, and guide_steps 0, are the plain sampler
    plain = reverse_diffusion(net, x_T, steps=3)
    torch.testing.assert_close(reverse_diffusion(net, x_T, steps=3, guide=lambda x0: x0, guide_steps=3), plain)
    torch.testing.assert_close(reverse_diffusion(net, x_T, steps=3, guide=constant, guide_steps=0), plain)
    with pytest.raises(ValueError, match="needs a guide"):
        reverse_diffusion(net, x_T, steps=2, guide_steps=1)


def test_zero_network_scales_by_final_signal():
    # eps = 0: every x_0 estimate is x_T / alpha(1), whatever the number of steps.
    x_T = arange_images()
    for steps in (1, 3, 10):
        torch.testing.assert_close(reverse_diffusion(Zero(), x_T, steps=steps), x_T / 0.02)


def test_reverse_diffusion_bad_steps():
    with pytest.raises(ValueError, match="steps"):
        reverse_diffusion(Zero(), arange_images(), steps=0)


def test_batching_invariance_and_gradients():
    torch.manual_seed(0)
    from headrot.model.unet import PRESETS, UNet

    net = UNet(PRESETS["tiny"]).double()
    nn.init.normal_(net.output_conv.weight, std=0.1)  # not the zero init, so the net matters
    # float64: float32 convolutions may pick other kernels for other batch sizes,
    # and the sampler amplifies those last-bit differences by up to 1/0.02.
    x_T = noise_for_seeds([1, 2, 3], (3, 16, 16), dtype=torch.float64)
    with torch.no_grad():
        batch = reverse_diffusion(net, x_T, steps=3)
        rows = torch.cat([reverse_diffusion(net, x_T[i : i + 1], steps=3) for i in range(3)])
    torch.testing.assert_close(batch, rows, rtol=1e-9, atol=1e-9)
    z = x_T.clone().requires_grad_(True)
    reverse_diffusion(net, z, steps=2).abs().mean().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_advance_then_finish_is_the_whole_path():
    """Editing mid-path (render's local_edit_step) rests on this: the first k steps and the rest,
    run apart, give the one path's image, for every k; advance by 0 is x_T itself."""
    torch.manual_seed(0)
    from headrot.model.unet import PRESETS, UNet

    net = UNet(PRESETS["tiny"]).double()
    nn.init.normal_(net.output_conv.weight, std=0.1)
    x_T = noise_for_seeds([4, 5], (3, 16, 16), dtype=torch.float64)
    with torch.no_grad():
        whole = reverse_diffusion(net, x_T, steps=4)
        assert torch.equal(advance(net, x_T, 4, 0), x_T)
        for k in (1, 2, 3):
            mid = advance(net, x_T, 4, k)
            assert not torch.allclose(mid, x_T)
            torch.testing.assert_close(reverse_diffusion(net, mid, steps=4, start_step=k), whole, rtol=0, atol=0)
    for bad in (-1, 4):
        with pytest.raises(ValueError, match="start_step"):
            reverse_diffusion(net, x_T, steps=4, start_step=bad)
        with pytest.raises(ValueError, match="to_step"):
            advance(net, x_T, 4, bad)


# ---------------------------------------------------------------------------
# Inversion


def test_inversion_zero_network_round_trip_exact():
    x = arange_images()
    z = ddim_inversion(Zero(), x, steps=4)
    torch.testing.assert_close(z, 0.02 * x)
    torch.testing.assert_close(reverse_diffusion(Zero(), z, steps=4), x)


def test_inversion_one_step_fixed_point_by_hand():
    # One step: the only point is t = 1; x = alpha*img + sigma*c*x solved by
    # k fixed-point iterations from x = alpha*img gives alpha*img*sum_{j<=k} (sigma*c)^j.
    c = 0.3
    x = arange_images()
    sigma, alpha = rates(1.0)
    for k in (0, 1, 2, 5):
        z = ddim_inversion(Linear(c), x, steps=1, fixed_point_iterations=k)
        series = sum((sigma * c) ** j for j in range(k + 1))
        np.testing.assert_allclose(z.numpy(), alpha * x.numpy() * series, rtol=1e-12)


class GaussianDenoiser(nn.Module):
    """The exact noise predictor for data ~ N(0, s^2 I): a smooth, consistent stand-in."""

    def __init__(self, s: float) -> None:
        super().__init__()
        self.s = s

    def forward(self, x, noise_variances):
        sigma2 = noise_variances
        alpha2 = 1.0 - sigma2
        return x * sigma2.sqrt() / (alpha2 * self.s**2 + sigma2)


def test_inversion_approximately_inverts_a_smooth_network():
    x = arange_images() * 0.5
    net = GaussianDenoiser(0.5)
    errors = []
    for k0, k1 in [(2, 0), (5, 2), (20, 5)]:
        z = ddim_inversion(net, x, steps=10, fixed_point_iterations=k0, step_iterations=k1)
        errors.append((reverse_diffusion(net, z, steps=10) - x).abs().max().item())
    # Measured: [0.112, 0.0112, 0.00127] for images in [-0.5, 0.65].
    assert errors[0] < 0.2 and errors[1] < 0.02 and errors[2] < 0.002, errors
    # More network calls, better inverse; walking more steps too.
    z = ddim_inversion(net, x, steps=100, fixed_point_iterations=20, step_iterations=5)
    assert (reverse_diffusion(net, z, steps=100) - x).abs().max().item() < errors[2]


# ---------------------------------------------------------------------------
# Seeds


def test_noise_for_seeds_deterministic_and_batch_independent():
    a = noise_for_seeds([7, 8, 9], (3, 4, 4))
    b = noise_for_seeds([9, 7], (3, 4, 4))
    assert a.shape == (3, 3, 4, 4) and a.dtype == torch.float32
    torch.testing.assert_close(a[2], b[0], rtol=0, atol=0)
    torch.testing.assert_close(a[0], b[1], rtol=0, atol=0)
    torch.testing.assert_close(a[0], noise_for_seeds([7], (3, 4, 4))[0], rtol=0, atol=0)
    assert not torch.equal(a[0], a[1])
    assert noise_for_seeds([], (3, 4, 4)).shape == (0, 3, 4, 4)
    assert noise_for_seeds([1], (2,), dtype=torch.float64).dtype == torch.float64
