"""The measuring probes' own pieces (bench.path_probes, bench.steer_probe, bench.yaw_conditioned)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.path_probes import between, sphere_warp
from bench.steer_probe import SmoothReading
from bench.yaw_conditioned import conditional
from headrot.model.unet import PRESETS, UNet

# Frontal eyes 33 px apart at row 111 of the 178 x 218 aligned image: on a 32 x 32 crop, eye
# height 16.4 and a sphere of radius 1.35 x 5.9 = 8 px.
FRONTAL = [74.0, 111.0, 107.0, 111.0, 90.0, 135.0, 76.0, 155.0, 104.0, 155.0]


def test_sphere_warp_is_the_identity_at_zero_and_moves_features_to_the_image_left():
    x = torch.zeros(1, 32, 32)
    x[0, 14:18, 16:18] = 1.0                      # a mark just right of the centre, at eye height
    torch.testing.assert_close(sphere_warp(x, FRONTAL, 0.0, 0.0, 1.35), x, atol=1e-5, rtol=0)

    def centre(img):
        cols = torch.arange(32, dtype=torch.float32)
        return float((img[0].sum(0) * cols).sum() / img[0].sum())

    turned = sphere_warp(x, FRONTAL, 0.0, 20.0, 1.35)
    assert centre(turned) < centre(x) - 1.5       # ~8 px x sin(20 deg) = 2.7 px to the left
    assert centre(sphere_warp(x, FRONTAL, 0.0, -20.0, 1.35)) > centre(x) + 1.5
    # Outside the sphere (the background's corners) nothing moves.
    corner = torch.rand(1, 32, 32)
    moved = sphere_warp(corner, FRONTAL, 0.0, 30.0, 1.35)
    torch.testing.assert_close(moved[:, :4, :4], corner[:, :4, :4], atol=1e-5, rtol=0)


def test_between_interpolates_rows_on_the_line_or_the_great_circle():
    torch.manual_seed(0)
    a, b = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    torch.testing.assert_close(between(a, b, 0.0, True), a)
    torch.testing.assert_close(between(a, b, 1.0, True), b)
    torch.testing.assert_close(between(a, b, 0.5, False), (a + b) / 2)
    # Two unit vectors: the great circle keeps the norm where the line shortens it.
    u = torch.nn.functional.normalize(a.flatten(1), dim=1).reshape(a.shape)
    v = torch.nn.functional.normalize(b.flatten(1), dim=1).reshape(b.shape)
    mid = between(u, v, 0.5, True).flatten(1).norm(dim=1)
    torch.testing.assert_close(mid, torch.ones(3))
    assert (between(u, v, 0.5, False).flatten(1).norm(dim=1) < 1).all()


class _Linear:
    """A reading that is linear in the image: its SmoothGrad reading is its plain one."""

    def __init__(self, w):
        self.w = w

    def differentiable(self, x):
        return (x * self.w).flatten(1).sum(1, keepdim=True)


class _Square:
    def differentiable(self, x):
        return (x ** 2).flatten(1).sum(1, keepdim=True)


def test_smooth_reading_averages_the_reading_over_fixed_noise():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    linear = _Linear(torch.randn(1, 3, 8, 8))
    smooth = SmoothReading(linear, sigma=0.3, draws=4, size=8)
    expected = linear.differentiable(x) + 0.3 * sum(linear.differentiable(n[None]) for n in smooth.noise) / 4
    torch.testing.assert_close(smooth.differentiable(x), expected)
    # Its gradient is the mean gradient at the noisy points: for x^2 that is 2(x + sigma mean(noise)).
    square = SmoothReading(_Square(), sigma=0.3, draws=4, size=8)
    (grad,) = torch.autograd.grad(square.differentiable(x).sum(), x)
    torch.testing.assert_close(grad, 2 * (x + 0.3 * square.noise.mean(0)))
    assert square.estimators == [square.inner]
    # The same draws every time: a probe is reproducible.
    torch.testing.assert_close(SmoothReading(_Square(), 0.3, 4, 8).noise, square.noise)


def test_a_yaw_conditioned_network_starts_as_its_base_and_then_depends_on_the_yaw():
    torch.manual_seed(2)
    base = UNet(dataclasses.replace(PRESETS["tiny"], zero_init_output=False))
    net = conditional(base)
    x, v = torch.randn(2, 3, 16, 16), torch.rand(2, 1, 1, 1)
    net.yaw = torch.tensor([-20.0, 30.0])
    with torch.no_grad():
        torch.testing.assert_close(net(x, v), base(x, v))
        torch.nn.init.normal_(net.yaw_in.weight)
        turned = net(x, v)
        net.yaw = torch.tensor([-20.0, -20.0])
        again = net(x, v)
    assert not torch.allclose(turned, base(x, v))
    torch.testing.assert_close(again[0], turned[0])          # the same yaw, the same output
    assert not torch.allclose(again[1], turned[1])


@pytest.mark.parametrize("delta", [10.0, -10.0])
def test_sphere_warp_keeps_a_uniform_image(delta):
    flat = torch.full((3, 32, 32), 0.25)
    torch.testing.assert_close(sphere_warp(flat, FRONTAL, 10.0, delta, 1.35), flat)


def test_the_coupled_loss_asks_for_the_given_noise_under_the_given_yaw():
    """bench.yaw_conditioned's coupled training: the target is the noise it is handed (the head's
    inversion), not a fresh draw, and the network sees the yaw of the image on that line."""
    from bench.yaw_conditioned import coupled_loss

    torch.manual_seed(3)
    images, noises = torch.rand(4, 3, 16, 16) * 2 - 1, torch.randn(4, 3, 16, 16)
    seen = {}

    class Answers(torch.nn.Module):
        schedule = None

        def __init__(self, answer):
            super().__init__()
            self.answer, self.yaw = answer, None

        def forward(self, noisy, variances):
            seen["yaw"] = self.yaw
            return self.answer

    gen = torch.Generator().manual_seed(0)
    yaws = torch.tensor([-30.0, 0.0, 12.5, 45.0])
    assert coupled_loss(Answers(noises), images, noises, yaws, gen).item() == 0.0
    torch.testing.assert_close(seen["yaw"], yaws)
    assert coupled_loss(Answers(torch.randn(4, 3, 16, 16)), images, noises, yaws, gen).item() > 0.1
    # --colour-weight: an error that averages out over every 4x4 block (detail) costs nothing more;
    # one that shifts a block's colour does
    checker = noises + 0.5 * (torch.arange(16)[:, None] + torch.arange(16)).remainder(2).mul(2).sub(1)
    shifted = noises + 0.5
    for answer, more in ((checker, False), (shifted, True)):
        plain = coupled_loss(Answers(answer), images, noises, yaws, torch.Generator().manual_seed(0))
        weighted = coupled_loss(Answers(answer), images, noises, yaws, torch.Generator().manual_seed(0),
                                colour_weight=4.0)
        assert (weighted.item() > plain.item() + 1e-3) is more


def test_coupled_pairs_turn_each_head_in_its_own_light(tmp_path):
    """Two turns per source face, each the renderer's truth of the same head and light at the
    target yaw, cached: the second call reads the file."""
    import numpy as np
    import pyarrow.parquet as pq

    from bench.yaw_conditioned import coupled_pairs
    from headrot.evaluate.truth import GroundTruth
    from headrot.synth.writer import write_synthetic_celeba

    write_synthetic_celeba(str(tmp_path / "data"), 12, seed=5, images_per_identity=4)
    net = conditional(UNet(PRESETS["tiny"]))
    pairs = coupled_pairs(tmp_path, net, sources=5)
    assert pairs["z_s"].shape == (5, 3, 16, 16) and pairs["x_t"].shape == (10, 16, 16, 3)
    change = pairs["y_t"] - pairs["y_s"][pairs["t_src"]]
    clipped = np.abs(pairs["y_t"]) == 60
    assert np.all((np.abs(change) >= 5 - 1e-4) & (np.abs(change) <= 35 + 1e-4) | clipped)
    truth = pq.read_table(tmp_path / "data" / "truth.parquet")
    ids, yaws = truth.column("image_id").to_pylist(), truth.column("yaw").to_numpy()
    ground = GroundTruth(truth, 16)
    for k in range(10):
        source = ids[int(np.flatnonzero(np.isclose(yaws, pairs["y_s"][pairs["t_src"][k]]))[0])]
        delta = float(pairs["y_t"][k] - ground.true_yaw(source))
        np.testing.assert_array_equal(pairs["x_t"][k], ground.render(source, delta))
    again = coupled_pairs(tmp_path, net, sources=5)
    np.testing.assert_array_equal(again["z_s"], pairs["z_s"])


def test_coupled_pairs_turn_no_further_than_their_reach(tmp_path):
    """`reach` bounds every target yaw; the draws are the default's, so only the clipped turns
    differ (a run with reach 80 trains on the far turns a reach-60 run never saw)."""
    import numpy as np

    from bench.yaw_conditioned import coupled_pairs
    from headrot.synth.writer import write_synthetic_celeba

    net = conditional(UNet(PRESETS["tiny"]))
    made = {}
    for reach in (20, 80):
        out = tmp_path / str(reach)
        write_synthetic_celeba(str(out / "data"), 12, seed=5, images_per_identity=4)
        made[reach] = coupled_pairs(out, net, sources=6, reach=reach)
    near, far = made[20], made[80]
    assert np.abs(near["y_t"]).max() <= 20 + 1e-4 and np.isclose(np.abs(near["y_t"]), 20).any()
    assert np.abs(far["y_t"]).max() > 20
    inside = np.abs(far["y_t"]) < 20
    np.testing.assert_allclose(near["y_t"][inside], far["y_t"][inside], atol=1e-4)
    np.testing.assert_array_equal(near["x_t"][inside], far["x_t"][inside])


def test_conditional_samples_are_drawn_under_the_roots_labelled_yaws(tmp_path):
    """The sample FD of a yaw-conditioned candidate: each sample under a yaw of the root's own
    labels, so a root labelled all at one yaw gives the samples of that yaw, and another yaw others."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.yaw_conditioned import conditional_samples

    torch.manual_seed(4)
    net = conditional(UNet(dataclasses.replace(PRESETS["tiny"], zero_init_output=False)))
    torch.nn.init.normal_(net.yaw_in.weight)
    (tmp_path / "latents").mkdir()

    def samples_at(yaw):
        pq.write_table(pa.table({"yaw": pa.array([yaw, yaw, float("nan")], pa.float32())}),
                       tmp_path / "latents" / "part-00000.parquet")
        return conditional_samples(net, str(tmp_path), n=4)

    at_20 = samples_at(20.0)
    assert at_20.shape == (4, 16, 16, 3) and at_20.dtype == np.uint8
    np.testing.assert_array_equal(samples_at(20.0), at_20)       # a NaN label is never drawn
    assert not np.array_equal(samples_at(-40.0), at_20)


