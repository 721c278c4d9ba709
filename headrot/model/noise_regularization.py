"""DDIM inversion whose noise predictions are kept Gaussian-like: pix2pix-zero's regularised inversion.

Parmar et al. 2023 ("Zero-shot Image-to-Image Translation", section 3.1) observe that the noise maps
DDIM inversion produces are not white Gaussian noise: the image leaves structure in them (here, the
source head's outline), and an edit drawn from such a map keeps that structure where the edit moved
the content. Their inversion regularises each predicted noise eps before the step uses it, with a few
gradient steps on two losses of eps alone (no network call):

- auto-correlation: per image and channel, at every scale (average-pooled by 2 down to 8 px), the
  squared mean of eps times eps rolled by a random shift along each axis; white noise has none;
- KL to N(0, 1) of the map's mean and variance: var + mean^2 - 1 - log var.

On the demo the rings beside the head in a far turn lie where the source's outline was, which
looked like such a structure; at half their weights the rings stayed and, once calibrated, the
turns were no better (bench/NOTES.md, twenty-sixth session), so `render.inversion_regularization`
is off there.

    ddim_inversion(regularized(at_yaw(net, yaw), seed=0), x)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# pix2pix-zero's published settings (5 rounds of 5 auto-correlation steps and a KL step, each weighted 20)
ROUNDS, ROLLS, AUTO_CORRELATION_WEIGHT, KL_WEIGHT = 5, 5, 20.0, 20.0
# The most one gradient step moves a value. The auto-correlation's gradient grows as eps cubed: on a
# trained network's noise predictions no step comes near this (on the demo's 32 test faces, inverted
# at strength 0.5, the largest moved a value by 0.20, the 99th percentile by 0.09), but on a map far
# from unit scale (an untrained network's) the unbounded steps diverge to NaN.
MAX_STEP = 1.0


def auto_correlation(eps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per image [N]: the sum over channels and scales of the squared mean of eps times eps rolled by
    a random shift (one per scale, drawn from `generator`) along rows, and along columns."""
    loss = eps.new_zeros(eps.shape[0])
    noise = eps
    while True:
        shift = int(torch.randint(max(noise.shape[-1] // 2, 1), (1,), generator=generator))
        for dim in (2, 3):
            loss = loss + ((noise * torch.roll(noise, shifts=shift, dims=dim)).mean(dim=(2, 3)) ** 2).sum(1)
        if noise.shape[-1] <= 8:
            return loss
        noise = F.avg_pool2d(noise, kernel_size=2)


def kl_to_standard_normal(eps: torch.Tensor) -> torch.Tensor:
    """Per image [N]: the KL term of its values' mean and variance against N(0, 1)."""
    flat = eps.flatten(1)
    mean, var = flat.mean(1), flat.var(1)
    return var + mean**2 - 1 - torch.log(var + 1e-7)


def regularize_noise(eps: torch.Tensor, generator: torch.Generator, rounds: int = ROUNDS, rolls: int = ROLLS,
                     auto_correlation_weight: float = AUTO_CORRELATION_WEIGHT,
                     kl_weight: float = KL_WEIGHT) -> torch.Tensor:
    """eps [N,C,H,W] moved by gradient steps towards white N(0, 1) noise. The losses are sums of
    per-image terms, so each image's steps are its own whatever the batch."""
    with torch.inference_mode(False), torch.enable_grad():
        e = eps.detach().clone()
        for _ in range(rounds):
            for _ in range(rolls):
                var = e.detach().requires_grad_(True)
                grad, = torch.autograd.grad(auto_correlation(var, generator).sum(), var)
                e = e - (auto_correlation_weight / rolls * grad).clamp(-MAX_STEP, MAX_STEP)
            var = e.detach().requires_grad_(True)
            grad, = torch.autograd.grad(kl_to_standard_normal(var).sum(), var)
            e = e - (kl_weight * grad).clamp(-MAX_STEP, MAX_STEP)
    return e.detach().to(eps.dtype)


class Regularized:
    """`net` called as net(x_t, noise_variances), its noise prediction regularised (regularize_noise);
    `schedule` and `config` are the network's, as the sampler reads them."""

    def __init__(self, net, seed: int = 0, strength: float = 1.0):
        self.net, self.strength = net, strength
        self.schedule = getattr(net, "schedule", None)
        self.config = getattr(net, "config", None)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, noisy_images: torch.Tensor, noise_variances: torch.Tensor) -> torch.Tensor:
        return regularize_noise(self.net(noisy_images, noise_variances), self.generator,
                                auto_correlation_weight=AUTO_CORRELATION_WEIGHT * self.strength,
                                kl_weight=KL_WEIGHT * self.strength)


def regularized(net, seed: int = 0, strength: float = 1.0) -> Regularized:
    """`net` with regularised noise predictions, for ddim_inversion (never for drawing: the sampler
    must follow the network's own predictions); `strength` scales both losses' step weights."""
    return Regularized(net, seed, strength)
