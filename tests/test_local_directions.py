"""headrot.local_directions on analytic stand-ins: a linear 'generator' and linear readings."""
from __future__ import annotations

import numpy as np
import pytest

from headrot import directions as D
from headrot import local_directions as L

SHAPE = (3, 8, 8)


def test_jacobian_of_a_linear_generator_is_its_low_passed_readout():
    import torch

    rng = np.random.default_rng(0)
    W = rng.standard_normal((L.N_READINGS, int(np.prod(SHAPE))))

    def render(z):
        return 0.1 * z                    # stays inside [-1, 1] for these z: the clamp is inactive

    def read(x):
        return x.reshape(len(x), -1) @ torch.from_numpy(W).float().T

    z = rng.standard_normal((3, *SHAPE)) * 0.5
    values, jac = L.jacobian(render, read, z, blocks=4, chunk=2)
    want = D.lowpass(0.1 * W.reshape(L.N_READINGS, *SHAPE), 4)
    assert jac.shape == (3, L.N_READINGS, *SHAPE)
    assert np.allclose(values, 0.1 * z.reshape(3, -1) @ W.T, atol=1e-4)
    for i in range(3):
        assert np.allclose(jac[i], want, atol=1e-5)


def test_conditional_steps_turn_one_degree_and_leave_the_other_readings():
    rng = np.random.default_rng(1)
    jac = rng.standard_normal((4, L.N_READINGS, *SHAPE))
    steps = L.conditional_steps(jac, ortho=True)
    for rows, step in zip(jac, steps):
        assert float((rows[0] * step).sum()) == pytest.approx(1.0)
        assert np.allclose(rows[1:].reshape(L.N_READINGS - 1, -1) @ step.reshape(-1), 0, atol=1e-9)
    plain = L.conditional_steps(jac, ortho=False)
    assert float((jac[0, 0] * plain[0]).sum()) == pytest.approx(1.0)
    assert not np.allclose(plain, steps)


def test_readings_of_some_regions_are_those_columns_of_all():
    """render.local_keep: the step is kept off light and the named regions' colours only; they are
    the same numbers as those columns of the full readings, and the Jacobian is sized by them."""
    import torch

    from headrot.labels.nuisance import NAMES

    class Labeller:
        def differentiable(self, x):
            return torch.stack([x[:, 0].mean((1, 2)), x[:, 1].mean((1, 2))], 1)

    x = torch.rand(2, 3, 8, 8) * 2 - 1
    every = L.readings(Labeller(), 8)(x)
    some = L.readings(Labeller(), 8, ("hair", "image"))(x)
    cols = [0, 1] + [2 + i for i, n in enumerate(NAMES) if n.startswith(("image_", "hair_"))]
    assert every.shape == (2, L.N_READINGS) and some.shape == (2, L.n_readings(("image", "hair"))) == (2, 8)
    assert torch.equal(some, every[:, cols])
    assert L.readings(Labeller(), 8, ())(x).shape == (2, 2)
    values, jac = L.jacobian(lambda z: 0.1 * z, L.readings(Labeller(), 8, ("hair",)), np.zeros((1, 3, 8, 8)), 4)
    assert values.shape == (1, 5) and jac.shape == (1, 5, 3, 8, 8)
    assert L.jacobian_decodes(8) < L.jacobian_decodes() == L.JACOBIAN_DECODES


def test_correction_restores_the_other_readings_and_leaves_yaw():
    """On linear readings r(z) = J z, the corrector from a drifted point takes every reading but
    yaw back to the reference (to the ridge's precision) and does not change yaw at all."""
    rng = np.random.default_rng(5)
    n = 3
    jac = rng.standard_normal((n, L.N_READINGS, *SHAPE))
    z_ref = rng.standard_normal((n, *SHAPE))
    z_now = z_ref + 0.3 * rng.standard_normal((n, *SHAPE))

    def read(z):
        return np.einsum("nkd,nd->nk", jac.reshape(n, L.N_READINGS, -1), z.reshape(n, -1))

    fix = L.correction(jac, read(z_now), read(z_ref), ridge=1e-8)
    after = read(z_now + fix)
    assert np.allclose(after[:, 0], read(z_now)[:, 0], atol=1e-8)          # yaw untouched
    assert np.allclose(after[:, 1:], read(z_ref)[:, 1:], atol=1e-5)         # the others restored
    drift_before = np.abs(read(z_now)[:, 1:] - read(z_ref)[:, 1:]).mean()
    damped = read(z_now + L.correction(jac, read(z_now), read(z_ref), ridge=1.0))[:, 1:]
    assert np.abs(damped - read(z_ref)[:, 1:]).mean() < drift_before        # the ridge only damps it
    assert np.array_equal(L.correction(np.zeros_like(jac), read(z_now), read(z_ref)), np.zeros((n, *SHAPE)))