def test_a_conditional_candidates_section_names_its_reader_and_its_note():
    """A result of `judge --record` (no labeller: the probe steers by the condition) gets the
    latent section's table with its own note instead of bench.latent's."""
    from bench.all import latent_section

    figures = {"slope": 0.84, "iqr_at_20_deg": 4.1, "pose_error_deg_median": 2.4, "identity_top1": 1.0,
               "psnr_gain_db_by_delta": {"-10": 3.6, "10": 3.7}}
    text = "\n".join(latent_section({"latent-cond-x-net": {
        "generator": "a candidate", "sources": 32, "judge": {"seed": 1}, "reader": {"seed": 2000101},
        "primary": "x-cal3", "methods": {"x-cal3": figures}, "decodes_per_render": {"x-cal3": 2.714},
        "command": "python -m bench.yaw_conditioned judge x", "seconds": 100, "note": "a probe, not a method"}}))
    assert "labeller" not in text and "calibration's reader: 2000101" in text
    assert "| x-cal3 | 0.84 | 4.1 | 2.4 | 3.6 | 1 | - | - | 2.71 |" in text   # no colour faults or colour PSNR recorded
    assert "(100 s; a probe, not a method)." in text


def test_the_judges_guards_refuse_a_recoloured_head_and_keep_a_moved_one():
    """bench.yaw_conditioned's --guards, the demo's: a render whose hair took a colour the unmoved
    render lacks is refused; the same head shifted by two pixels (a turn's kind of change) passes."""
    import numpy as np

    from bench.yaw_conditioned import render_guards

    rng = np.random.default_rng(5)
    head = np.zeros((2, 32, 32, 3), np.uint8)
    head[:] = [40, 160, 200]                                   # background
    head[:, 8:26, 10:22] = [230, 190, 160]                     # face
    head[:, 4:10, 9:23] = [220, 200, 120]                      # blond hair
    head = np.clip(head + rng.integers(-3, 4, head.shape), 0, 255).astype(np.uint8)
    moved = np.roll(head, 2, axis=2)
    orange = head.copy()
    orange[1, 4:10, 9:23] = [200, 90, 30]
    valid = render_guards(head)
    assert valid(moved, moved).tolist() == [True, True]
    assert valid(orange, orange).tolist() == [True, False]


