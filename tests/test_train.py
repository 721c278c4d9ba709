"""Training: the steps and the EMA without Ray; a Ray Train run that crashes and resumes."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from headrot.model.unet import PRESETS, UNet
from headrot.train.config import TrainConfig, load_config
from headrot.report.grid import image_grid, to_uint8
from headrot.model.schedule import diffusion_schedule
from headrot.train.steps import EMA, generator_loss, p2_weights, step_generator, to_model_images

TINY = PRESETS["tiny"]  # 16x16, widths [8, 16]


# ---------------------------------------------------------------------------
# Steps (no Ray)


def test_to_model_images_range_and_layout():
    u8 = torch.tensor([0, 255], dtype=torch.uint8).repeat_interleave(16 * 16 * 3 // 2).reshape(1, 16, 16, 3)
    x = to_model_images(u8)
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert np.array_equal(to_uint8(x), u8.numpy())


def test_generator_loss_finite_and_trains():
    torch.manual_seed(0)
    net = UNet(TINY)
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    loss = generator_loss(net, images, step_generator(0, 0, 0))
    # zero-initialised output: the first loss is E|N(0,1)| = sqrt(2/pi) on average
    assert math.isfinite(loss.item()) and 0.5 < loss.item() < 1.1
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)
    # the same (seed, rank, step) draws the same numbers: a resumed run repeats them exactly
    again = generator_loss(net, images, step_generator(0, 0, 0))
    assert again.item() == loss.item()
    assert generator_loss(net, images, step_generator(0, 1, 0)).item() != loss.item()


def test_p2_weighting_favours_noisy_steps_and_keeps_the_loss_scale():
    noise, signal = diffusion_schedule(torch.linspace(0.0, 1.0, 1001, dtype=torch.float64))
    w = p2_weights(noise, signal, gamma=1.0)
    assert w.mean().item() == pytest.approx(1.0, rel=1e-9)      # the scale of the uniform loss
    assert bool((w[1:] >= w[:-1]).all())                         # more noise, more weight
    # t = 0 (SNR 9.3) against t = 1 (SNR 0.0004): 1/(1+SNR) differs ~10x
    assert 8.0 < (w[-1] / w[0]).item() < 12.0
    assert bool((p2_weights(noise, signal, gamma=0.0) == 1.0).all())
    # gamma 0 is the Keras loss to the bit; gamma 1 reweights the same draws
    torch.manual_seed(0)
    net = UNet(TINY)
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    plain = generator_loss(net, images, step_generator(0, 0, 0))
    assert generator_loss(net, images, step_generator(0, 0, 0), p2_gamma=0.0).item() == plain.item()
    weighted = generator_loss(net, images, step_generator(0, 0, 0), p2_gamma=1.0)
    assert math.isfinite(weighted.item()) and weighted.item() != plain.item()
    with pytest.raises(ValueError, match="p2_gamma"):
        TrainConfig(p2_gamma=-1.0)
    # the curve says which loss it draws: weighted and unweighted losses do not compare
    from headrot.train.loop import loss_label

    assert loss_label(TrainConfig()) == "loss (L1 on the noise)"
    assert "P2-weighted" in loss_label(TrainConfig(p2_gamma=1.0))
    assert "image-space" in loss_label(TrainConfig(kind="embedder"))


def test_ema_update_is_exact():
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0]]))
        model.bias.fill_(0.5)
    # decay 0.75: every product and sum below is exact in float32, so equality is exact
    ema = EMA(model, decay=0.75, warmup=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 4.0]]))
        model.bias.fill_(-1.5)
    ema.update(model)
    assert ema.module.weight.tolist() == [[0.75 * 1.0 + 0.25 * 3.0, 0.75 * -2.0 + 0.25 * 4.0]]  # [[1.5, -0.5]]
    assert ema.module.bias.tolist() == [0.75 * 0.5 + 0.25 * -1.5]  # [0.0]
    ema.update(model)  # again: 0.75 * 1.5 + 0.25 * 3 = 1.875
    assert ema.module.weight.tolist() == [[1.875, 0.625]]
    assert not any(p.requires_grad for p in ema.module.parameters())
    # warm-up: update k uses min(decay, (1+k)/(10+k))
    warm = EMA(model, decay=0.999)
    assert warm.decay_at(0) == pytest.approx(0.1)
    assert warm.decay_at(90) == pytest.approx(0.91)
    assert warm.decay_at(10**6) == 0.999
    # round trip
    other = EMA(nn.Linear(2, 1), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.module.weight, ema.module.weight)


def test_ema_update_of_a_unet_is_the_per_tensor_rule_to_the_bit():
    # The fused (foreach) update must do exactly what d * ema + (1 - d) * w per tensor did.
    torch.manual_seed(0)
    model = UNet(TINY)
    ema = EMA(model, decay=0.999)
    reference = [p.detach().clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    for update in range(3):
        d = ema.decay_at(update)
        ema.update(model, update)
        for ref, p in zip(reference, model.parameters()):
            ref.mul_(d).add_(p.detach(), alpha=1.0 - d)
    for ref, got in zip(reference, ema.module.parameters()):
        assert torch.equal(ref, got)


def test_noise_comes_from_the_generator_given_and_the_cpu_by_default():
    # The CPU stream is what resumes rely on: the default (None) draws on the CPU too. (That a
    # CUDA generator draws on the GPU, bench.gpu's case, needs a GPU: it ran there, not here.)
    net = UNet(TINY)
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    torch.manual_seed(5)
    unseeded = generator_loss(net, images)
    torch.manual_seed(5)
    assert generator_loss(net, images).item() == unseeded.item()
    g = torch.Generator(device="cpu").manual_seed(9)
    assert generator_loss(net, images, g).item() == generator_loss(net, images, torch.Generator().manual_seed(9)).item()


def test_config_from_yaml_and_errors(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("preset: tiny\nbatch_size: 8\ncpus_per_worker: 0.5\npartitions: [0, 1]\n")
    config = load_config(str(path), {"epochs": 3, "lr": None})
    assert (config.preset, config.batch_size, config.epochs, config.partitions) == ("tiny", 8, 3, (0, 1))
    assert config.model_config() == TINY
    emb = TrainConfig(kind="embedder", preset="tiny").model_config(generator=TINY)
    assert emb.time_input is False and emb.widths == TINY.widths
    path.write_text("preset: tiny\nbatchsize: 8\n")
    with pytest.raises(ValueError, match="batchsize"):
        load_config(str(path))
    with pytest.raises(ValueError, match="preset"):
        TrainConfig(preset="huge")


def test_image_grid_layout_and_labels():
    images = np.zeros((5, 16, 16, 3), dtype=np.uint8)
    grid = image_grid(images, nrow=3, upscale=2, padding=1)
    assert grid.size == (3 * 32 + 4, 2 * 32 + 3)
    labelled = image_grid(images, nrow=3, row_labels=["a", "b"], col_labels=["x", "y", "z"])
    assert labelled.size[0] > 3 * 16 and labelled.size[1] > 2 * 16
    with pytest.raises(ValueError):
        image_grid(images.astype(np.float32))


# ---------------------------------------------------------------------------
# Ray Train: crash, resume, export


def _constant_images(n: int, size: int = 16, seed: int = 0):
    """Flat colour images: the easiest data there is, so the loss drop is reliable."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(n, 1, 1, 3), dtype=np.uint8)
    return np.broadcast_to(colours, (n, size, size, 3)).copy()


