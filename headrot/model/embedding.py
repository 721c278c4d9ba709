"""Image -> latent x_T, three ways: the paper's embedder network, DDIM inversion, gradient refinement.

The latent of an image x is the DDIM initial noise z = x_T (same shape as x) such that
G(z) = reverse_diffusion(generator, z, steps) is close to x.

    "network"    z = embedder(x): the paper's method. The embedder is UNet(time_input=False)
                 with a zero-initialised last conv, trained through the frozen generator
                 with `embedder_loss` (image-space L1).
    "inversion"  z = ddim_inversion(generator, x): no training.
    "refine"     Adam on z from either of the above, minimising per image
                 mean|x - G(z)| + 0.005 * mean(z**2); keeps each image's best z.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from headrot.model.sampler import ddim_inversion, reverse_diffusion
from headrot.model.schedule import ScheduleConfig

METHODS = ("network", "inversion", "refine")

# Weight of the latent prior in the refinement loss (the paper's 0.005): keeps z
# near the Gaussian shell the generator was trained on, so that moving it along a
# trajectory later still decodes to a face.
LATENT_PRIOR_WEIGHT = 0.005


# ---------------------------------------------------------------------------
# Results and metrics


@dataclass(frozen=True)
class EmbedResult:
    latents: torch.Tensor       # [N, C, S, S] the x_T of each image
    recon_error: torch.Tensor   # [N] mean |x - G(z)| per image, in [-1, 1] units (float32, same device);
                                # NaN for a row `embed(reconstruct=...)` left unmeasured
    reconstructions: torch.Tensor | None = None  # [N, C, S, S] G(z), so callers need not decode again
                                                 # (NaN rows where unmeasured)


def per_image_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N] mean absolute difference per image."""
    return (a - b).abs().flatten(1).mean(1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N] PSNR in dB per image for images in [-1, 1] (peak-to-peak 2); inf where identical."""
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return (10.0 * torch.log10(4.0 / mse)).float()


# ---------------------------------------------------------------------------
# Training loss for the paper's embedder


def embedder_loss(
    embedder: nn.Module,
    generator: nn.Module,
    images: torch.Tensor,
    steps: int = 10,
    schedule: ScheduleConfig | None = None,
) -> torch.Tensor:
    """Scalar image-space L1 between `images` and G(embedder(images)).

    Gradients flow through the generator to the embedder; freeze the generator
    first (generator.requires_grad_(False).eval()) so that only the embedder learns."""
    latents = embedder(images)
    reconstructions = reverse_diffusion(generator, latents, steps, schedule)
    return (images - reconstructions).abs().mean()


# ---------------------------------------------------------------------------
# Embedding


def embed(
    images: torch.Tensor,
    method: Literal["network", "inversion", "refine"],
    generator: nn.Module,
    embedder: nn.Module | None = None,
    steps: int = 10,
    refine_steps: int = 20,
    refine_lr: float = 0.05,
    refine_from: Literal["inversion", "network"] = "inversion",
    schedule: ScheduleConfig | None = None,
    # (fixed-point iterations at the first step, iterations per later step). Measured on the
    # demo generator, 10 steps, held-out faces: (2, 0) 14.9 dB, (5, 0) 18.3, (5, 2) 26.3,
    # (10, 3) 30.2 dB; (5, 2) is the default: 3x fewer network calls than (10, 3) for most of it.
    inversion_iterations: tuple[int, int] = (5, 2),
    reconstruct: torch.Tensor | None = None,
) -> EmbedResult:
    """Latents of `images` [N,C,S,S] in [-1, 1] and the reconstruction error of each.

    Every image is embedded independently of the others in its batch. Works under
    torch.inference_mode(): "refine" leaves it locally to differentiate. Network
    calls: "network" 1 + steps; "inversion" about 2*steps (see ddim_inversion,
    `inversion_iterations` = (fixed_point_iterations, step_iterations));
    "refine" that of its start + about 3*steps*refine_steps.

    `reconstruct` ([N] bool, None: every row) picks the rows whose G(z) is decoded to measure
    the reconstruction error; the others read NaN. The decode is a diagnostic, not part of the
    latent: it costs `steps` calls a row, a quarter of inversion's, and "refine" measures every
    row anyway (its loss is that error).
    """
    if method not in METHODS:
        raise ValueError(f"embed: unknown method {method!r}; use one of {list(METHODS)}")
    start = refine_from if method == "refine" else method
    if start not in ("network", "inversion"):
        raise ValueError(f"embed: refine_from must be 'inversion' or 'network', got {refine_from!r}")
    if start == "network" and embedder is None:
        raise ValueError(
            f"embed: method {method!r} (refine_from={refine_from!r}) needs the trained embedder network; "
            "pass embedder=..., or use method='inversion'"
        )

    with torch.no_grad():
        if start == "network":
            latents = embedder(images)
        else:
            latents = ddim_inversion(generator, images, steps, schedule, *inversion_iterations)
        if method != "refine":
            return _measured(images, latents, generator, steps, schedule, reconstruct)

    return _refine(images, latents, generator, steps, refine_steps, refine_lr, schedule)


def _measured(images: torch.Tensor, latents: torch.Tensor, generator: nn.Module, steps: int,
              schedule: ScheduleConfig | None, reconstruct: torch.Tensor | None) -> EmbedResult:
    """The latents with the reconstruction error of the rows `reconstruct` selects (NaN elsewhere)."""
    if reconstruct is None:
        reconstructions = reverse_diffusion(generator, latents, steps, schedule)
        return EmbedResult(latents, per_image_l1(images, reconstructions).float(), reconstructions)
    rows = torch.as_tensor(reconstruct, dtype=torch.bool, device=images.device)
    if rows.shape != (images.shape[0],):
        raise ValueError(f"embed: reconstruct must be a [{images.shape[0]}] mask, got shape {tuple(rows.shape)}")
    error = torch.full((images.shape[0],), math.nan, device=images.device, dtype=torch.float32)
    reconstructions = torch.full_like(images, math.nan)
    if rows.any():
        reconstructions[rows] = reverse_diffusion(generator, latents[rows], steps, schedule).to(images.dtype)
        error[rows] = per_image_l1(images[rows], reconstructions[rows]).float()
    return EmbedResult(latents, error, reconstructions)


def _refine(
    images: torch.Tensor,
    start: torch.Tensor,
    generator: nn.Module,
    steps: int,
    refine_steps: int,
    refine_lr: float,
    schedule: ScheduleConfig | None,
) -> EmbedResult:
    if refine_steps < 0 or not (refine_lr > 0 and math.isfinite(refine_lr)):
        raise ValueError(f"embed: need refine_steps >= 0 and refine_lr > 0, got {refine_steps} and {refine_lr}")
    # Inference tensors (made under inference_mode) cannot be saved for backward:
    # leave inference mode and copy them into ordinary tensors.
    with torch.inference_mode(False), torch.enable_grad():
        x = images.detach().clone()
        z = start.detach().clone().requires_grad_(True)
        best_z = z.detach().clone()
        best_x = x.clone()
        best_error = torch.full((x.shape[0],), math.inf, device=x.device, dtype=torch.float32)
        optimizer = torch.optim.Adam([z], lr=refine_lr)
        for iteration in range(refine_steps + 1):
            decoded = reverse_diffusion(generator, z, steps, schedule)
            error = per_image_l1(x, decoded)
            # Keep each image's best z (the loss is not monotone under Adam).
            with torch.no_grad():
                better = error.detach().float() < best_error
                best_error = torch.where(better, error.detach().float(), best_error)
                best_z[better] = z.detach()[better]
                best_x[better] = decoded.detach()[better]
            if iteration == refine_steps:
                break
            # A sum over images, not a mean: each image's gradient is then independent
            # of the batch size, and Adam (elementwise) optimises each image on its own.
            loss = (error + LATENT_PRIOR_WEIGHT * z.pow(2).flatten(1).mean(1)).sum()
            # Gradients w.r.t. z only: the generator's parameters are left untouched.
            (grad,) = torch.autograd.grad(loss, [z])
            z.grad = grad
            optimizer.step()
    return EmbedResult(best_z, best_error, best_x)