def test_identity_pairs_are_other_images_of_the_person_in_the_same_light(tmp_path):
    """--pairs identity (what a CelebA-layout set affords): every turn is another image of the
    source's identity with its light label and a yaw 5-45 degrees away; --inversions takes the
    sources' inversions from another probe's pairs and refuses ones of other faces."""
    import numpy as np
    import pyarrow.parquet as pq

    from bench.yaw_conditioned import coupled_pairs, load_faces
    from headrot.synth.writer import write_synthetic_celeba

    write_synthetic_celeba(str(tmp_path / "data"), 60, seed=5, images_per_identity=10)
    net = conditional(UNet(PRESETS["tiny"]))
    truth = pq.read_table(tmp_path / "data" / "truth.parquet")
    identity, light = truth.column("identity").to_numpy(), truth.column("light").to_pylist()
    images, yaws = load_faces(tmp_path / "data", 16)
    first = tmp_path / "first"
    first.mkdir()
    (first / "data").symlink_to(tmp_path / "data")
    truth_pairs = coupled_pairs(first, net, sources=30)
    ids = tmp_path / "ids"
    ids.mkdir()
    (ids / "data").symlink_to(tmp_path / "data")
    pairs = coupled_pairs(ids, net, sources=30, kind="identity", inversions=first / "pairs.npz")
    np.testing.assert_array_equal(pairs["z_s"], truth_pairs["z_s"])
    assert len(pairs["y_t"]) > 0
    for k, s in enumerate(pairs["t_src"]):
        i = int(np.flatnonzero((images == pairs["x_s"][s]).all(axis=(1, 2, 3)))[0])
        j = int(np.flatnonzero((images == pairs["x_t"][k]).all(axis=(1, 2, 3)))[0])
        assert i != j and identity[i] == identity[j] and light[i] == light[j]
        assert 5 <= abs(yaws[j] - yaws[i]) <= 45 and pairs["y_t"][k] == yaws[j]
    other = tmp_path / "other"
    other.mkdir()
    (other / "data").symlink_to(tmp_path / "data")
    with pytest.raises(ValueError, match="not these"):
        coupled_pairs(other, net, sources=20, kind="identity", inversions=first / "pairs.npz")