def test_follow_adds_a_legs_offset_once():
    """step_at may return (step, offset): the offset moves that leg's start, once."""
    z0 = np.zeros((2, *SHAPE))
    step = np.zeros((2, *SHAPE))
    step[:, 0, 0, 0] = 1.0
    offset = np.zeros((2, *SHAPE))
    offset[:, 1, 0, 0] = 0.5
    seen = []

    def decode_read(z):
        seen.append(z.copy())
        return np.zeros((len(z), 2, 2, 3), np.uint8), z[:, 0, 0, 0]

    got = L.follow(z0, np.zeros((2, 2, 2, 3), np.uint8), [10.0, 20.0],
                   lambda z: (step, offset) if z is z0 else step, decode_read, segment=10, rounds=1, norm=False)
    assert np.allclose(got[20.0][1], 20.0)
    assert np.allclose(seen[0][:, 1, 0, 0], 0.5) and np.allclose(seen[-1][:, 1, 0, 0], 0.5)


def test_follow_reaches_far_targets_in_legs_on_a_curved_response():
    """Yaw = 40 tanh(<z - z0, g_i> / 40) per face (a response that saturates), step_at gives the
    first-order step at the current point: one leg at the source would fall short at 30 degrees;
    three 10-degree legs, each calibrated in 3 rounds, reach every target within a degree."""
    rng = np.random.default_rng(2)
    n = 5
    z0 = rng.standard_normal((n, *SHAPE))
    g = rng.standard_normal((n, *SHAPE)) * np.array([0.5, 1, 2, 3, 4]).reshape(-1, 1, 1, 1)
    calls = []

    def yaw(z):
        return 40 * np.tanh(((z - z0) * g).sum(axis=(1, 2, 3)) / 40)

    def step_at(z):
        calls.append(1)
        slope = 1 - np.tanh(((z - z0) * g).sum(axis=(1, 2, 3)) / 40) ** 2   # d yaw / d <., g>
        return g / ((g * g).sum(axis=(1, 2, 3)) * slope).reshape(-1, 1, 1, 1)

    def decode_read(z):
        return np.zeros((len(z), 2, 2, 3), np.uint8), yaw(z)

    base = np.zeros((n, 2, 2, 3), np.uint8)
    got = L.follow(z0, base, [-10.0, -20.0, -30.0], step_at, decode_read, segment=10, rounds=3, norm=False)
    assert sorted(got) == [-30.0, -20.0, -10.0] and len(calls) == 3
    for target, (_, read, _) in got.items():
        assert np.all(np.abs(read - target) < 1.0), (target, read)
    one = L.follow(z0, base, [-30.0], step_at, decode_read, segment=0, rounds=1, norm=False)
    assert np.abs(one[-30.0][1] + 30).min() > 3                            # one leg, uncalibrated, falls short


def test_follow_keeps_the_norm_when_asked():
    rng = np.random.default_rng(3)
    z0 = rng.standard_normal((2, *SHAPE))
    seen = []

    def decode_read(z):
        seen.append(np.linalg.norm(z.reshape(len(z), -1), axis=1))
        return np.zeros((len(z), 2, 2, 3), np.uint8), z.reshape(len(z), -1)[:, 0] * 10

    step = np.zeros_like(z0)
    step[:, 0, 0, 0] = 0.1
    L.follow(z0, np.zeros((2, 2, 2, 3), np.uint8), [5.0], lambda z: step, decode_read, segment=0, rounds=2, norm=True)
    for norms in seen:
        assert np.allclose(norms, np.linalg.norm(z0.reshape(2, -1), axis=1))


def test_legs_relinearise_every_segment_degrees():
    assert L.plan_legs([10, 20, 30], 20) == [(10, True, True), (20, True, False), (30, True, True)]
    assert L.plan_legs([10, 20, 30], 10) == [(10, True, True), (20, True, True), (30, True, True)]
    assert L.plan_legs([-30], 10) == [(-10, False, True), (-20, False, True), (-30, True, True)]
    assert L.plan_legs([30, 10], 0) == [(10, True, True), (30, True, False)]
    assert L.plan_legs([], 10) == []


def test_a_face_that_does_not_respond_gets_no_step():
    rng = np.random.default_rng(5)
    jac = rng.standard_normal((2, L.N_READINGS, *SHAPE))
    jac[0, 0] = 0                                   # yaw does not respond at all
    jac[1, 0] = 2 * jac[1, 3] - jac[1, 5]           # yaw moves only with the colours
    assert np.array_equal(L.conditional_steps(jac, ortho=True), np.zeros((2, *SHAPE)))


