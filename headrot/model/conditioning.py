"""A yaw-conditioned generator (UNetConfig.yaw_harmonics > 0) bound to the yaws of one batch.

    reverse_diffusion(at_yaw(model, yaw + delta), ddim_inversion(at_yaw(model, yaw), x))

inverts each image under its own yaw and draws it again under another: the `yaw` render method
(headrot.stages.render). The sampler, the inversion and the embedding call a generator as
net(x_t, noise_variances); `at_yaw` gives a conditional one that calling convention, so none of
them needs to know about conditions.
"""
from __future__ import annotations

import torch


def is_conditional(model) -> bool:
    """Does this generator take a yaw (its config's yaw_harmonics > 0)?"""
    return bool(getattr(getattr(model, "config", None), "yaw_harmonics", 0))


class AtYaw:
    """model(x, noise_variances, yaw=yaw) called as model(x, noise_variances); `schedule` and
    `config` are the model's, as the sampler reads them (headrot.model.sampler.trained_schedule)."""

    def __init__(self, model, yaw: torch.Tensor):
        self.model, self.yaw = model, yaw
        self.schedule = getattr(model, "schedule", None)
        self.config = getattr(model, "config", None)

    def __call__(self, noisy_images: torch.Tensor, noise_variances: torch.Tensor) -> torch.Tensor:
        return self.model(noisy_images, noise_variances, yaw=self.yaw)


def at_yaw(model, yaw) -> AtYaw:
    """`model` (a yaw-conditioned generator) drawing each row of a batch at yaw[row] degrees
    (a number: every row at that yaw)."""
    if not is_conditional(model):
        raise ValueError("at_yaw: this generator has no yaw input (UNetConfig.yaw_harmonics=0); the yaw "
                         "render method needs a yaw-conditioned generator (render.yaw_generator)")
    device = next(iter(model.parameters())).device if hasattr(model, "parameters") else None
    return AtYaw(model, torch.as_tensor(yaw, dtype=torch.float32, device=device))
