"""Does drawing only where the turn acts keep the background clean? A sweep on a demo root.

    python -m bench.keep_background [--root runs/demo] [--thresholds 0.2,0.3,0.5] [--draws 4]
                                    [--name keep-background]

Each of the root's rendered test faces is inverted under its labelled yaw by the shipped yaw
generator and drawn at yaw + delta as the yaw `-colour` methods draw it (colour-guided 2 steps,
transported onto the source; raw offsets, no calibration, no pivotal tuning, so the sweep isolates
the mask), and again with blended sampling: outside DiffEdit's mask of where the yaw condition
changes the noise prediction, the path is the source's own noisy line and the result the source
itself. `oracle` takes the mask from the renderer's truth instead (where the true
turn changes a pixel, grown by a pixel and blurred): the ceiling of any mask. Measured as the
evaluate stage measures (bench.path_probes.measured) into runs/probes/NAME/ (metrics.parquet,
sheet.png, masks.png); prints the yardstick and PSNR / colour PSNR per delta for every variant.
What it found (the ceiling is small and no mask the generator gives reaches it): bench/NOTES.md,
nineteenth session.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from headrot.model.conditioning import at_yaw
from headrot.model.sampler import denoise, trained_schedule
from headrot.model.schedule import diffusion_schedule

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# The mechanism: a mask of where the yaw acts, and sampling that keeps the rest.
#
# A head turned in its photograph keeps the background, the shoulders and what the head does not
# sweep; the yaw generator redraws the whole image, and on the demo's test people it draws ghost
# arcs beside the head at -30. DiffEdit (Couairon et al. 2023) finds where an edit acts from the
# generator itself: noise the source, predict the noise under the old and the new condition, mark
# where the predictions differ; then it samples the edit with the path outside the mask put back,
# after every step, on the source's own noisy line (Blended Diffusion, Avrahami et al. 2022), so the
# network draws the edited region in the context of the kept one. Here the conditions are the
# source's yaw and its target yaw, the noisy line the pivot's (headrot.model.pivotal). Measured on
# the demo and not shipped: bench/NOTES.md, nineteenth session.


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


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of [N,1,S,S], edges replicated."""
    if sigma <= 0:
        return x
    r = max(1, int(round(2.5 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


def span_fill(mask: torch.Tensor) -> torch.Tensor:
    """[N,1,S,S] bool: every pixel between the first and the last marked pixel of its row. DiffEdit's
    difference marks a turning head's outline (its silhouette and hairline move most) more than its
    face; a head is convex along a row, so the row's span is the head, outline and face."""
    from_left = mask.to(torch.uint8).cummax(dim=3).values.bool()
    from_right = mask.flip(3).to(torch.uint8).cummax(dim=3).values.flip(3).bool()
    return from_left & from_right


def edit_mask(net, image: torch.Tensor, yaw_from: torch.Tensor, yaw_to: torch.Tensor, draws: int = 4,
              t: float = 0.5, threshold: float = 0.3, grow: int = 1, seed: int = 0) -> torch.Tensor:
    """[N,1,S,S] in [0, 1]: where the yaw generator `net` would change each image [N,3,S,S] (in
    [-1, 1]) turned from yaw_from [N] to yaw_to [N] degrees (DiffEdit's mask). The image is noised
    to time `t` by `draws` noises (seeded, drawn on the CPU, each shared by every row, so an image's
    mask does not depend on the batch it is in), the noise predicted under both yaws; the
    channel-summed absolute difference, averaged over the draws and divided by each image's
    maximum, marks the pixels above `threshold`; each row's span of marks is filled (span_fill),
    grown by `grow` pixels and its edge softened (a blur of 0.7 px), so the blend leaves no seam.
    2 * draws network calls per image."""
    if draws < 1 or not 0 < t < 1 or not 0 < threshold < 1 or grow < 0:
        raise ValueError(f"edit_mask: need draws >= 1, 0 < t < 1, 0 < threshold < 1, grow >= 0; got "
                         f"{draws}, {t}, {threshold}, {grow}")
    n = image.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    noise_rates, signal_rates = diffusion_schedule(torch.full((n, 1, 1, 1), t, device=image.device,
                                                              dtype=image.dtype), trained_schedule(net))
    before, after = at_yaw(net, yaw_from), at_yaw(net, yaw_to)
    diff = torch.zeros((n, 1, *image.shape[2:]), device=image.device, dtype=image.dtype)
    for _ in range(draws):
        noise = torch.randn((1, *image.shape[1:]), generator=gen).to(image.device, image.dtype)
        x_t = signal_rates * image + noise_rates * noise
        e_from, _ = denoise(before, x_t, noise_rates, signal_rates)
        e_to, _ = denoise(after, x_t, noise_rates, signal_rates)
        diff += (e_to - e_from).abs().sum(1, keepdim=True) / draws
    peak = diff.amax(dim=(1, 2, 3), keepdim=True)
    marked = span_fill((diff > threshold * peak) & (peak > 0))
    grown = F.max_pool2d(marked.to(image.dtype), 2 * grow + 1, 1, grow) if grow else marked.to(image.dtype)
    return blur(grown, 0.7).clamp(0, 1)


def oracle_masks(root: str, sources: list[str], deltas: list[int], size: int):
    """{delta: [N,1,S,S]}: where the renderer's true turn changes the source (more than 12 levels in
    a channel), grown by a pixel and blurred."""
    import pyarrow.parquet as pq

    from headrot.evaluate.truth import GroundTruth

    truth = GroundTruth(pq.read_table(f"{root}/data/truth.parquet"), size)
    out = {}
    for d in deltas:
        changed = np.stack([np.abs(truth.render(s, d).astype(int) - truth.render(s, 0).astype(int)).max(-1) > 12
                            for s in sources])
        m = torch.from_numpy(changed[:, None].astype(np.float32))
        out[d] = blur(F.max_pool2d(m, 3, 1, 1), 0.7).clamp(0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="runs/demo", help="a finished demo root")
    ap.add_argument("--thresholds", default="0.2,0.3,0.5", help="DiffEdit mask thresholds to try (comma list)")
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--t", type=float, default=0.5, help="the noise level the mask is read at")
    ap.add_argument("--name", default="keep-background")
    args = ap.parse_args()

    from bench.path_probes import measured, print_by_delta, yaw_faces
    from headrot.colour import transport_colours
    from headrot.model.pivotal import pivot_noise
    from headrot.model.sampler import ddim_inversion, reverse_diffusion
    from headrot.report.grid import image_grid, to_uint8

    net, config, sources, deltas, images, yaw, x = yaw_faces(args.root)

    def onto_sources(x0: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(transport_colours(to_uint8(x0), images)).permute(0, 3, 1, 2).float() / 127.5 - 1

    made, masks = {}, {}
    oracle = oracle_masks(args.root, sources, deltas, config.image_size)
    with torch.no_grad():
        z = ddim_inversion(at_yaw(net, yaw), x, 10, None, 5, 2)
        eps = pivot_noise(net, x, z)
        variants = {"keep-oracle": lambda d: oracle[d]}
        for thr in (float(s) for s in args.thresholds.split(",")):
            variants[f"keep-{thr:g}"] = lambda d, thr=thr: edit_mask(net, x, yaw, yaw + d, args.draws, args.t, thr)
        for name, mask_at in [("plain", None), *variants.items()]:
            drawn = {}
            for d in deltas:
                keep = None
                if mask_at is not None and d != 0:
                    keep = KeepOutside(mask_at(d), x, eps)
                    masks.setdefault(name, {})[d] = keep.mask
                drawn[d] = transport_colours(to_uint8(reverse_diffusion(at_yaw(net, yaw + d), z, 10, guide=onto_sources,
                                                                        guide_steps=2, keep=keep)), images)
            made[name] = {(s, d): drawn[d][i] for d in deltas for i, s in enumerate(sources)}
            print(f"{name} drawn", flush=True)
    out = ROOT / "runs" / "probes" / args.name
    out.mkdir(parents=True, exist_ok=True)
    # The masks of the first eight faces at each nonzero delta, one row per (face, variant).
    turned = [d for d in deltas if d]
    cells, labels = [], []
    for i, s in enumerate(sources[:8]):
        for name, by_delta in masks.items():
            cells += [np.repeat((by_delta[d][i, 0].numpy() * 255).astype(np.uint8)[..., None], 3, -1) for d in turned]
            labels.append(f"{s[:6]} {name}")
    image_grid(np.stack(cells), nrow=len(turned), upscale=3, row_labels=labels,
               col_labels=[f"{d:+d}" for d in turned]).save(out / "masks.png")
    print_by_delta(out, measured(args.root, made, out, config.image_size), list(made))

if __name__ == "__main__":
    main()