@pytest.mark.slow
def test_train_generator_crash_resume_export(ray_cluster, tmp_path):
    import ray

    from headrot.model.checkpoint import load_model
    from headrot.model.sampler import noise_for_seeds, reverse_diffusion
    from headrot.train.driver import export_latest, train
    from headrot.train.loop import load_state, state_checksum

    images = _constant_images(128)
    rows = [{"image": im, "reject_reason": ""} for im in images]
    rows += [{"image": np.zeros((16, 16, 3), np.uint8), "reject_reason": "not a JPEG"}] * 3
    dataset = ray.data.from_items(rows, override_num_blocks=2)  # few blocks: few Ray Data tasks
    root = str(tmp_path / "run")
    # 2 workers x 0.5 CPU on the 2-CPU test cluster (a whole CPU each would leave none for Ray Data).
    # 128 images / 2 workers / batch 8 = 8 steps per epoch.
    config = TrainConfig(
        preset="tiny", batch_size=8, lr=3e-3, epochs=3, num_workers=2, cpus_per_worker=0.5,
        use_gpu=False, sample_count=4, sample_steps=3, shuffle_buffer=0, fail_after_steps=20,
    )

    # 1. the first run crashes in epoch 3 (step 20) after checkpoints at epochs 1 and 2
    with pytest.raises(Exception, match="simulated failure"):
        train(config, "unused", root, dataset=dataset)
    kind_dir = os.path.join(root, "checkpoints", "generator")
    checkpoints = sorted(d for d in os.listdir(kind_dir) if d.startswith("checkpoint_epoch"))
    assert checkpoints[-1] == "checkpoint_epoch0002_step00000016"
    saved = load_state(os.path.join(kind_dir, checkpoints[-1]))
    assert not os.path.exists(os.path.join(kind_dir, "model.pt"))
    # A stopped run's newest EMA weights can be exported as they are (to measure or ship them).
    exported = export_latest(root, "generator", str(tmp_path / "epoch2.pt"))
    assert exported["epoch"] == 2 and exported["checkpoint"] == checkpoints[-1]
    model, _, extra = load_model(exported["model"], "generator")
    assert extra["step"] == 16
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved["ema"][name]), name
    with pytest.raises(ValueError, match="no checkpoint_epoch"):
        export_latest(str(tmp_path / "empty"), "generator", str(tmp_path / "none.pt"))
    # An earlier epoch the run kept, by number; one it did not keep is refused with the ones it has.
    first = export_latest(root, "generator", str(tmp_path / "epoch1.pt"), epoch=1)
    assert first["epoch"] == 1 and first["checkpoint"] == checkpoints[0] and first["step"] == 8
    older = load_state(os.path.join(kind_dir, checkpoints[0]))
    for name, value in load_model(first["model"], "generator")[0].state_dict().items():
        assert torch.equal(value, older["ema"][name]), name
    with pytest.raises(ValueError, match="keeps epochs 1, 2"):
        export_latest(root, "generator", str(tmp_path / "epoch7.pt"), epoch=7)

    # 2. the same command again resumes from step 16 with the optimizer state it saved
    result = train(config, "unused", root, dataset=dataset)
    assert result["rows"] == 128 and result["rejected"] == 3
    assert result["step"] == 24 and result["epoch"] == 3
    history = result["history"]
    assert [h["step"] for h in history] == [8, 16, 24]
    with open(os.path.join(kind_dir, "metrics.json")) as f:
        assert [h["epoch"] for h in json.load(f)] == [1, 2, 3]
    final = load_state(os.path.join(kind_dir, "checkpoint_epoch0003_step00000024"))
    assert final["history"][:2] == saved["history"]
    assert saved["optimizer"]["state"][0]["step"].item() == 16
    assert final["optimizer"]["state"][0]["step"].item() == 24  # continued, not restarted
    assert len(result["restores"]) == 1
    restored = result["restores"][0]
    assert restored["restored_step"] == 16
    assert restored["restored_optimizer_checksum"] == pytest.approx(state_checksum(saved["optimizer"]), rel=1e-12)
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["samples_per_s"] > 0
    for epoch in (1, 2, 3):
        assert os.path.exists(os.path.join(kind_dir, "samples", f"epoch_{epoch:03d}.png"))
    with open(os.path.join(kind_dir, "loss_curve.png"), "rb") as f:  # the whole curve, across the resume
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # 3. the exported EMA weights load and sample
    model, model_config, extra = load_model(result["model"], "generator")
    assert model_config == TINY and extra["step"] == 24
    with torch.no_grad():
        samples = reverse_diffusion(model, noise_for_seeds([0, 1], (3, 16, 16)), steps=3)
    assert samples.shape == (2, 3, 16, 16) and torch.isfinite(samples).all()
    assert os.path.exists(os.path.join(kind_dir, "_SUCCESS"))
    assert os.path.exists(os.path.join(kind_dir, "train_config.json"))



