"""headrot.model.pivotal: a copy of the yaw generator fitted to one source, the original untouched."""
import pytest
import torch

from headrot.model.conditioning import at_yaw
from headrot.model.pivotal import pivot_noise, tune_on_source
from headrot.model.sampler import reverse_diffusion
from headrot.model.unet import UNet, UNetConfig


def tiny_yaw_net():
    torch.manual_seed(0)
    net = UNet(UNetConfig(image_size=16, widths=(8, 16), block_depth=1, norm_groups=8, yaw_harmonics=2,
                          zero_init_output=False))   # a zero-initialised output would predict no noise at all
    torch.nn.init.normal_(net.yaw_in.weight)
    return net.eval()


def test_tuning_fits_the_pivot_to_its_source_and_leaves_the_generator_alone():
    net = tiny_yaw_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    image = torch.linspace(-0.8, 0.8, 3 * 16 * 16).reshape(3, 16, 16)
    # A pivot the untrained net draws far from the image (its own inversion would already be close).
    pivot = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(1))

    def error(model):
        with torch.no_grad():
            return float((reverse_diffusion(at_yaw(model, torch.tensor([10.0])), pivot[None], 4)[0] - image).abs().mean())

    tuned = tune_on_source(net, image, pivot, 10.0, steps=40, lr=3e-3, seed=3)
    assert error(tuned) < 0.5 * error(net)            # the pivot now draws its source more closely
    assert not tuned.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    again = tune_on_source(net, image, pivot, 10.0, steps=40, lr=3e-3, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), again.state_dict().values()))
    assert tune_on_source(net, image, pivot, 10.0, steps=0) is not net   # a copy even untrained


def test_tuning_works_inside_inference_mode_as_the_render_actor_calls_it():
    net = tiny_yaw_net()
    with torch.inference_mode():
        image = torch.zeros(3, 16, 16)
        pivot = torch.randn(3, 16, 16)
        tuned = tune_on_source(net, image, pivot, 0.0, steps=2, lr=1e-3)
        assert not torch.equal(next(tuned.parameters()), next(net.parameters()))


def test_the_pivot_line_passes_through_the_pivot():
    net = tiny_yaw_net()
    image, pivot = torch.rand(3, 16, 16) * 2 - 1, torch.randn(3, 16, 16)
    from headrot.model.schedule import diffusion_schedule

    sigma_1, alpha_1 = diffusion_schedule(torch.ones(1))
    assert torch.allclose(alpha_1 * image + sigma_1 * pivot_noise(net, image, pivot), pivot, atol=1e-5)


def test_tuning_refuses_nonsense():
    net = tiny_yaw_net()
    with pytest.raises(ValueError, match="steps"):
        tune_on_source(net, torch.zeros(3, 16, 16), torch.zeros(3, 16, 16), 0.0, steps=-1)
    with pytest.raises(ValueError, match="batch"):
        tune_on_source(net, torch.zeros(3, 16, 16), torch.zeros(3, 16, 16), 0.0, steps=1, batch=1)
    with pytest.raises(ValueError, match="pivot_share"):
        tune_on_source(net, torch.zeros(3, 16, 16), torch.zeros(3, 16, 16), 0.0, steps=1, pivot_share=1.5)


def test_the_pivot_share_is_the_part_of_the_batch_on_the_pivots_line():
    """pivot_share 0 tunes on fresh noise alone: the copy does not depend on the pivot. At the
    default (half and half, as pivot_share 0.5) it does."""
    net = tiny_yaw_net()
    image = torch.linspace(-0.8, 0.8, 3 * 16 * 16).reshape(3, 16, 16)
    a, b = (torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(s)) for s in (1, 2))

    def tuned(pivot, **share):
        return tune_on_source(net, image, pivot, 10.0, steps=3, lr=1e-3, seed=3, **share).state_dict()

    def same(x, y):
        return all(torch.equal(x[n], p) for n, p in y.items())

    assert same(tuned(a, pivot_share=0.0), tuned(b, pivot_share=0.0))
    assert not same(tuned(a), tuned(b))
    assert same(tuned(a), tuned(a, pivot_share=0.5))


