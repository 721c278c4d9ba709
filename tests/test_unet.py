"""U-Net shapes, parameter counts (computed independently of the code) and FLOPs."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from headrot.config import from_mapping
from headrot.model.flops import count_flops, measure_matmul_flops
from headrot.model.unet import PRESETS, UNet, UNetConfig, count_parameters


def conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def residual(cin: int, width: int) -> int:
    return (conv(cin, width, 1) if cin != width else 0) + conv(cin, width, 3) + conv(width, width, 3)


def keras_count(c: UNetConfig) -> int:
    """The Keras example's get_network, counted layer by layer (norms have no parameters)."""
    total = conv(c.in_channels, c.widths[0], 1)
    ch = c.widths[0] + (c.embedding_dims if c.time_input else 0)
    skips = []
    for w in c.widths[:-1]:
        for _ in range(c.block_depth):
            total += residual(ch, w)
            ch = w
            skips.append(ch)
    for _ in range(c.block_depth):
        total += residual(ch, c.widths[-1])
        ch = c.widths[-1]
    for w in reversed(c.widths[:-1]):
        for _ in range(c.block_depth):
            total += residual(ch + skips.pop(), w)
            ch = w
    return total + conv(ch, c.out_channels, 1)


def test_tiny_shapes_and_exact_parameter_count():
    config = PRESETS["tiny"]
    net = UNet(config)
    x = torch.randn(2, 3, 16, 16)
    assert net(x, torch.rand(2, 1, 1, 1)).shape == (2, 3, 16, 16)
    # widths (8, 16), depth 1, embedding 8: input 1x1 conv 3->8 (32); down block 16->8
    # (1x1 136 + 3x3 1160 + 3x3 584); middle 8->16 (144 + 1168 + 2320); up 24->8
    # (200 + 1736 + 584); output 1x1 8->3 (27).
    by_hand = 32 + (136 + 1160 + 584) + (144 + 1168 + 2320) + (200 + 1736 + 584) + 27
    assert count_parameters(net) == by_hand == keras_count(config) == 8091


def test_paper_parameter_count_and_flops():
    config = PRESETS["paper"]
    with torch.device("meta"):
        net = UNet(config)
    n = count_parameters(net)
    assert n == keras_count(config) == 9_605_187  # "about 9.6 M" (DESIGN)
    # DESIGN: about 6.6 GFLOP per call per 64x64 image; counted: 6.6147 GFLOP.
    assert 6.5e9 < count_flops(config) < 6.7e9
    assert count_flops(config, batch=2) == pytest.approx(count_flops(config))


def test_presets_build_and_run():
    for name, config in PRESETS.items():
        net = UNet(config)
        assert count_parameters(net) == keras_count(config), name
        if name != "paper":
            s = config.image_size
            assert net(torch.randn(1, 3, s, s), torch.rand(1, 1, 1, 1)).shape == (1, 3, s, s)


def test_zero_init_output_and_embedder_variant():
    config = dataclasses.replace(PRESETS["tiny"], time_input=False)
    net = UNet(config)
    assert count_parameters(net) == keras_count(config)
    out = net(torch.randn(2, 3, 16, 16))
    assert torch.equal(out, torch.zeros_like(out))
    with pytest.raises(ValueError, match="no noise-variance input"):
        net(torch.randn(1, 3, 16, 16), torch.rand(1, 1, 1, 1))
    with pytest.raises(ValueError, match="noise_variances"):
        UNet(PRESETS["tiny"])(torch.randn(1, 3, 16, 16))


def test_batch_independent_and_channels_last():
    torch.manual_seed(0)
    net = UNet(dataclasses.replace(PRESETS["tiny"], zero_init_output=False)).double()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    v = torch.rand(3, 1, 1, 1, dtype=torch.float64)
    with torch.no_grad():
        batch = net(x, v)
        rows = torch.cat([net(x[i : i + 1], v[i : i + 1]) for i in range(3)])
        cl = net.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last), v)
    torch.testing.assert_close(batch, rows)
    torch.testing.assert_close(batch, cl)