@pytest.mark.slow
def test_train_embedder_through_frozen_generator(ray_cluster, tmp_path):
    import ray

    from headrot.model.checkpoint import load_model, save_model
    from headrot.train.driver import train

    root = str(tmp_path / "run")
    torch.manual_seed(0)
    generator_uri = os.path.join(root, "checkpoints", "generator", "model.pt")
    save_model(generator_uri, "generator", UNet(TINY), TINY)  # untrained is enough to train through
    rows = [{"image": im} for im in _constant_images(32, seed=1)]  # no reject_reason column: all usable
    config = TrainConfig(
        kind="embedder", preset="tiny", batch_size=8, epochs=1, num_workers=1, use_gpu=False,
        embed_steps=2, sample_count=4, shuffle_buffer=0,
    )
    result = train(config, "unused", root, dataset=ray.data.from_items(rows, override_num_blocks=1))
    assert result["rows"] == 32 and result["rejected"] == 0 and result["step"] == 4
    embedder, embedder_config, extra = load_model(result["model"], "embedder")
    assert embedder_config.time_input is False and embedder_config.widths == TINY.widths
    assert extra["generator"] == generator_uri
    assert embedder(torch.zeros(1, 3, 16, 16)).shape == (1, 3, 16, 16)
    assert os.path.exists(os.path.join(root, "checkpoints", "embedder", "samples", "epoch_001.png"))


