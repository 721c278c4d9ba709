"""Pivotal tuning: a copy of the yaw generator fitted to one source before that source is turned.

Roich et al. 2022 ("Pivotal Tuning for Latent-based Editing of Real Images") edit a real face with
a GAN by first inverting it (the pivot), then fine-tuning the generator for a few steps so that the
pivot draws the face exactly, and editing with the tuned generator: the edit keeps what the
generator's prior lacked (a rare hair colour, an unusual light). The `yaw` render methods' pivot is
the source inverted under its labelled yaw, z_s; the edit is the yaw condition. On the demo the faces
are new to the yaw generator (seed 0 against its training set's seed 3), and the faults its turns
left were such heads' (a white cap of hair lost at +20/+30, a face lit yellow): a copy tuned 50 steps
on the source turns them with the cap and the skin kept (bench/NOTES.md, eighteenth session).
The yaw generator trained on turns drawn whole keeps them untuned, and tuning it cost pose and drew
rings back, so the demo no longer tunes (`render.pivotal_steps: 0`, twenty-sixth session).

Each batch is half the pivot's own line, x_t = alpha_t x + sigma_t eps_s with z_s = alpha_1 x +
sigma_1 eps_s (a DDIM step that predicts eps_s stays on the line from z_s to the source: the coupled
training's reconstruction term), half fresh noise (the source's appearance at every noise level),
under the source's yaw. The learning rate is small on purpose: at 1e-4 fifty steps teach the copy
the source's pose as well, and it stops turning (the median pose error went from 2.7 to 7.9 deg);
at 2e-5 the copy turns a little less, and calibration (`-cal`) takes up most of it (on the demo the
median pose error rose by 0.44 deg; at 1e-5 by half that, but 000113 and 000070 broke again at +30).

The copies of a shard's sources draw together, as one network: `Copies` holds their weights
stacked and calls them through torch.func.vmap (each conv becomes one grouped conv), so the K
sources' turns are decoded and calibrated in batches, not one source at a time. On an accelerator
they are tuned together too, one step of batch K*8 for K steps of batch 8: the sum of the copies'
losses has, for each copy's weights, that copy's own gradient, and AdamW is elementwise, so each
copy is trained exactly as it would be alone, from its own seed's noise.
"""
from __future__ import annotations

import copy
from typing import Iterator, Sequence

import torch
from torch.func import functional_call, stack_module_state, vmap

from headrot.model.sampler import trained_schedule
from headrot.model.schedule import diffusion_schedule
from headrot.train.steps import p2_weights

DEFAULT_LR = 2e-5
# Which of the network's weights a copy tunes. "up": the up path and the output conv only; the
# input, down and middle blocks (and the noise and yaw embeddings, which enter at the input) stay
# the yaw generator's, so the backward pass stops at the bottom of the U.
LAYERS = ("all", "up")


def tuned_names(net: torch.nn.Module, layers: str) -> set[str]:
    """The parameter names `layers` tunes."""
    if layers not in LAYERS:
        raise ValueError(f"pivotal tuning: layers must be one of {LAYERS}, got {layers!r}")
    names = {name for name, _ in net.named_parameters()}
    return names if layers == "all" else {n for n in names if n.startswith(("up.", "output_conv."))}