def test_sample_fd_draws_no_samples_for_a_root_without_a_judge(tmp_path):
    """bench.latent.sample_fd takes the samples or a function that draws them: without the root's
    judge (real data: no pose estimator to read features with) it answers None and draws nothing."""
    from bench.latent import sample_fd

    def never():
        raise AssertionError("sampled although there is no judge")

    report = {"pose_estimator": {"image_size": 16, "seed": 1}}
    assert sample_fd(str(tmp_path), report, never, str(tmp_path / "data")) == {"sample_fd": None,
                                                                               "sample_fd_floor": None}


def test_the_training_curve_orders_judged_checkpoints_by_step(tmp_path, monkeypatch):
    """curve: each probe's step from its checkpoint, its calibrated method's yardstick (colour faults
    included, from its metrics), sorted by step, drawn beside the root's default."""
    import json

    import numpy as np
    import pandas as pd

    import bench.yaw_conditioned as yc
    from bench.path_probes import PRIMARY

    def metrics(method: str, error: float, faulty: float) -> pd.DataFrame:
        rows = []
        for s in range(4):
            for d in (-20, -10, 0, 10, 20):
                for m, e, bad in ((method, error, faulty), ("no_move", float(abs(d)), 0.0)):
                    rows.append({"source_id": f"s{s}", "method": m, "delta": d, "estimated_yaw": d - e if d else 0.0,
                                 "pose_error_deg": e if d else 0.0, "psnr_db": 20.0 if m == method else 15.0,
                                 "identity_top1": 1.0, "novel_colour_share": 0.2 if s < bad * 4 and abs(d) >= 20 else 0.0})
        return pd.DataFrame(rows)

    monkeypatch.setattr(yc, "ROOT", tmp_path)
    for name, step, error, faulty in (("late", 900, 1.0, 0.25), ("early", 100, 3.0, 0.5)):
        (tmp_path / "runs" / "probes" / name).mkdir(parents=True)
        metrics(f"{name}-net-cal3-colour", error, faulty).to_parquet(tmp_path / "runs" / "probes" / name / "metrics.parquet")
        torch.save({"step": step}, tmp_path / "runs" / "probes" / name / "model.pt")
    root = tmp_path / "root"
    (root / "report").mkdir(parents=True)
    metrics(PRIMARY, 2.0, 0.5).to_parquet(root / "report" / "metrics.parquet")
    (root / "report" / "report.json").write_text(json.dumps({"summary": {"n_sources": 4}}))
    points = yc.curve(["late", "early"], str(root), tmp_path / "curve.png")
    assert [(p["probe"], p["step"]) for p in points] == [("early", 100), ("late", 900)]
    assert [p["pose_error_deg_median"] for p in points] == [3.0, 1.0]
    assert [p["colour_fault_rate_far"] for p in points] == [0.5, 0.25]
    assert (tmp_path / "curve.png").stat().st_size > 0 and np.isfinite(points[0]["slope"])