@pytest.mark.slow
def test_train_generator_warm_start_from_exported_model(ray_cluster, tmp_path):
    """init_from: a fresh run starts at an exported model's weights (model and EMA); a
    checkpoint of another network is refused on the driver with the file named."""
    import ray

    from headrot.model.checkpoint import load_model, save_model
    from headrot.train.driver import train

    torch.manual_seed(5)
    warm = UNet(TINY)
    with torch.no_grad():  # the U-Net zero-initialises its last conv: make every weight non-trivial
        for p in warm.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    init_uri = str(tmp_path / "warm" / "model.pt")
    save_model(init_uri, "generator", warm, TINY)
    rows = [{"image": im} for im in _constant_images(16, seed=2)]
    # No EMA warm-up and a vanishing step: the exported EMA is the warm start, to float precision.
    config = TrainConfig(
        preset="tiny", batch_size=8, epochs=1, num_workers=1, use_gpu=False, lr=1e-12, weight_decay=0.0,
        ema_warmup=False, sample_grid=False, shuffle_buffer=0, init_from=init_uri,
    )
    result = train(config, "unused", str(tmp_path / "run"), dataset=ray.data.from_items(rows, override_num_blocks=1))
    exported, _, _ = load_model(result["model"], "generator")
    fresh = UNet(TINY)  # what a run without init_from would have started from
    for name, value in exported.state_dict().items():
        assert torch.allclose(value, warm.state_dict()[name], atol=1e-6), name
    assert any(not torch.allclose(v, fresh.state_dict()[k]) for k, v in exported.state_dict().items())

    other = str(tmp_path / "other" / "model.pt")
    save_model(other, "generator", UNet(PRESETS["demo"]), PRESETS["demo"])
    with pytest.raises(ValueError, match="other/model.pt holds a different network"):
        train(TrainConfig(preset="tiny", init_from=other, use_gpu=False), "unused", str(tmp_path / "run2"),
              dataset=ray.data.from_items(rows, override_num_blocks=1))
