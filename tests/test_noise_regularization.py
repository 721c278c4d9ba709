"""headrot.model.noise_regularization: pix2pix-zero's regularised DDIM inversion."""
import torch

from headrot.model.noise_regularization import (auto_correlation, kl_to_standard_normal, regularize_noise,
                                                regularized)
from headrot.model.sampler import ddim_inversion, reverse_diffusion
from tests.test_pivotal import tiny_yaw_net


def structured(n=3, seed=0):
    """White noise with a bright square and a stripe pattern in it: the structure an image leaves."""
    eps = torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    eps[:, :, 4:10, 4:10] += 1.5
    eps[:, :, :, ::4] += 0.8
    return eps


def test_regularization_whitens_a_structured_noise_map_and_barely_moves_white_noise():
    eps = structured()
    out = regularize_noise(eps, torch.Generator().manual_seed(0))
    ac = lambda e: auto_correlation(e, torch.Generator().manual_seed(5))   # noqa: E731 (the same shifts)
    assert (ac(out) < 0.6 * ac(eps)).all()
    assert (kl_to_standard_normal(out) < kl_to_standard_normal(eps)).all()
    white = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    moved = (regularize_noise(white, torch.Generator().manual_seed(0)) - white).abs().mean()
    assert moved < 0.5 * (out - eps).abs().mean()


def test_each_image_is_regularized_as_it_would_be_alone():
    eps = structured(4)
    together = regularize_noise(eps, torch.Generator().manual_seed(3))
    for k in range(4):
        alone = regularize_noise(eps[k:k + 1], torch.Generator().manual_seed(3))
        assert torch.allclose(together[k:k + 1], alone, atol=1e-5)


def test_a_regularized_inversion_is_another_latent_and_the_wrapper_keeps_the_schedule():
    net = tiny_yaw_net()
    from headrot.model.conditioning import at_yaw

    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    plain = at_yaw(net, torch.tensor([5.0, -5.0]))
    wrapped = regularized(plain, seed=0, strength=0.5)
    assert wrapped.schedule is plain.schedule and wrapped.config is plain.config
    with torch.no_grad(), torch.inference_mode():   # as the render actor inverts
        z_plain = ddim_inversion(plain, x, 3, None, 2, 1)
        z_reg = ddim_inversion(wrapped, x, 3, None, 2, 1)
        again = ddim_inversion(regularized(plain, seed=0, strength=0.5), x, 3, None, 2, 1)
        assert torch.isfinite(z_reg).all() and torch.equal(z_reg, again)
        assert (z_reg - z_plain).abs().mean() > 1e-3
        assert reverse_diffusion(plain, z_reg, 3).shape == x.shape