def test_the_sampled_loss_is_the_whole_draws_error_and_trains_every_step():
    """bench.yaw_conditioned --unrolled: the loss is the error of the image the 10-step sampler draws
    from the given latents under the given yaws, and its gradient reaches the network through the
    sampler (a few steps of it bring that draw nearer its target)."""
    from bench.yaw_conditioned import sampled_loss
    from headrot.model.sampler import reverse_diffusion

    torch.manual_seed(4)
    net = conditional(UNet(dataclasses.replace(PRESETS["tiny"], zero_init_output=False)))
    torch.nn.init.normal_(net.yaw_in.weight, std=0.1)
    latents, targets = torch.randn(4, 3, 16, 16), torch.rand(4, 3, 16, 16) * 2 - 1
    yaws = torch.tensor([-30.0, -5.0, 10.0, 40.0])
    loss = sampled_loss(net, latents, targets, yaws)
    with torch.no_grad():
        drawn = reverse_diffusion(net, latents, 10, net.schedule)
    torch.testing.assert_close(loss, (drawn - targets).abs().mean())
    torch.testing.assert_close(net.yaw, yaws)
    # the block colours' error adds only where a block's mean is off
    assert sampled_loss(net, latents, drawn, yaws, colour_weight=4.0).item() < 1e-5
    assert (sampled_loss(net, latents, targets, yaws, colour_weight=4.0) > loss + 1e-3).item()
    loss.backward()
    assert net.yaw_in.weight.grad.abs().sum() > 0
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(15):
        opt.zero_grad()
        sampled_loss(net, latents, targets, yaws).backward()
        opt.step()
    assert sampled_loss(net, latents, targets, yaws).item() < 0.9 * loss.item()


def test_drawn_turns_start_from_the_cached_or_the_networks_own_inversions():
    """--fresh-inversions: the unrolled turns start from the sources inverted by the network as it
    is now (the render stage's inversion), without a gradient through it; otherwise the cache."""
    from bench.yaw_conditioned import drawn_from
    from headrot.model.sampler import ddim_inversion

    torch.manual_seed(2)
    net = conditional(UNet(PRESETS["tiny"]))
    with torch.no_grad():     # an untrained net's zero output layer answers 0 whatever the yaw
        for weight in net.parameters():
            weight.normal_(0, 0.05)
    x_s, y_s = torch.rand(3, 3, 16, 16) * 2 - 1, torch.tensor([-20.0, 5.0, 40.0])
    z_s, picked = torch.randn(3, 3, 16, 16), torch.tensor([2, 0])
    torch.testing.assert_close(drawn_from(net, z_s, x_s, y_s, picked, fresh=False), z_s[picked])
    fresh = drawn_from(net, z_s, x_s, y_s, picked, fresh=True)
    assert not fresh.requires_grad
    with torch.no_grad():
        net.yaw = y_s[picked]
        torch.testing.assert_close(fresh, ddim_inversion(net, x_s[picked], 10, net.schedule, 5, 2))
        net.yaw = y_s[picked].flip(0)
        assert (fresh - ddim_inversion(net, x_s[picked], 10, net.schedule, 5, 2)).abs().max() > 1e-3


