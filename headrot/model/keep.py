"""Keeping what a turn does not move: a mask of where the yaw condition changes the image, and
blended sampling that draws only inside it.

A head turned in its photograph keeps the background, the shoulders and what the head does not
sweep. The yaw generator redraws the whole image, and on heads new to it (the demo's test people)
it draws rings and blotches into backgrounds that should not change. DiffEdit (Couairon et al.
2023) finds where an edit acts from the generator itself: noise the source, predict the noise under
the old and the new condition, and mark where the predictions differ; then it samples the edit with
the path outside the mask put back, after every step, on the source's own noisy line (Blended
Diffusion's blend, Avrahami et al. 2022), so the network draws the edited region in the context of
the kept one and the result outside the mask is the source itself.

Here the conditions are the source's yaw and its target yaw, and the source's noisy line is the
pivot's (headrot.model.pivotal): x_t = alpha_t x + sigma_t eps_s with the inversion z_s = alpha_1 x
+ sigma_1 eps_s, the line the sampler starts on.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from headrot.model.conditioning import at_yaw
from headrot.model.sampler import denoise, trained_schedule
from headrot.model.schedule import diffusion_schedule


class KeepOutside:
    """The sampler's `keep`: outside `mask` [N,1,S,S] (1 = drawn, 0 = kept, soft in between) the
    path is the line alpha_t image + sigma_t eps, and the result is `image` [N,3,S,S] (in [-1, 1])."""

    def __init__(self, mask: torch.Tensor, image: torch.Tensor, eps: torch.Tensor):
        if mask.shape[1] != 1 or mask.shape[0] != image.shape[0] or image.shape != eps.shape:
            raise ValueError(f"KeepOutside: mask [N,1,S,S], image and eps [N,3,S,S], got "
                             f"{tuple(mask.shape)}, {tuple(image.shape)}, {tuple(eps.shape)}")
        self.mask, self.image, self.eps = mask, image, eps

    def noisy(self, x: torch.Tensor, noise_rates: torch.Tensor, signal_rates: torch.Tensor) -> torch.Tensor:
        kept = signal_rates * self.image + noise_rates * self.eps
        return self.mask * x + (1 - self.mask) * kept

    def clean(self, x0: torch.Tensor) -> torch.Tensor:
        return self.mask * x0 + (1 - self.mask) * self.image


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of [N,1,S,S], edges replicated."""
    if sigma <= 0:
        return x
    r = max(1, int(round(2.5 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


def edit_mask(net, image: torch.Tensor, yaw_from: torch.Tensor, yaw_to: torch.Tensor, draws: int = 4,
              t: float = 0.5, threshold: float = 0.3, grow: float = 1.0, seed: int = 0) -> torch.Tensor:
    """[N,1,S,S] in [0, 1]: where the yaw generator `net` would change each image [N,3,S,S] (in
    [-1, 1]) turned from yaw_from [N] to yaw_to [N] degrees (DiffEdit's mask). The image is noised
    to time `t` by `draws` noises (seeded, drawn on the CPU), the noise predicted under both yaws;
    the channel-summed absolute difference, averaged over the draws and blurred by `grow` pixels,
    is divided by each image's maximum; 1 above `threshold`, falling linearly to 0 at half of it
    (a soft edge, so the blend leaves no seam). 2 * draws network calls per image."""
    if draws < 1 or not 0 < t < 1 or not 0 < threshold < 1:
        raise ValueError(f"edit_mask: need draws >= 1, 0 < t < 1, 0 < threshold < 1; got {draws}, {t}, {threshold}")
    n = image.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    noise_rates, signal_rates = diffusion_schedule(torch.full((n, 1, 1, 1), t, device=image.device,
                                                              dtype=image.dtype), trained_schedule(net))
    before, after = at_yaw(net, yaw_from), at_yaw(net, yaw_to)
    diff = torch.zeros((n, 1, *image.shape[2:]), device=image.device, dtype=image.dtype)
    for _ in range(draws):
        noise = torch.randn(image.shape, generator=gen).to(image.device, image.dtype)
        x_t = signal_rates * image + noise_rates * noise
        e_from, _ = denoise(before, x_t, noise_rates, signal_rates)
        e_to, _ = denoise(after, x_t, noise_rates, signal_rates)
        diff += (e_to - e_from).abs().sum(1, keepdim=True) / draws
    diff = _blur(diff, grow)
    diff = diff / diff.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
    return ((diff - threshold / 2) / (threshold / 2)).clamp(0, 1)
