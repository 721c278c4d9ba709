"""The paper's U-Net (the Keras DDIM example's `get_network`), in PyTorch.

Residual blocks (normalisation, 3x3 conv, swish, 3x3 conv, + residual), average-pool
down, bilinear up, no attention. The noise variance enters as a sinusoidal embedding
broadcast over the image and concatenated after a 1x1 input conv. With
`time_input=False` the same network is the paper's embedder (image -> latent x_T).

Departures from the Keras original, each for a reason:
- GroupNorm (affine=False) instead of BatchNormalization(center=False, scale=False):
  BatchNorm normalises with statistics of the whole batch (and running averages at
  inference), so an image's output would depend on which batch it was computed in,
  and training and inference would differ. GroupNorm normalises each image by itself.
  Neither has trainable parameters, so the parameter count is the Keras one.
- Weights start as Keras' do (Glorot-uniform kernels, zero biases), not PyTorch's
  default init, so training behaves like the authors' code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class UNetConfig:
    image_size: int = 64                           # S: input and output are [N, C, S, S]
    in_channels: int = 3                           # image channels in
    out_channels: int = 3                          # channels out (predicted noise, or the latent)
    widths: tuple[int, ...] = (48, 96, 192, 384)   # channels per resolution level, top first
    block_depth: int = 2                           # residual blocks per level (and skips per down level)
    embedding_dims: int = 64                       # sinusoidal embedding size of the noise variance
    embedding_min_frequency: float = 1.0           # lowest embedding frequency (Keras example)
    embedding_max_frequency: float = 1000.0        # highest embedding frequency (Keras example)
    time_input: bool = True                        # False: no noise-variance input (the embedder)
    norm_groups: int = 32                          # GroupNorm groups, reduced to gcd(groups, channels)
    zero_init_output: bool = True                  # last 1x1 conv starts at zero (output 0 at init)
    yaw_harmonics: int = 0                         # > 0: a yaw input (sin/cos of this many multiples of
                                                   # the yaw, through a linear layer added to the noise
                                                   # embedding); 0: unconditional, the paper's network

    def __post_init__(self) -> None:
        levels = len(self.widths)
        if levels < 1 or any(int(w) < 1 for w in self.widths):
            raise ValueError(f"UNetConfig.widths must be a non-empty list of positive ints, got {self.widths}")
        if self.block_depth < 1:
            raise ValueError(f"UNetConfig.block_depth must be >= 1, got {self.block_depth}")
        if self.image_size < 1 or self.image_size % (2 ** (levels - 1)):
            raise ValueError(
                f"UNetConfig.image_size {self.image_size} must be divisible by 2**(len(widths)-1) = "
                f"{2 ** (levels - 1)} (one 2x2 pool per level below the top); change image_size or widths"
            )
        if self.time_input and (self.embedding_dims < 2 or self.embedding_dims % 2):
            raise ValueError(f"UNetConfig.embedding_dims must be even and >= 2 (sin and cos halves), got {self.embedding_dims}")
        if self.norm_groups < 1:
            raise ValueError(f"UNetConfig.norm_groups must be >= 1, got {self.norm_groups}")
        if self.yaw_harmonics < 0 or (self.yaw_harmonics and not self.time_input):
            raise ValueError(f"UNetConfig.yaw_harmonics must be >= 0, and 0 without a noise-variance input "
                             f"(the embedder), got {self.yaw_harmonics} with time_input={self.time_input}")
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))


# Named configs.
# "paper": the authors' network: 9,605,187 parameters, 6.61 GFLOP per call per 64x64 image.
# "demo": 32x32, what a 2-core CPU trains in minutes: 818,915 parameters, 0.48 GFLOP per call.
#   Training step (forward + backward + AdamW, batch 64, 2 torch threads, best of 4
#   rounds on a shared 2-core host, 2026-11-25): this one 99 images/s; (24, 48, 96)
#   120 images/s at 0.30 GFLOP; (32, 64, 96) with block_depth 1 149 images/s at 0.26
#   GFLOP. This one buys 1.6x the compute of the next for 18% less throughput.
#   Embedding 32 dims, not 64: at 32x32 the 64 broadcast channels cost as much as the
#   first level's convolutions and a 32x32 net needs no finer noise-level resolution.
#   channels_last was several times slower on this CPU: use it on GPUs only.
# "tiny": for tests, 8,091 parameters, milliseconds per call.
PRESETS: dict[str, UNetConfig] = {
    "paper": UNetConfig(image_size=64, widths=(48, 96, 192, 384), block_depth=2),
    "demo": UNetConfig(image_size=32, widths=(32, 64, 96), block_depth=2, embedding_dims=32),
    "tiny": UNetConfig(image_size=16, widths=(8, 16), block_depth=1, embedding_dims=8),
}


# ---------------------------------------------------------------------------
# Layers


def _conv(cin: int, cout: int, kernel: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2)
    # Keras' Conv2D defaults: Glorot-uniform kernel, zero bias.
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    # affine=False: like the Keras BatchNormalization(center=False, scale=False).
    return nn.GroupNorm(math.gcd(groups, channels), channels, affine=False)


class ResidualBlock(nn.Module):
    """x + conv3(swish(conv3(norm(x)))); the residual goes through a 1x1 conv when the width changes."""

    def __init__(self, cin: int, width: int, norm_groups: int) -> None:
        super().__init__()
        self.skip = _conv(cin, width, 1) if cin != width else nn.Identity()
        self.norm = _norm(cin, norm_groups)
        self.conv1 = _conv(cin, width, 3)
        self.conv2 = _conv(width, width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.skip(x)
        x = self.conv1(self.norm(x))
        x = self.conv2(F.silu(x))
        return x + residual


def sinusoidal_embedding(x: torch.Tensor, dims: int, min_frequency: float, max_frequency: float) -> torch.Tensor:
    """[N,1,1,1] -> [N,dims,1,1]: sin then cos of 2*pi*f*x, f log-spaced in [min_frequency, max_frequency]."""
    frequencies = torch.exp(
        torch.linspace(math.log(min_frequency), math.log(max_frequency), dims // 2, device=x.device, dtype=x.dtype)
    )
    angular_speeds = (2.0 * math.pi * frequencies).view(1, -1, 1, 1)
    return torch.cat([torch.sin(angular_speeds * x), torch.cos(angular_speeds * x)], dim=1)


def yaw_features(yaw: torch.Tensor, harmonics: int, n: int) -> torch.Tensor:
    """[N] degrees (or one number, broadcast to n) -> [N, 2*harmonics]: sin then cos of k*yaw, k = 1..harmonics.
    In float32 whatever the network's precision: a degree is a small angle in bf16."""
    rad = torch.as_tensor(yaw, dtype=torch.float32).reshape(-1, 1).expand(n, 1) * (math.pi / 180)
    k = torch.arange(1, harmonics + 1, dtype=torch.float32, device=rad.device)
    return torch.cat([torch.sin(rad * k), torch.cos(rad * k)], 1)