def test_a_condition_is_added_to_the_noise_embedding():
    torch.manual_seed(0)
    net = UNet(dataclasses.replace(PRESETS["tiny"], zero_init_output=False)).double()
    x, v = torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.rand(2, 1, 1, 1, dtype=torch.float64)
    dims = net.config.embedding_dims
    with torch.no_grad():
        plain = net(x, v)
        torch.testing.assert_close(net(x, v, condition=torch.zeros(2, dims, dtype=torch.float64)), plain)
        moved = net(x, v, condition=torch.randn(2, dims, dtype=torch.float64))
        # The same as shifting the noise embedding itself: the first block sees e + condition.
        shift = torch.zeros(2, dims, dtype=torch.float64)
        shift[1] = 1.0
        one = net(x, v, condition=shift)
    assert not torch.allclose(moved, plain)
    torch.testing.assert_close(one[0], plain[0])  # row 0's condition is zero: its output is unchanged
    assert not torch.allclose(one[1], plain[1])
    with pytest.raises(ValueError, match="no noise-variance input"):
        UNet(dataclasses.replace(PRESETS["tiny"], time_input=False))(x.float(), condition=torch.zeros(2, dims))


def test_a_yaw_input_starts_at_zero_and_then_draws_at_the_yaw_given():
    """yaw_harmonics > 0: the yaw enters through a zero-initialised layer (the network starts as its
    unconditional self), is required there and refused by a network without it."""
    from headrot.model.conditioning import at_yaw

    torch.manual_seed(0)
    plain_config = dataclasses.replace(PRESETS["tiny"], zero_init_output=False)
    plain = UNet(plain_config).double()
    net = UNet(dataclasses.replace(plain_config, yaw_harmonics=4)).double()
    net.load_state_dict({**plain.state_dict(), **{k: v for k, v in net.state_dict().items() if k.startswith("yaw_in")}})
    x, v = torch.randn(3, 3, 16, 16, dtype=torch.float64), torch.rand(3, 1, 1, 1, dtype=torch.float64)
    yaw = torch.tensor([-30.0, 0.0, 30.0])
    with torch.no_grad():
        torch.testing.assert_close(net(x, v, yaw=yaw), plain(x, v))          # zero layer: the base, exactly
        torch.nn.init.normal_(net.yaw_in.weight)
        turned = net(x, v, yaw=yaw)
        assert not torch.allclose(turned, plain(x, v))
        # Each row at its own yaw: row 1 alone at 0 is row 1 of the batch; at_yaw binds the same call.
        torch.testing.assert_close(net(x[1:2], v[1:2], yaw=torch.tensor([0.0])), turned[1:2])
        torch.testing.assert_close(at_yaw(net, yaw)(x, v), turned)
        assert not torch.allclose(net(x, v, yaw=yaw + 20), turned)
    with pytest.raises(ValueError, match="needs yaw"):
        net(x, v)
    with pytest.raises(ValueError, match="no yaw input"):
        plain(x, v, yaw=yaw)
    with pytest.raises(ValueError, match="no yaw input"):
        at_yaw(plain, yaw)
    with pytest.raises(ValueError, match="yaw_harmonics"):
        UNetConfig(time_input=False, yaw_harmonics=4)


def test_config_validation_and_from_mapping():
    with pytest.raises(ValueError, match="divisible"):
        UNetConfig(image_size=30, widths=(8, 16, 32))
    with pytest.raises(ValueError, match="even"):
        UNetConfig(embedding_dims=7)
    config = from_mapping(UNetConfig, dataclasses.asdict(PRESETS["demo"]))
    assert config == PRESETS["demo"] and isinstance(config.widths, tuple)
    with pytest.raises(ValueError, match="unknown key"):
        from_mapping(UNetConfig, {"width": [8]})


def test_matmul_rate_is_positive():
    assert measure_matmul_flops(seconds=0.05, size=128) > 1e6
