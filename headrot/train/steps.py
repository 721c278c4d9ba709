"""Training steps as pure torch: the DDIM noise loss, the embedder loss, the EMA.

No Ray here: each function takes networks and a batch and returns a scalar loss,
so the maths is tested on tiny U-Nets in milliseconds (tests/test_train.py).
"""
from __future__ import annotations

import copy
import functools

import torch
from torch import nn

from headrot.model.sampler import denoise
from headrot.model.schedule import ScheduleConfig, diffusion_schedule


# ---------------------------------------------------------------------------
# Batches


def to_model_images(batch_u8: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 HWC images [N,S,S,3] -> float32 NCHW in [-1, 1], channels_last in memory.

    Permuting an NHWC tensor to NCHW *is* the channels_last layout, so no copy is made
    beyond the float conversion (which keeps the strides)."""
    if batch_u8.ndim != 4 or batch_u8.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [N,S,S,3], got shape {tuple(batch_u8.shape)}")
    x = batch_u8.to(device=device, non_blocking=True).permute(0, 3, 1, 2)
    return (x.float() / 127.5 - 1.0).contiguous(memory_format=torch.channels_last)


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The random stream of one optimizer step on one rank.

    Derived from (seed, rank, step) rather than carried along, so a resumed run draws
    exactly the numbers the uninterrupted run would have drawn, and ranks differ."""
    g = torch.Generator(device="cpu")
    # Large odd multipliers keep (seed, rank, step) triples apart in the 64-bit seed space.
    g.manual_seed((seed * 1_000_003 + rank * 7_919 + step * 104_729) % (2**63 - 1))
    return g


# ---------------------------------------------------------------------------
# Losses


def p2_weights(noise_rates: torch.Tensor, signal_rates: torch.Tensor, gamma: float, k: float = 1.0,
               schedule: ScheduleConfig | None = None) -> torch.Tensor:
    """P2 weighting (Choi et al. 2022, "Perception Prioritized Training of Diffusion Models").

    w(t) = 1 / (k + SNR(t))**gamma with SNR = alpha_t**2 / sigma_t**2: the noisy steps, where a
    sample's coarse content (pose, layout) is decided, weigh more than the nearly clean ones,
    which only refine detail. Divided by the mean of w over t ~ U(0, 1), so the loss keeps its
    scale and the learning rate its meaning. gamma = 0 gives 1 everywhere: the Keras loss.
    """
    if gamma == 0.0:
        return torch.ones_like(noise_rates)
    return _p2_raw(noise_rates, signal_rates, gamma, k) / _p2_mean(gamma, k, schedule or ScheduleConfig())


def _p2_raw(noise: torch.Tensor, signal: torch.Tensor, gamma: float, k: float) -> torch.Tensor:
    return (k + signal.square() / noise.square()).pow(-gamma)


@functools.lru_cache(maxsize=8)
def _p2_mean(gamma: float, k: float, schedule: ScheduleConfig) -> float:
    """The mean of the raw weights over t ~ U(0, 1): once per setting, not once per training step."""
    grid_noise, grid_signal = diffusion_schedule(torch.linspace(0.0, 1.0, 1001, dtype=torch.float64), schedule)
    return float(_p2_raw(grid_noise, grid_signal, gamma, k).mean())


def generator_loss(
    net: nn.Module,
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    schedule: ScheduleConfig | None = None,
    p2_gamma: float = 0.0,
) -> torch.Tensor:
    """The Keras DDIM training step: L1 between the drawn and the predicted noise.

    t ~ U(0,1) per image, noise ~ N(0,1), x_t = alpha_t x_0 + sigma_t noise, and the
    network sees (x_t, sigma_t**2). Random numbers are drawn from `generator` on its
    device, then moved: a CPU generator (the training loop's, and the default) gives the
    same numbers on any device, so a resumed run draws what the uninterrupted one did; a
    CUDA generator spares a GPU the host-side draw and copy of every batch's noise
    (bench.gpu). With `p2_gamma` > 0 each image's error is weighted by `p2_weights` (0:
    uniform, the Keras loss exactly).
    """
    n = images.shape[0]
    draw_on = generator.device if generator is not None else torch.device("cpu")
    noises = torch.randn(images.shape, generator=generator, dtype=torch.float32, device=draw_on)
    times = torch.rand((n, 1, 1, 1), generator=generator, dtype=torch.float32, device=draw_on)
    noises = noises.to(images.device, images.dtype).contiguous(memory_format=torch.channels_last)
    times = times.to(images.device, images.dtype)
    noise_rates, signal_rates = diffusion_schedule(times, schedule)
    noisy_images = signal_rates * images + noise_rates * noises
    pred_noises, _ = denoise(net, noisy_images, noise_rates, signal_rates)
    errors = (pred_noises - noises).abs()
    if p2_gamma == 0.0:
        return errors.mean()
    return (errors * p2_weights(noise_rates, signal_rates, p2_gamma, schedule=schedule)).mean()


def embedder_step_loss(embedder: nn.Module, generator: nn.Module, images: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """The paper's embedder loss: image-space L1 through the frozen `steps`-step generator."""
    from headrot.model.embedding import embedder_loss

    return embedder_loss(embedder, generator, images, steps=steps)


def freeze(net: nn.Module) -> nn.Module:
    """Eval mode and no gradients for the parameters (gradients still flow *through* it)."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


# ---------------------------------------------------------------------------
# EMA


class EMA:
    """Exponential moving average of a model's weights (Keras example: ema = 0.999).

    After each optimizer step: ema_w = decay * ema_w + (1 - decay) * w. Buffers
    (none in the U-Net, but general) are copied as they are.

    With `warmup`, update number k (0-based) uses min(decay, (1 + k) / (10 + k)), the
    rule of TensorFlow's ExponentialMovingAverage(num_updates): with a flat 0.999 the
    initial random weights still weigh 0.999**1000 = 37% after 1000 steps, which is
    all a short CPU run makes; the warm-up forgets them within the first few hundred.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.module = freeze(copy.deepcopy(model))

    def decay_at(self, update: int | None) -> float:
        """The decay used by update number `update` (None: no warm-up)."""
        if not self.warmup or update is None:
            return self.decay
        return min(self.decay, (1.0 + update) / (10.0 + update))

    @torch.no_grad()
    def update(self, model: nn.Module, update: int | None = None) -> None:
        """ema_w = d * ema_w + (1 - d) * w with d = decay_at(update)."""
        d = self.decay_at(update)
        # One fused call per op over every tensor: the per-parameter loop launched two kernels
        # per tensor (160 a step for the paper network) from Python. Same arithmetic, to the bit.
        ema_params = list(self.module.parameters())
        torch._foreach_mul_(ema_params, d)
        torch._foreach_add_(ema_params, [p.detach() for p in model.parameters()], alpha=1.0 - d)
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)

    def to(self, *args, **kwargs) -> "EMA":
        self.module.to(*args, **kwargs)
        return self