# ---------------------------------------------------------------------------
# Network


class UNet(nn.Module):
    """forward(noisy_images [N,C,S,S], noise_variances [N,1,1,1]) -> pred_noises [N,out,S,S].

    With config.time_input False: forward(images) -> [N,out,S,S] (the embedder). With
    config.yaw_harmonics > 0: forward(noisy_images, noise_variances, yaw=[N] degrees), a generator
    that draws its head at the yaw it is given (headrot.model.conditioning)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.input_conv = _conv(c.in_channels, c.widths[0], 1)
        channels = c.widths[0] + (c.embedding_dims if c.time_input else 0)
        if c.yaw_harmonics:
            # The guided-diffusion way of conditioning: an embedding of the condition added to the
            # noise embedding. Zero-initialised, so a yaw input added to a trained network starts
            # as that network, to the bit (how the demo's conditional generator was fine-tuned).
            self.yaw_in = nn.Linear(2 * c.yaw_harmonics, c.embedding_dims)
            nn.init.zeros_(self.yaw_in.weight)
            nn.init.zeros_(self.yaw_in.bias)

        # Down levels: each residual block's output is a skip, then a 2x2 average pool.
        skip_channels: list[int] = []
        self.down = nn.ModuleList()
        for width in c.widths[:-1]:
            blocks = nn.ModuleList()
            for _ in range(c.block_depth):
                blocks.append(ResidualBlock(channels, width, c.norm_groups))
                channels = width
                skip_channels.append(channels)
            self.down.append(blocks)

        # Bottom level, no skips.
        self.middle = nn.ModuleList()
        for _ in range(c.block_depth):
            self.middle.append(ResidualBlock(channels, c.widths[-1], c.norm_groups))
            channels = c.widths[-1]

        # Up levels: 2x bilinear upsample, then per block concat a popped skip and a residual block.
        self.up = nn.ModuleList()
        for width in reversed(c.widths[:-1]):
            blocks = nn.ModuleList()
            for _ in range(c.block_depth):
                blocks.append(ResidualBlock(channels + skip_channels.pop(), width, c.norm_groups))
                channels = width
            self.up.append(blocks)

        self.output_conv = _conv(channels, c.out_channels, 1)
        if c.zero_init_output:
            # The network starts by predicting 0 (Keras: kernel_initializer="zeros");
            # for the embedder that means z = 0 before training.
            nn.init.zeros_(self.output_conv.weight)

    def forward(self, noisy_images: torch.Tensor, noise_variances: torch.Tensor | None = None,
                condition: torch.Tensor | None = None, yaw: torch.Tensor | None = None) -> torch.Tensor:
        """`condition` [N, embedding_dims] (optional) is added to the noise-variance embedding: how a
        conditional generator is built on this network (class or pose embeddings, as in guided
        diffusion). None: the unconditional network, as trained. `yaw` [N] (degrees): the yaw a
        network with config.yaw_harmonics draws its head at, required there and refused elsewhere."""
        c = self.config
        if (yaw is None) != (not c.yaw_harmonics):
            raise ValueError("UNet.forward: a yaw-conditioned generator (yaw_harmonics > 0) needs yaw= [N] degrees"
                             if yaw is None else "UNet.forward: this network has no yaw input (yaw_harmonics=0)")
        if yaw is not None:
            yaw_embedding = self.yaw_in(yaw_features(yaw, c.yaw_harmonics, noisy_images.shape[0]).to(noisy_images))
            condition = yaw_embedding if condition is None else condition + yaw_embedding
        x = self.input_conv(noisy_images)
        if c.time_input:
            if noise_variances is None:
                raise ValueError("UNet.forward: this network takes noise_variances [N,1,1,1] (time_input=True)")
            noise_variances = noise_variances.to(x.dtype).reshape(-1, 1, 1, 1)
            e = sinusoidal_embedding(noise_variances, c.embedding_dims, c.embedding_min_frequency, c.embedding_max_frequency)
            if condition is not None:
                e = e + condition.to(e.dtype).reshape(e.shape[0], -1, 1, 1)
            # Nearest upsampling of a 1x1 map to SxS is a broadcast.
            e = e.expand(x.shape[0], -1, x.shape[2], x.shape[3])
            x = torch.cat([x, e], dim=1)
        elif noise_variances is not None or condition is not None:
            raise ValueError("UNet.forward: this network has no noise-variance input (time_input=False), "
                             "so nothing to add a condition to either")

        skips: list[torch.Tensor] = []
        for blocks in self.down:
            for block in blocks:
                x = block(x)
                skips.append(x)
            x = F.avg_pool2d(x, 2)
        for block in self.middle:
            x = block(x)
        for blocks in self.up:
            # align_corners=False is Keras' UpSampling2D(interpolation="bilinear") (half-pixel centres).
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            for block in blocks:
                x = block(torch.cat([x, skips.pop()], dim=1))
        return self.output_conv(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