def test_the_probe_measures_the_copies_the_render_stage_draws_with():
    """bench.pivotal_tuning's copies after k steps of one run are tune_on_source's after k steps."""
    from bench.pivotal_tuning import tuned_at

    net = tiny_yaw_net()
    image, pivot = torch.rand(3, 16, 16) * 2 - 1, torch.randn(3, 16, 16)
    got = {k: {n: p.clone() for n, p in copy.state_dict().items()}
           for k, copy in tuned_at(net, image, pivot, 5.0, [2, 4], lr=1e-3, seed=7)}
    assert sorted(got) == [2, 4]
    for k in (2, 4):
        alone = tune_on_source(net, image, pivot, 5.0, k, lr=1e-3, seed=7).state_dict()
        assert all(torch.equal(got[k][n], p) for n, p in alone.items())


@pytest.mark.parametrize("together", [True, False])
def test_copies_tuned_together_are_each_the_copy_tuned_alone(together):
    """tune_copies trains K copies as one batched network (or one by one, as on the CPU): copy k is
    source k's lone tuning (to float rounding), and a batch drawn by the copies gives row r to copy
    r mod K."""
    from headrot.model.pivotal import tune_copies

    net = tiny_yaw_net()
    images, pivots = torch.rand(3, 3, 16, 16) * 2 - 1, torch.randn(3, 3, 16, 16)
    yaws, seeds = [5.0, -10.0, 20.0], [1, 2, 3]
    copies = tune_copies(net, images, pivots, yaws, 5, lr=1e-3, seeds=seeds, together=together)
    alone = [tune_on_source(net, images[k], pivots[k], yaws[k], 5, lr=1e-3, seed=seeds[k]) for k in range(3)]
    for k in range(3):
        theirs = alone[k].state_dict()
        assert all(torch.allclose(p, theirs[n], atol=1e-6) for n, p in copies.module(k).state_dict().items())
    assert not torch.allclose(copies.module(0).state_dict()["yaw_in.weight"],
                              copies.module(1).state_dict()["yaw_in.weight"])   # each its own
    x, variances, yaw = torch.randn(6, 3, 16, 16), torch.rand(6, 1, 1, 1), torch.linspace(-30, 30, 6)
    with torch.no_grad():
        drawn = copies(x, variances, yaw=yaw)
        expected = torch.cat([alone[r % 3](x[r:r + 1], variances[r:r + 1], yaw=yaw[r:r + 1]) for r in range(6)])
        assert torch.allclose(drawn, expected, atol=1e-5)
        with pytest.raises(ValueError, match="copy r mod 3"):
            copies(x[:4], variances[:4], yaw=yaw[:4])


@pytest.mark.parametrize("together", [True, False])
def test_up_layers_tune_the_up_path_only(together):
    """layers='up': the up path and the output conv move; the input, down and middle blocks and the
    noise and yaw embeddings stay the generator's, bit for bit; the fit still draws the pivot closer."""
    from headrot.model.pivotal import tune_copies, tuned_names

    net = tiny_yaw_net()
    images, pivots = torch.rand(2, 3, 16, 16) * 2 - 1, torch.randn(2, 3, 16, 16)
    copies = tune_copies(net, images, pivots, [5.0, -10.0], 5, lr=1e-3, seeds=[1, 2], together=together,
                         layers="up")
    up = tuned_names(net, "up")
    assert up and all(n.startswith(("up.", "output_conv.")) for n in up)
    original = dict(net.named_parameters())
    for k in range(2):
        mine = dict(copies.module(k).named_parameters())
        assert all(torch.equal(mine[n], p) for n, p in original.items() if n not in up)
        assert all(not torch.equal(mine[n], original[n]) for n in up)
    with pytest.raises(ValueError, match="layers must be one of"):
        tune_copies(net, images, pivots, [5.0, -10.0], 1, layers="decoder")