def test_a_face_whose_render_breaks_stops_where_it_was_still_itself():
    """Face 1 'breaks' (invalid render) past a yaw change of 12 degrees: it keeps its 10-degree
    render and reading for the 20 target; face 0 goes on to 20."""
    z0 = np.zeros((2, *SHAPE))
    step = np.zeros_like(z0)
    step[:, 0, 0, 0] = 1.0

    def decode_read(z):
        yaw = z[:, 0, 0, 0].copy()
        images = np.repeat(np.round(np.abs(yaw)).astype(np.uint8).reshape(-1, 1, 1, 1), 3, axis=3)
        broken = images[:, 0, 0, 0] > 12
        broken[0] = False
        return np.broadcast_to(images, (len(z), 2, 2, 3)).copy(), yaw, ~broken

    got = L.follow(z0, np.zeros((2, 2, 2, 3), np.uint8), [10.0, 20.0], lambda z: step, decode_read,
                   segment=10, rounds=3, norm=False)
    assert got[10.0][1] == pytest.approx([10, 10], abs=0.5)
    assert got[20.0][1][0] == pytest.approx(20, abs=0.5)
    assert 10 <= got[20.0][1][1] < 13 and got[20.0][0][1, 0, 0, 0] <= 12    # its last good render


def test_a_leg_that_changes_a_render_too_much_is_refused_and_a_shorter_one_kept():
    """The leg guard sees each render beside the render its leg started from: face 1's image
    jumps (its pixels move by 3 levels a degree past 5 degrees of a leg), so it is refused there
    and calibration keeps a shorter turn on that leg; face 0 reaches every target. The verdict
    that decode_read returns itself (here: every render fine) joins in."""
    z0 = np.zeros((2, *SHAPE))
    step = np.zeros_like(z0)
    step[:, 0, 0, 0] = 1.0
    seen_starts = []

    def decode_read(z):
        yaw = z[:, 0, 0, 0].copy()
        level = np.abs(yaw).copy()
        level[1] = np.abs(yaw[1]) * 3                # face 1 changes three times as fast
        images = np.repeat(np.round(level).astype(np.uint8).reshape(-1, 1, 1, 1), 3, axis=3)
        return np.broadcast_to(images, (len(z), 2, 2, 3)).copy(), yaw, np.array([True, True])

    def leg_valid(images, start):
        seen_starts.append(start[:, 0, 0, 0].copy())
        return np.abs(images[:, 0, 0, 0].astype(int) - start[:, 0, 0, 0].astype(int)) <= 15

    got = L.follow(z0, np.zeros((2, 2, 2, 3), np.uint8), [10.0, 20.0], lambda z: step, decode_read,
                   segment=10, rounds=4, norm=False, leg_valid=leg_valid)
    assert got[10.0][1][0] == pytest.approx(10, abs=0.5) and got[20.0][1][0] == pytest.approx(20, abs=0.5)
    assert 0 < got[10.0][1][1] <= 5 + 1e-9             # face 1: the longest turn within the guard
    assert 0 < got[20.0][1][1] - got[10.0][1][1] <= 5 + 1e-9
    # The second leg's renders were judged against the first leg's kept renders.
    assert any(s[0] == 10 for s in seen_starts)


def test_calibration_never_keeps_an_invalid_render():
    wanted = np.array([20.0, 20.0])

    def achieved(k):
        a = 10 * k
        return a, np.array([True, False])            # row 1 breaks at every multiplier

    cal = D.calibrate(achieved, wanted, rounds=3)
    assert cal.best_round[0] >= 0 and cal.error[0] < 0.5
    assert cal.best_round[1] == -1 and cal.scale[1] == 0 and cal.achieved[1] == 0 and cal.error[1] == 20


def test_mean_reading_is_the_mean_of_its_networks_and_their_gradients():
    """The steering ensemble (samples.steer_seeds): the local steps follow the mean reading of the
    labeller and the steering networks, so the Jacobian is the mean of theirs."""
    import torch

    from headrot.labels.pose import MeanReading, PoseConfig, YawEstimator, build_net

    def estimator(seed, light=True):
        torch.manual_seed(seed)
        config = PoseConfig(size=16, seed=seed, arch="maxpool4", light=light)
        return YawEstimator(build_net(16, 4, "maxpool4", 2 if light else 1), config, {})

    a, b, c = estimator(1), estimator(2), estimator(3)
    mean = MeanReading([a, b, c])
    x = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_()
    got = mean.differentiable(x)
    assert torch.allclose(got, (a.differentiable(x) + b.differentiable(x) + c.differentiable(x)) / 3)
    (g_mean,) = torch.autograd.grad(got[:, 0].sum(), x)
    g_each = [torch.autograd.grad(e.differentiable(x)[:, 0].sum(), x)[0] for e in (a, b, c)]
    assert torch.allclose(g_mean, sum(g_each) / 3, atol=1e-6)
    assert not torch.allclose(g_mean, g_each[0])                 # not the labeller's own gradient
    with pytest.raises(ValueError, match="different outputs"):
        MeanReading([a, estimator(4, light=False)])
    with pytest.raises(ValueError, match="at least one"):
        MeanReading([])
