"""Pivotal tuning: a copy of the yaw generator fitted to one source before that source is turned.

Roich et al. 2022 ("Pivotal Tuning for Latent-based Editing of Real Images") edit a real face with
a GAN by first inverting it (the pivot), then fine-tuning the generator for a few steps so that the
pivot draws the face exactly, and editing with the tuned generator: the edit keeps what the
generator's prior lacked (a rare hair colour, an unusual light). The `yaw` render methods' pivot is
the source inverted under its labelled yaw, z_s; the edit is the yaw condition. On the demo the faces
are new to the yaw generator (seed 0 against its training set's seed 3), and the faults its turns
left were such heads' (a white cap of hair lost at +20/+30, a face lit yellow): a copy tuned 50 steps
on the source turns them with the cap and the skin kept (bench/NOTES.md, eighteenth session).

Each batch is half the pivot's own line, x_t = alpha_t x + sigma_t eps_s with z_s = alpha_1 x +
sigma_1 eps_s (a DDIM step that predicts eps_s stays on the line from z_s to the source: the coupled
training's reconstruction term), half fresh noise (the source's appearance at every noise level),
under the source's yaw. The learning rate is small on purpose: at 1e-4 fifty steps teach the copy
the source's pose as well, and it stops turning (the median pose error went from 2.7 to 7.9 deg);
at 2e-5 the copy turns a little less, and calibration (`-cal`) takes up most of it (on the demo the
median pose error rose by 0.44 deg; at 1e-5 by half that, but 000113 and 000070 broke again at +30).
"""
from __future__ import annotations

import copy

import torch

from headrot.model.conditioning import at_yaw
from headrot.model.sampler import denoise, trained_schedule
from headrot.model.schedule import diffusion_schedule
from headrot.train.steps import p2_weights

DEFAULT_LR = 2e-5


def pivot_noise(net, image: torch.Tensor, pivot: torch.Tensor) -> torch.Tensor:
    """eps_s of the pivot's line: z_s = alpha_1 image + sigma_1 eps_s (image and pivot [3,S,S] or
    [N,3,S,S], image in [-1, 1])."""
    sigma_1, alpha_1 = diffusion_schedule(torch.ones(1, device=pivot.device), trained_schedule(net))
    return (pivot - alpha_1 * image) / sigma_1


def tune_on_source(net, image: torch.Tensor, pivot: torch.Tensor, yaw: float, steps: int,
                   lr: float = DEFAULT_LR, seed: int = 0, batch: int = 8):
    """A copy of the yaw-conditioned `net`, in eval mode, fine-tuned `steps` AdamW steps on one source
    image [3,S,S] (in [-1, 1]) under its yaw; `pivot` [3,S,S] is the image's inversion under that yaw
    by `net`. `net` itself is not touched. Deterministic for a seed (on one device)."""
    if steps < 0:
        raise ValueError(f"tune_on_source: steps must be >= 0, got {steps}")
    tuned = net
    for done, tuned in enumerate(tuning(net, image, pivot, yaw, lr, seed, batch)):
        if done == steps:
            break
    return tuned.eval()


def tuning(net, image: torch.Tensor, pivot: torch.Tensor, yaw: float, lr: float = DEFAULT_LR, seed: int = 0,
           batch: int = 8):
    """The tuned copy after 0, 1, 2, ... steps (tune_on_source's run, one copy trained on in place:
    take what you need of it before asking for the next step)."""
    if batch < 2:
        raise ValueError(f"pivotal tuning: batch must be >= 2, got {batch}")
    # The render actor decodes under inference_mode; training needs autograd, and the copy's
    # parameters must be made outside inference mode to be trainable.
    with torch.inference_mode(False):
        tuned = copy.deepcopy(net).eval().requires_grad_(True)   # a render actor's generator is frozen
        image, pivot = image.clone(), pivot.clone()
        eps = pivot_noise(tuned, image, pivot)
        opt = torch.optim.AdamW(tuned.parameters(), lr=lr, weight_decay=0.0)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        schedule = trained_schedule(net)
        half = batch // 2
        x = image[None].expand(batch, -1, -1, -1)
        drawn = at_yaw(tuned, torch.full((batch,), float(yaw), device=image.device))
    while True:
        yield tuned.eval()
        with torch.inference_mode(False), torch.enable_grad():
            tuned.train()
            fresh = torch.randn((batch - half, *eps.shape), generator=gen).to(eps.device)
            noises = torch.cat([eps[None].expand(half, -1, -1, -1), fresh])
            times = torch.rand((batch, 1, 1, 1), generator=gen).to(eps.device)
            noise_rates, signal_rates = diffusion_schedule(times, schedule)
            pred, _ = denoise(drawn, signal_rates * x + noise_rates * noises, noise_rates, signal_rates)
            weights = p2_weights(noise_rates, signal_rates, 2.0, schedule=schedule)
            loss = ((pred - noises).abs() * weights).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
