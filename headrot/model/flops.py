"""FLOP counts of the networks and the matmul rate of a device, for benchmarks' bounds.

FLOPs follow torch.utils.flop_counter: 2 per multiply-add, convolutions and matmuls
only (normalisation, activations, pooling and upsampling are not counted; they are a
few percent of the work and memory-bound anyway).
"""
from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from headrot.model.unet import UNet, UNetConfig


# ---------------------------------------------------------------------------
# Network FLOPs


def count_flops(config: UNetConfig, batch: int = 1) -> float:
    """FLOPs of one forward call of UNet(config), per image (measured on `batch` images, on meta tensors)."""
    if batch < 1:
        raise ValueError(f"count_flops: batch must be >= 1, got {batch}")
    with torch.device("meta"):
        net = UNet(config)
        x = torch.zeros(batch, config.in_channels, config.image_size, config.image_size)
        variances = torch.zeros(batch, 1, 1, 1)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x, variances) if config.time_input else net(x)
    return counter.get_total_flops() / batch


# ---------------------------------------------------------------------------
# Device rate


def measure_matmul_flops(
    seconds: float = 1.0, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", size: int = 1024
) -> float:
    """FLOP/s achieved by a loop of square [size x size] matmuls for about `seconds` (after one warm-up)."""
    device = torch.device(device)
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.mm(a, b)
    sync()
    calls = 0
    start = time.perf_counter()
    while True:
        torch.mm(a, b)
        calls += 1
        if calls % 4 == 0:
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
    return 2.0 * size**3 * calls / elapsed