class Copies:
    """K copies of one yaw-conditioned network, each with its own weights, called as one network:
    copies(x [N,...], noise_variances [N,1,1,1], yaw=[N]) draws row r with copy r mod K (N a
    multiple of K), so a batch laid out delta-major over K sources ([z] * D) gives each source its
    own copy. `schedule` and `config` are the network's (what the sampler and at_yaw read)."""

    def __init__(self, net: torch.nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]):
        self.k = len(next(iter(params.values())))
        self.params, self.buffers = params, buffers
        self.schedule, self.config = getattr(net, "schedule", None), getattr(net, "config", None)
        # The module's code without its weights: functional_call gives each copy's in.
        self._skeleton = copy.deepcopy(net).to("meta").eval()
        self._template = net

        def one(p, b, x, noise_variances, yaw):
            return functional_call(self._skeleton, (p, b), (x, noise_variances), {"yaw": yaw})

        self._all = vmap(one)

    def parameters(self) -> Iterator[torch.Tensor]:
        return iter(self.params.values())

    def __call__(self, x: torch.Tensor, noise_variances: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
        n, k = x.shape[0], self.k
        if n % k:
            raise ValueError(f"Copies: a batch of {n} rows does not split over {k} copies (row r is drawn by "
                             f"copy r mod {k})")

        def per_copy(t: torch.Tensor) -> torch.Tensor:   # [N, ...] -> [K, N/K, ...], row r to copy r mod K
            t = t.expand(n, *t.shape[1:]) if t.shape[0] == 1 else t
            return t.reshape(n // k, k, *t.shape[1:]).transpose(0, 1)

        yaw = torch.as_tensor(yaw, dtype=torch.float32, device=x.device).reshape(-1)
        out = self._all(self.params, self.buffers, per_copy(x), per_copy(noise_variances), per_copy(yaw))
        return out.transpose(0, 1).reshape(n, *out.shape[2:])

    def module(self, i: int) -> torch.nn.Module:
        """Copy i as a plain network (eval mode, its own tensors)."""
        net = copy.deepcopy(self._template).eval()
        state = {**{name: p[i].detach().clone() for name, p in self.params.items()},
                 **{name: b[i].clone() for name, b in self.buffers.items()}}
        net.load_state_dict(state)
        return net


def pivot_noise(net, image: torch.Tensor, pivot: torch.Tensor) -> torch.Tensor:
    """eps_s of the pivot's line: z_s = alpha_1 image + sigma_1 eps_s (image and pivot [3,S,S] or
    [N,3,S,S], image in [-1, 1])."""
    sigma_1, alpha_1 = diffusion_schedule(torch.ones(1, device=pivot.device), trained_schedule(net))
    return (pivot - alpha_1 * image) / sigma_1


def tune_copies(net, images: torch.Tensor, pivots: torch.Tensor, yaws: Sequence[float], steps: int,
                lr: float = DEFAULT_LR, seeds: Sequence[int] | None = None, batch: int = 8,
                together: bool | None = None, layers: str = "all", pivot_share: float = 0.5) -> Copies:
    """Copies of the yaw-conditioned `net`, copy k fine-tuned `steps` AdamW steps on source image k
    [K,3,S,S] (in [-1, 1]) under its yaw, `pivots` [K,3,S,S] their inversions under those yaws by
    `net`, `seeds` [K] (default 0 each) their noise, `layers` the weights tuned (LAYERS),
    `pivot_share` the part of each batch on the pivot's line (the rest fresh noise). `net`
    itself is not touched. Copy k is what tuning source k alone gives (to float rounding), whatever
    the other sources.

    `together` (default: off the CPU) tunes the K copies as one batched network. On 2 CPU cores one
    step of 32 copies together took 5.5 s against 3.2 s for 32 steps of one copy each (the grouped
    convolution's weight gradient is slow there), while drawing costs the same either way: on the
    CPU the copies are tuned one by one and stacked to draw together."""
    if steps < 0:
        raise ValueError(f"pivotal tuning: steps must be >= 0, got {steps}")
    seeds = [0] * len(images) if seeds is None else list(seeds)
    if together is None:
        together = images.device.type != "cpu"
    if not together and len(images) > 1:
        ones = [tune_copies(net, images[k:k + 1], pivots[k:k + 1], [yaws[k]], steps, lr, [seeds[k]], batch, True,
                            layers, pivot_share) for k in range(len(images))]
        params = {name: torch.cat([one.params[name] for one in ones]).detach() for name in ones[0].params}
        buffers = {name: torch.cat([one.buffers[name] for one in ones]) for name in ones[0].buffers}
        return Copies(getattr(net, "_orig_mod", net), params, buffers)
    tuned = None
    for done, tuned in enumerate(tuning(net, images, pivots, yaws, lr, seeds, batch, layers, pivot_share)):
        if done == steps:
            break
    # Done training: the weights leave autograd, as a render actor's frozen generator's are.
    return Copies(getattr(net, "_orig_mod", net), {name: p.detach() for name, p in tuned.params.items()},
                  tuned.buffers)


def tune_on_source(net, image: torch.Tensor, pivot: torch.Tensor, yaw: float, steps: int,
                   lr: float = DEFAULT_LR, seed: int = 0, batch: int = 8, layers: str = "all",
                   pivot_share: float = 0.5) -> torch.nn.Module:
    """tune_copies for one source image [3,S,S]: its copy, as a plain network in eval mode."""
    return tune_copies(net, image[None], pivot[None], [yaw], steps, lr, [seed], batch, layers=layers,
                       pivot_share=pivot_share).module(0)


def tuning(net, images: torch.Tensor, pivots: torch.Tensor, yaws: Sequence[float], lr: float = DEFAULT_LR,
           seeds: Sequence[int] | None = None, batch: int = 8, layers: str = "all",
           pivot_share: float = 0.5) -> Iterator[Copies]:
    """The tuned copies after 0, 1, 2, ... steps (tune_copies' run, trained on in place: take what
    you need of them before asking for the next step)."""
    if batch < 2:
        raise ValueError(f"pivotal tuning: batch must be >= 2, got {batch}")
    if not 0.0 <= pivot_share <= 1.0:
        raise ValueError(f"pivotal tuning: pivot_share must be in [0, 1], got {pivot_share}")
    k = len(images)
    seeds = [0] * k if seeds is None else list(seeds)
    if not len(pivots) == len(yaws) == len(seeds) == k:
        raise ValueError(f"pivotal tuning: {k} images, {len(pivots)} pivots, {len(yaws)} yaws and {len(seeds)} "
                         "seeds: one of each per source")
    # The render actor decodes under inference_mode; training needs autograd, and the copies'
    # weights must be made outside inference mode to be trainable.
    with torch.inference_mode(False):
        base = getattr(net, "_orig_mod", net)   # a compiled generator is tuned (and draws) as its plain module
        params, buffers = stack_module_state([base] * k)   # fresh stacked tensors: `net` is not touched
        tuned = tuned_names(base, layers)
        params = {name: p.detach().clone().requires_grad_(name in tuned) for name, p in params.items()}
        copies = Copies(base, params, buffers)
        images, pivots = images.clone(), pivots.clone()
        eps = pivot_noise(base, images, pivots)                                     # [K,3,S,S]
        opt = torch.optim.AdamW([p for p in params.values() if p.requires_grad], lr=lr, weight_decay=0.0)
        # One generator per source, drawn in the order a lone tuning draws: a copy's noise is its own.
        gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        schedule = trained_schedule(base)
        half = int(batch * pivot_share)   # rows on the pivot's line (floor: batch // 2 at 0.5); the rest fresh noise
        x = images[:, None].expand(-1, batch, -1, -1, -1)                          # [K,B,3,S,S]
        yaw = torch.as_tensor(list(yaws), dtype=torch.float32, device=images.device)[:, None].expand(k, batch)
    while True:
        yield copies
        with torch.inference_mode(False), torch.enable_grad():
            fresh, times = [], []
            for g in gens:
                fresh.append(torch.randn((batch - half, *eps.shape[1:]), generator=g))
                times.append(torch.rand((batch, 1, 1, 1), generator=g))
            fresh, times = torch.stack(fresh).to(eps.device), torch.stack(times).to(eps.device)
            noises = torch.cat([eps[:, None].expand(-1, half, -1, -1, -1), fresh], 1)    # [K,B,3,S,S]
            noise_rates, signal_rates = diffusion_schedule(times, schedule)             # [K,B,1,1,1]
            noisy = signal_rates * x + noise_rates * noises
            pred = copies._all(params, buffers, noisy, noise_rates**2, yaw)
            weights = p2_weights(noise_rates, signal_rates, 2.0, schedule=schedule)
            # Each copy's loss is its own batch's mean; their sum gives each copy its own gradient.
            loss = ((pred - noises).abs() * weights).mean(dim=(1, 2, 3, 4)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
