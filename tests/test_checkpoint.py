"""Checkpoints: round trip, and refusal of missing, corrupt, foreign and pickled-code files."""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from torch import nn

from headrot.model.checkpoint import FORMAT, load_model, save_model
from headrot.model.unet import PRESETS, UNet

TINY = PRESETS["tiny"]


def trained_tiny() -> UNet:
    torch.manual_seed(0)
    net = UNet(TINY)
    nn.init.normal_(net.output_conv.weight, std=0.1)
    return net


def test_round_trip_same_outputs(tmp_path):
    net = trained_tiny()
    uri = str(tmp_path / "checkpoints" / "generator" / "model.pt")
    save_model(uri, "generator", net, TINY, extra={"step": 12, "loss": 0.25, "ema": [1, 2]})
    loaded, config, extra = load_model(uri, "generator")
    assert config == TINY and extra == {"step": 12, "loss": 0.25, "ema": [1, 2]}
    x, v = torch.randn(2, 3, 16, 16), torch.rand(2, 1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, v), net(x, v), rtol=0, atol=0)


def test_a_yaw_conditioned_generator_round_trips_with_its_yaw_input(tmp_path):
    config = dataclasses.replace(TINY, yaw_harmonics=4)
    torch.manual_seed(0)
    net = UNet(config)
    nn.init.normal_(net.output_conv.weight, std=0.1)
    nn.init.normal_(net.yaw_in.weight)
    uri = str(tmp_path / "generator_yaw.pt")
    save_model(uri, "generator", net, config)
    loaded, got, _ = load_model(uri, "generator")
    assert got.yaw_harmonics == 4
    x, v, yaw = torch.randn(2, 3, 16, 16), torch.rand(2, 1, 1, 1), torch.tensor([-20.0, 25.0])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, v, yaw=yaw), net(x, v, yaw=yaw), rtol=0, atol=0)


def test_the_shipped_yaw_generator_is_the_demo_generator_with_a_yaw_input():
    """headrot/assets/demo_generator_yaw.pt: the demo generator's network and schedule, a yaw input,
    and the probe and step it was exported from (README, Models)."""
    from importlib import resources

    assets = resources.files("headrot") / "assets"
    _, plain, _ = load_model(str(assets / "demo_generator.pt"), "generator")
    model, config, extra = load_model(str(assets / "demo_generator_yaw.pt"), "generator")
    assert config == dataclasses.replace(plain, yaw_harmonics=config.yaw_harmonics) and config.yaw_harmonics > 0
    assert extra["yaw_conditioned"]["step"] > 0 and "export" in extra["yaw_conditioned"]["made_by"]
    assert model.yaw_in.weight.abs().sum() > 0   # trained: the yaw does something


def test_embedder_and_wrapped_models(tmp_path):
    config = dataclasses.replace(TINY, time_input=False)
    net = UNet(config)
    uri = str(tmp_path / "e.pt")
    save_model(uri, "embedder", torch.nn.DataParallel(net), config)
    loaded, loaded_config, extra = load_model(uri, "embedder")
    assert loaded_config == config and extra == {}
    with pytest.raises(ValueError, match="time_input"):
        save_model(str(tmp_path / "bad.pt"), "generator", net, config)


@pytest.mark.slow
def test_round_trip_s3(s3_bucket):
    net = trained_tiny()
    uri = f"{s3_bucket}/run/checkpoints/generator/model.pt"
    save_model(uri, "generator", net, TINY)
    loaded, _, _ = load_model(uri, "generator")
    for a, b in zip(loaded.state_dict().values(), net.state_dict().values()):
        assert torch.equal(a, b)


def test_missing_corrupt_and_wrong_kind(tmp_path):
    missing = str(tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="not found") as info:
        load_model(missing, "generator")
    assert missing in str(info.value)

    uri = str(tmp_path / "g.pt")
    save_model(uri, "generator", trained_tiny(), TINY)
    with pytest.raises(ValueError, match="holds a 'generator', not a 'embedder'"):
        load_model(uri, "embedder")

    data = open(uri, "rb").read()
    for name, bad in [("truncated.pt", data[: len(data) // 2]), ("garbage.pt", os.urandom(300)), ("empty.pt", b"")]:
        path = str(tmp_path / name)
        open(path, "wb").write(bad)
        with pytest.raises(ValueError, match="corrupt") as info:
            load_model(path, "generator")
        assert path in str(info.value)


def test_wrong_format_refused(tmp_path):
    uri = str(tmp_path / "plain.pt")
    torch.save({"state_dict": UNet(TINY).state_dict()}, uri)  # a bare nanoGPT-style file, no format
    with pytest.raises(ValueError, match="format"):
        load_model(uri, "generator")
    torch.save({"format": FORMAT, "kind": "generator", "model_config": {"widths": [8, 16], "colour": 1},
                "state_dict": {}}, uri)
    with pytest.raises(ValueError, match="unknown key"):
        load_model(uri, "generator")


class Payload:
    """Unpickling this would run code: what a tampered checkpoint carries."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/headrot-pwned-by-checkpoint",))


def test_pickle_payload_refused_and_not_run(tmp_path):
    marker = "/tmp/headrot-pwned-by-checkpoint"
    if os.path.exists(marker):
        os.remove(marker)
    uri = str(tmp_path / "evil.pt")
    net = UNet(TINY)
    torch.save({"format": FORMAT, "kind": "generator", "model_config": dataclasses.asdict(TINY),
                "state_dict": net.state_dict(), "extra": {"x": Payload()}}, uri)
    with pytest.raises(ValueError, match="refused") as info:
        load_model(uri, "generator")
    assert uri in str(info.value)
    assert not os.path.exists(marker)


def test_unloadable_extra_refused_at_save(tmp_path):
    uri = str(tmp_path / "x.pt")
    with pytest.raises(ValueError, match="extra"):
        save_model(uri, "generator", UNet(TINY), TINY, extra={"obj": Payload()})
    assert not os.path.exists(uri)


def test_schedule_travels_with_the_weights(tmp_path):
    """A checkpoint records the schedule its network was trained under; the sampler uses it;
    a checkpoint from before the schedule was saved loads with the default one."""
    import io

    from headrot.model.sampler import reverse_diffusion
    from headrot.model.schedule import ScheduleConfig

    net = trained_tiny()
    other = ScheduleConfig(max_signal_rate=0.9, min_signal_rate=0.05)
    uri = str(tmp_path / "model.pt")
    save_model(uri, "generator", net, TINY, schedule=other)
    loaded, _, _ = load_model(uri, "generator")
    assert loaded.schedule == other
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        own = reverse_diffusion(loaded, noise, steps=3)
        torch.testing.assert_close(own, reverse_diffusion(net, noise, steps=3, schedule=other), rtol=0, atol=0)
        assert not torch.allclose(own, reverse_diffusion(net, noise, steps=3))  # the default differs

    # An old checkpoint: the same payload without the "schedule" key.
    payload = torch.load(uri, weights_only=True)
    del payload["schedule"]
    old = tmp_path / "old.pt"
    buf = io.BytesIO()
    torch.save(payload, buf)
    old.write_bytes(buf.getvalue())
    loaded_old, _, _ = load_model(str(old), "generator")
    assert loaded_old.schedule == ScheduleConfig()
    with torch.no_grad():
        torch.testing.assert_close(reverse_diffusion(loaded_old, noise, steps=3),
                                   reverse_diffusion(net, noise, steps=3), rtol=0, atol=0)
