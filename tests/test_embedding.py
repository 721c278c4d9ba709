"""The three embedding methods on the tiny U-Net."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from headrot.model.embedding import EmbedResult, embed, embedder_loss, psnr
from headrot.model.sampler import reverse_diffusion
from headrot.model.unet import PRESETS, UNet

TINY = PRESETS["tiny"]


def generator(seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    net = UNet(TINY).double().eval()
    # Not the zero init: a zero network makes inversion exact and refinement moot.
    nn.init.normal_(net.output_conv.weight, std=0.05)
    return net


def faces(n: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g, dtype=torch.float64) * 1.6 - 0.8


def test_inversion_round_trips_shape_and_reports_error():
    x = faces()
    result = embed(x, "inversion", generator(), steps=4)
    assert isinstance(result, EmbedResult)
    assert result.latents.shape == x.shape and result.recon_error.shape == (3,)
    recon = reverse_diffusion(generator(), result.latents, steps=4)
    torch.testing.assert_close(result.recon_error, (x - recon).abs().flatten(1).mean(1).float())


def test_reconstruct_mask_measures_only_the_rows_it_picks():
    x = faces(4)
    net = generator()
    whole = embed(x, "inversion", net, steps=3)
    rows = torch.tensor([True, False, False, True])
    part = embed(x, "inversion", net, steps=3, reconstruct=rows)
    torch.testing.assert_close(part.latents, whole.latents, rtol=0, atol=0)  # the latent is not the decode's
    torch.testing.assert_close(part.recon_error[rows], whole.recon_error[rows])
    torch.testing.assert_close(part.reconstructions[rows], whole.reconstructions[rows])
    assert part.recon_error[~rows].isnan().all() and part.reconstructions[~rows].isnan().all()
    assert psnr(part.reconstructions, x)[~rows].isnan().all()
    none = embed(x, "inversion", net, steps=3, reconstruct=torch.zeros(4, dtype=torch.bool))
    assert none.recon_error.isnan().all()
    with pytest.raises(ValueError, match="reconstruct must be a \\[4\\] mask"):
        embed(x, "inversion", net, steps=3, reconstruct=torch.ones(3, dtype=torch.bool))


def test_refine_lowers_error_and_is_batch_independent():
    x = faces()
    net = generator()
    start = embed(x, "inversion", net, steps=3)
    with torch.inference_mode():  # how a Ray Data actor calls it
        refined = embed(x, "refine", net, steps=3, refine_steps=15, refine_lr=0.05)
    assert (refined.recon_error < 0.9 * start.recon_error).all(), (start.recon_error, refined.recon_error)
    recon = reverse_diffusion(net, refined.latents, steps=3)
    torch.testing.assert_close(refined.recon_error, (x - recon).abs().flatten(1).mean(1).float())
    # The generator's parameters got no gradients.
    assert all(p.grad is None for p in net.parameters())
    alone = embed(x[1:2], "refine", net, steps=3, refine_steps=15, refine_lr=0.05)
    torch.testing.assert_close(alone.latents[0], refined.latents[1], rtol=1e-6, atol=1e-6)


def test_embedder_zero_init_gives_zero_latents_and_trains():
    x = faces(2)
    net = generator()
    embedder = UNet(dataclasses.replace(TINY, time_input=False)).double()
    result = embed(x, "network", net, embedder=embedder, steps=2)
    assert torch.equal(result.latents, torch.zeros_like(x))
    # embedder_loss: gradients reach the embedder through the frozen generator.
    net.requires_grad_(False)
    loss = embedder_loss(embedder, net, x, steps=2)
    loss.backward()
    assert embedder.output_conv.weight.grad.abs().sum() > 0
    # refine may start from the network too
    refined = embed(x, "refine", net, embedder=embedder, refine_from="network", steps=2, refine_steps=3)
    assert (refined.recon_error <= result.recon_error + 1e-6).all()


def test_bad_arguments():
    x = faces(1)
    with pytest.raises(ValueError, match="unknown method"):
        embed(x, "magic", generator())
    with pytest.raises(ValueError, match="embedder"):
        embed(x, "network", generator())
    with pytest.raises(ValueError, match="refine_from"):
        embed(x, "refine", generator(), refine_from="nope")


def test_psnr():
    a = torch.zeros(2, 3, 4, 4)
    b = a.clone()
    b[0] += 0.2  # mse 0.04 over a peak-to-peak of 2: 10*log10(4/0.04) = 20 dB
    p = psnr(a, b)
    assert p[0].item() == pytest.approx(20.0, abs=1e-4) and p[1].item() == float("inf")
