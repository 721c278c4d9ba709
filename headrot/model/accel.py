"""How a model actor runs its network fast: device, precision, memory layout, compilation,
host-to-device transfers, batch size from free memory, and how busy the model kept the chip.

One `Inference` object per actor, built from the stage's `precision` / `compile` settings:

    acc = Inference.for_device(device, precision="auto", compile=False)
    net = acc.prepare(net)                 # channels_last, eval, torch.compile when asked
    with acc.autocast():                   # bf16 on GPUs that have it; a no-op in fp32
        x = acc.to_device(numpy_batch)     # pinned, non-blocking copy on CUDA
        ...
    with acc.busy.timing():                # model time vs wall time -> busy fraction
        ...

Defaults ("auto"): on CUDA bf16 autocast (activations and matmuls in bf16, the sampler's
arithmetic stays float32 because autocast only touches conv/matmul ops) and channels_last
(tensor cores want NHWC); on CPU float32 and the plain layout: bf16 on a CPU without AMX is
slower than float32, and channels_last made no steady difference here (bench/results/model.json).
`compile` is off unless asked: torch.compile costs a minute of warm-up per actor, and for
inference it was not measured on a GPU yet (for training the paper network on an H200 it gave
1.59x: BENCHMARKS.md "On a GPU"); with mode="reduce-overhead" it also captures CUDA graphs.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

import numpy as np

Precision = Literal["auto", "fp32", "bf16"]


@dataclass
class BusyMeter:
    """Share of an actor's life spent inside the model (GPU busy fraction on a GPU).

    `timing()` wraps model work and synchronises CUDA at its end, so the time is the
    chip's, not the launch queue's. The wall clock runs from the first timed block to the
    last one's end: the gaps between calls (waiting for input from the decode tasks) are
    what the fraction exposes."""

    cuda: bool = False
    model_s: float = 0.0
    first_start: float | None = None
    last_end: float | None = None

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        start = time.perf_counter()
        if self.first_start is None:
            self.first_start = start
        try:
            yield
        finally:
            if self.cuda:
                import torch

                torch.cuda.synchronize()
            end = time.perf_counter()
            self.model_s += end - start
            self.last_end = end

    def wall_s(self) -> float:
        if self.first_start is None or self.last_end is None:
            return 0.0
        return self.last_end - self.first_start

    def fraction(self) -> float | None:
        wall = self.wall_s()
        return None if wall <= 0 else min(1.0, self.model_s / wall)

    def snapshot(self) -> dict[str, float]:
        return {"model_s": round(self.model_s, 4), "wall_s": round(self.wall_s(), 4)}


@dataclass
class Inference:
    device: Any                      # torch.device
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    pin_memory: bool = False
    busy: BusyMeter = field(default_factory=BusyMeter)

    @classmethod
    def for_device(cls, device, precision: Precision = "auto", compile: bool = False) -> "Inference":
        import torch

        device = torch.device(device)
        cuda = device.type == "cuda"
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
        if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
            raise ValueError(f"precision bf16: {torch.cuda.get_device_name(device)} has no bf16; use fp32")
        bf16 = precision == "bf16" or (precision == "auto" and cuda and torch.cuda.is_bf16_supported())
        return cls(device=device, bf16=bf16, channels_last=cuda, compile=compile, pin_memory=cuda,
                   busy=BusyMeter(cuda=cuda))

    def describe(self) -> dict[str, Any]:
        return {"device": str(self.device), "bf16": self.bf16, "channels_last": self.channels_last,
                "compile": self.compile, "pin_memory": self.pin_memory}

    def prepare(self, net):
        """The network on the device, frozen, in the layout (and compiled when asked)."""
        import torch

        net = net.to(self.device).eval().requires_grad_(False)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        if self.compile:
            # reduce-overhead = CUDA graphs on GPUs: the 10-step sampler launches ~100 small
            # kernels per call, launch-bound at this model size. On CPU: plain inductor.
            net = torch.compile(net, mode="reduce-overhead" if self.device.type == "cuda" else "default",
                                dynamic=False)
        return net

    def autocast(self):
        import torch

        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def to_device(self, array: np.ndarray):
        """The array as a torch tensor on the device (same dtype); pinned + non-blocking on
        CUDA so the copy overlaps the previous batch's kernels. NCHW float batches are put in
        the model's layout; callers that permute on the device (uint8 NHWC images) get NHWC,
        which *is* channels_last once permuted to NCHW."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(array))
        if self.pin_memory:
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=self.pin_memory)
        if self.channels_last and x.dim() == 4 and x.is_floating_point():
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def batch_size_from_memory(requested: int, free_bytes: int, per_item_bytes: float, reserve: float = 0.2,
                           multiple: int = 8) -> int:
    """The largest batch <= `requested` whose activations fit in `free_bytes` less a `reserve`
    share (fragmentation, the allocator's cache, the next batch's pinned copy), rounded down
    to a `multiple` (tensor-core friendly), and at least 1."""
    if requested < 1:
        raise ValueError(f"batch size must be >= 1, got {requested}")
    if per_item_bytes <= 0:
        return requested
    fits = int(free_bytes * (1.0 - reserve) // per_item_bytes)
    if fits >= multiple:
        fits -= fits % multiple
    return max(1, min(requested, fits))


def probe_batch_size(net, acc: Inference, image_size: int, requested: int, probe: int = 8) -> int:
    """On CUDA: run one forward at a small batch, measure the peak memory it added per item,
    and size the batch from the free memory (torch.cuda.mem_get_info). Elsewhere: `requested`
    (host memory is not the limit at these sizes; the CPU rate is flat in batch size)."""
    if acc.device.type != "cuda":
        return requested
    import torch

    probe = max(1, min(probe, requested))
    torch.cuda.synchronize(acc.device)
    torch.cuda.reset_peak_memory_stats(acc.device)
    before = torch.cuda.memory_allocated(acc.device)
    x = acc.to_device(np.zeros((probe, 3, image_size, image_size), np.float32))
    # A yaw-conditioned generator takes its yaw too (any yaw costs the same memory).
    yaw = {"yaw": torch.zeros(probe, device=acc.device)} if getattr(getattr(net, "config", None), "yaw_harmonics", 0) else {}
    with torch.inference_mode(), acc.autocast():
        net(x, torch.full((probe, 1, 1, 1), 0.5, device=acc.device), **yaw)
    torch.cuda.synchronize(acc.device)
    per_item = (torch.cuda.max_memory_allocated(acc.device) - before) / probe
    free, _total = torch.cuda.mem_get_info(acc.device)
    return batch_size_from_memory(requested, free, per_item)