def test_unrolled_reconstructions_draw_the_source_under_its_own_yaw():
    """--reconstructions R: the first R of the unrolled draws aim at their source under the source's
    yaw (the render stage's delta 0); the rest at their pair's turn under the turn's yaw."""
    from bench.yaw_conditioned import unrolled_targets

    x_s, y_s = torch.rand(3, 3, 8, 8), torch.tensor([-20.0, 5.0, 40.0])
    x_t, y_t, t_src = torch.rand(5, 3, 8, 8), torch.tensor([-5.0, 10.0, 25.0, 60.0, 0.0]), torch.tensor([0, 0, 1, 2, 2])
    u = torch.tensor([3, 1, 2, 4])
    sources, images, yaws = unrolled_targets(u, t_src, x_t, y_t, x_s, y_s, reconstructions=2)
    assert sources.tolist() == [2, 0, 1, 2]
    torch.testing.assert_close(images[:2], x_s[[2, 0]])
    torch.testing.assert_close(images[2:], x_t[[2, 4]])
    assert yaws.tolist() == [40.0, -20.0, 25.0, 0.0]
    _, images, yaws = unrolled_targets(u, t_src, x_t, y_t, x_s, y_s, reconstructions=0)
    torch.testing.assert_close(images, x_t[u])
    assert yaws.tolist() == y_t[u].tolist()


def test_refreshed_pairs_keep_the_new_inversions_and_their_line_noise(tmp_path):
    """--refresh-pairs: the sources' new inversions replace the cached ones in place with the noise
    of their lines (z = a1 x + s1 eps), the others untouched; run_for saves the cache in the
    checkpoint, which a resumed run reads back."""
    from bench.yaw_conditioned import keep_inversions, run_for
    from headrot.train.steps import EMA

    x_s, z_s = torch.rand(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    a1, s1 = torch.tensor(0.1), torch.tensor(0.99)
    eps_s = (z_s - a1 * x_s) / s1
    before_z, before_eps = z_s.clone(), eps_s.clone()
    z = torch.randn(2, 3, 8, 8)
    keep_inversions(z_s, eps_s, x_s, torch.tensor([3, 1]), z, a1, s1)
    torch.testing.assert_close(z_s[[3, 1]], z)
    torch.testing.assert_close(a1 * x_s[[3, 1]] + s1 * eps_s[[3, 1]], z)
    torch.testing.assert_close(z_s[[0, 2]], before_z[[0, 2]])
    torch.testing.assert_close(eps_s[[0, 2]], before_eps[[0, 2]])

    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    run_for(0.0, net, EMA(net, 0.9, warmup=False), opt, tmp_path / "model.pt", 7, lambda gen: net.weight.sum(),
            {"z_s": z_s})
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert saved["step"] == 7
    torch.testing.assert_close(saved["z_s"], z_s)


def test_the_anchor_is_the_draw_of_fresh_noise_as_the_teacher_draws_it():
    """--anchor: anchored to a file that draws as the network does (its export), the loss is 0;
    to another file it is the whole draw's error against that file's draw, and reaches the network."""
    from bench.yaw_conditioned import anchor_draws

    torch.manual_seed(3)
    tiny = dataclasses.replace(PRESETS["tiny"], zero_init_output=False)
    net = conditional(UNet(tiny))
    torch.nn.init.normal_(net.yaw_in.weight, std=0.1)
    teacher = UNet(dataclasses.replace(tiny, yaw_harmonics=4))
    teacher.load_state_dict({k.removeprefix("base."): v for k, v in net.state_dict().items()})
    noise, yaws = torch.randn(3, 3, 16, 16), torch.tensor([-25.0, 0.0, 35.0])
    assert anchor_draws(teacher, net, noise, yaws).item() < 1e-5
    with torch.no_grad():
        teacher.yaw_in.weight.add_(0.5)
    loss = anchor_draws(teacher, net, noise, yaws)
    assert loss.item() > 1e-3
    loss.backward()
    assert net.yaw_in.weight.grad.abs().sum() > 0
    assert all(w.grad is None for w in teacher.parameters())
