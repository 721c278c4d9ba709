"""bench.keep_background: DiffEdit's mask of where the yaw acts, and sampling that keeps the rest."""
import pytest
import torch

from headrot.model.conditioning import at_yaw
from bench.keep_background import KeepOutside, edit_mask
from headrot.model.pivotal import pivot_noise
from headrot.model.sampler import ddim_inversion, reverse_diffusion
from tests.test_pivotal import tiny_yaw_net


def source():
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    return image, torch.tensor([10.0, -20.0])


def test_blended_sampling_keeps_the_source_outside_the_mask_and_draws_freely_inside():
    net = tiny_yaw_net()
    image, yaw = source()
    with torch.no_grad():
        z = ddim_inversion(at_yaw(net, yaw), image, 4, None, 2, 0)
        eps = pivot_noise(net, image, z)
        turned = at_yaw(net, yaw + 30)
        free = reverse_diffusion(turned, z, 4)
        everywhere = reverse_diffusion(turned, z, 4, keep=KeepOutside(torch.ones(2, 1, 16, 16), image, eps))
        nowhere = reverse_diffusion(turned, z, 4, keep=KeepOutside(torch.zeros(2, 1, 16, 16), image, eps))
        half = torch.zeros(2, 1, 16, 16)
        half[..., 8:] = 1
        blended = reverse_diffusion(turned, z, 4, keep=KeepOutside(half, image, eps))
    assert torch.equal(everywhere, free)
    assert torch.equal(nowhere, image)
    assert torch.equal(blended[..., :8], image[..., :8])
    # inside, the network drew in the kept half's context: neither the source nor the free draw
    assert not torch.allclose(blended[..., 8:], image[..., 8:], atol=1e-3)
    assert not torch.allclose(blended[..., 8:], free[..., 8:], atol=1e-3)


def test_the_mask_marks_where_the_yaw_changes_the_prediction_and_is_seeded():
    net = tiny_yaw_net()
    image, yaw = source()
    with torch.no_grad():
        # an untrained net's yaw acts nearly everywhere: a high threshold keeps some of the image
        mask = edit_mask(net, image, yaw, yaw + 30, draws=2, seed=5, threshold=0.9)
        again = edit_mask(net, image, yaw, yaw + 30, draws=2, seed=5, threshold=0.9)
        unturned = edit_mask(net, image, yaw, yaw, draws=2, seed=5)
    assert mask.shape == (2, 1, 16, 16) and torch.equal(mask, again)
    assert float(mask.min()) >= 0 and float(mask.max()) == 1.0   # each image's strongest change is drawn
    assert 0 < float((mask < 1).float().mean()) < 1               # and the rest kept, wholly or in part
    assert float(unturned.max()) == 0.0                            # no turn: nothing to draw


def test_keep_refuses_nonsense():
    image, yaw = source()
    with pytest.raises(ValueError, match="mask"):
        KeepOutside(torch.ones(2, 3, 16, 16), image, image)
    with pytest.raises(ValueError, match="threshold"):
        edit_mask(tiny_yaw_net(), image, yaw, yaw, threshold=1.5)
