"""headrot.model.accel: precision, layout, transfers, batch size from memory, busy fraction.

The CUDA branches (pinned copies, bf16 by default, memory probe) need a GPU; what runs here
is every decision on CPU, bf16 autocast on the CPU (same code path, CPU kernels), and the
arithmetic the GPU branches use."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from headrot.model import accel
from headrot.model.accel import BusyMeter, Inference, batch_size_from_memory
from headrot.model.sampler import reverse_diffusion
from headrot.model.unet import PRESETS, UNet
from headrot.stages.sharding import busy_fraction


def test_cpu_defaults_are_fp32_plain_layout_unpinned():
    acc = Inference.for_device("cpu")
    assert acc.describe() == {"device": "cpu", "bf16": False, "channels_last": False,
                              "compile": False, "pin_memory": False}
    assert Inference.for_device("cpu", "bf16").bf16 is True
    with pytest.raises(ValueError, match="precision"):
        Inference.for_device("cpu", "fp8")


def test_bf16_autocast_runs_in_bf16_and_stays_close_to_fp32():
    torch.manual_seed(0)
    net = UNet(PRESETS["tiny"])
    with torch.no_grad():  # the output conv starts at zero (predicts no noise): give it weights
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    z = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    images = {}
    for precision in ("fp32", "bf16"):
        acc = Inference.for_device("cpu", precision)
        model = acc.prepare(net)
        with torch.inference_mode(), acc.autocast():
            x = acc.to_device(z)
            out = model(x, torch.full((4, 1, 1, 1), 0.5))
            images[precision] = reverse_diffusion(model, x, steps=3).float()
        assert out.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
    diff = images["bf16"] - images["fp32"]
    assert diff.abs().max() > 0                      # bf16 really ran
    relative = float(diff.norm() / images["fp32"].norm())
    assert relative < 0.05                           # ... and moved the render by < 5% (bf16: 8-bit mantissa)


def test_to_device_keeps_dtype_and_layout():
    acc = Inference(device=torch.device("cpu"), channels_last=True)
    x = acc.to_device(np.zeros((2, 3, 8, 8), np.float32))
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    u = acc.to_device(np.zeros((2, 8, 8, 3), np.uint8))
    assert u.dtype == torch.uint8 and u.shape == (2, 8, 8, 3)


def test_compile_wraps_the_network_and_checkpoints_still_see_the_bare_one():
    from headrot.model.checkpoint import _unwrap as unwrap

    net = UNet(PRESETS["tiny"])
    compiled = Inference(device=torch.device("cpu"), compile=True).prepare(net)
    assert compiled is not net and unwrap(compiled) is net   # torch.compile is lazy: no compile here


def test_batch_size_from_free_memory():
    gib = 1 << 30
    # 10 GiB free, 20% reserve, 100 MiB per item -> 81 fit -> 80 (multiple of 8).
    assert batch_size_from_memory(512, 10 * gib, 100 * (1 << 20)) == 80
    assert batch_size_from_memory(64, 10 * gib, 100 * (1 << 20)) == 64        # never above the request
    assert batch_size_from_memory(64, 1 * gib, 500 * (1 << 20)) == 1          # at least one
    assert batch_size_from_memory(64, 1 * gib, 0) == 64                      # nothing measured: as asked
    with pytest.raises(ValueError):
        batch_size_from_memory(0, gib, 1)


def test_busy_meter_counts_model_time_against_wall_time(monkeypatch):
    clock = iter([0.0, 1.0, 3.0, 4.0])          # busy 0-1, idle 1-3, busy 3-4
    monkeypatch.setattr(accel.time, "perf_counter", lambda: next(clock))
    meter = BusyMeter()
    assert meter.fraction() is None
    for _ in range(2):
        with meter.timing():
            pass
    assert meter.snapshot() == {"model_s": 2.0, "wall_s": 4.0}
    assert meter.fraction() == pytest.approx(0.5)


def test_busy_fraction_takes_each_actors_last_totals():
    snaps = [{"actor": "a:1", "model_s": 1.0, "wall_s": 2.0}, {"actor": "b:2", "model_s": 3.0, "wall_s": 4.0},
             {"actor": "a:1", "model_s": 3.0, "wall_s": 4.0}]
    # a's last totals (3 of 4 s) + b's (3 of 4 s); a's first snapshot is inside its last.
    assert busy_fraction(json.dumps(s) for s in snaps) == pytest.approx(6 / 8)
    assert busy_fraction(["{}", ""]) is None
