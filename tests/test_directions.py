"""headrot.directions: low-pass fits, readout steps, conditional manipulation, calibration.

Analytic stand-ins only (a known linear "generator" whose yaw is a planted linear readout
of x_T), so every expected number is worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest

from headrot import directions as D
from headrot import trajectories as tr

SHAPE = (3, 8, 8)


def planted(seed=0, n=3000, blocks=2, noise=40.0):
    """White samples x ~ N(0, I), yaw = 20 * <x, u> + noise, u a unit low-pass direction: yaw
    R^2 0.2 on x, about what a pose estimator reads off a small generator's samples."""
    rng = np.random.default_rng(seed)
    u = D.lowpass(rng.standard_normal(SHAPE), blocks)
    u /= np.linalg.norm(u)
    x = rng.standard_normal((n, *SHAPE))
    yaw = 20.0 * (x.reshape(n, -1) @ u.reshape(-1)) + noise * rng.standard_normal(n)
    return x, yaw, u


def test_lowpass_is_an_orthogonal_projection():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, *SHAPE))
    p = D.lowpass(x, 2)
    assert np.allclose(D.lowpass(p, 2), p)                          # idempotent
    assert np.allclose(((x - p) * p).sum(axis=(1, 2, 3)), 0)        # residual orthogonal to it
    assert np.allclose(p[:, :, :4, :4], x[:, :, :4, :4].mean(axis=(2, 3), keepdims=True))
    assert D.lowpass(x, 8) is x and D.subspace_dim(SHAPE, 2) == 12 and D.subspace_dim(SHAPE, 8) == 192
    with pytest.raises(ValueError, match="divide"):
        D.lowpass(x, 3)


def test_sample_fit_recovers_a_planted_direction_and_its_gain():
    """The fit's own centroid line on low-passed samples, turned into a one-degree step, points
    along the planted direction and moves the planted readout by one degree per degree."""
    x, yaw, u = planted()
    xl = D.lowpass(x, 2)
    edges = tr.parse_bins((-80, 80, 10))
    partial = tr.reduce_rows(xl, yaw, ["any"] * len(x), None, edges)
    sums = partial.total()
    mask = sums.count > 0
    slope, _, _ = tr.fit_line(sums.mean_yaws()[mask], sums.centroids()[mask], sums.count[mask])
    var = float(np.var(yaw))
    step = D.readout_step(slope, var, len(x), D.subspace_dim(SHAPE, 2))
    cos = float((step * u).sum() / np.linalg.norm(step))
    assert cos > 0.97
    gain = 20.0 * float((step * u).sum())      # planted degrees per one step
    assert gain == pytest.approx(1.0, abs=0.1)
    # Without the low-pass the same samples give a far noisier direction.
    full = tr.reduce_rows(x, yaw, ["any"] * len(x), None, edges).total()
    s_full, _, _ = tr.fit_line(full.mean_yaws()[mask], full.centroids()[mask], full.count[mask])
    assert float((s_full * u).sum() / np.linalg.norm(s_full)) < cos - 0.05   # ~0.87 in 192 dimensions


def test_readout_step_refuses_no_direction():
    with pytest.raises(ValueError, match="zero"):
        D.readout_step(np.zeros(SHAPE), 100.0, 50, 12)
    with pytest.raises(ValueError, match="variance"):
        D.readout_step(np.ones(SHAPE), 0.0, 50, 12)


def test_orthogonalise_leaves_planted_nuisances_unchanged_and_keeps_the_gain():
    rng = np.random.default_rng(2)
    nuis = rng.standard_normal((3, *SHAPE))
    w = rng.standard_normal(SHAPE)
    step = w / (w * w).sum()                      # one degree along readout w
    out = D.orthogonalise(step, nuis)
    # Moving along it changes no nuisance readout ...
    assert np.allclose(nuis.reshape(3, -1) @ out.reshape(-1), 0, atol=1e-10)
    # ... and the yaw readout by exactly one degree.
    assert float((w * out).sum()) == pytest.approx(1.0)
    # A step already orthogonal to the nuisances is returned as it was.
    q, _ = np.linalg.qr(nuis.reshape(3, -1).T)
    w_perp = w.reshape(-1) - q @ (q.T @ w.reshape(-1))
    s_perp = (w_perp / (w_perp @ w_perp)).reshape(SHAPE)
    assert np.allclose(D.orthogonalise(s_perp, nuis), s_perp)
    with pytest.raises(ValueError, match="inside"):
        D.orthogonalise(nuis[0] / (nuis[0] ** 2).sum(), nuis[:1])


def test_nuisance_sums_merge_like_one_pass_and_find_planted_directions():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4000, *SHAPE))
    a, b = rng.standard_normal(SHAPE), rng.standard_normal(SHAPE)
    stats = np.stack([(x * a).sum(axis=(1, 2, 3)), (x * b).sum(axis=(1, 2, 3)) + 5.0], 1)
    names = ("brightness", "hue")
    whole = D.reduce_nuisance(x, stats, names)
    parts = D.reduce_nuisance(x[:1500], stats[:1500], names).add(D.reduce_nuisance(x[1500:], stats[1500:], names))
    assert np.allclose(whole.directions(), parts.directions())
    dirs = whole.directions()
    for got, want in zip(dirs, (a, b)):
        assert float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want)) > 0.97
    with pytest.raises(ValueError, match="different"):
        whole.add(D.NuisanceSums(("other",)))


def test_keep_norm_puts_each_row_on_its_source_shell():
    rng = np.random.default_rng(4)
    src = rng.standard_normal((5, *SHAPE)) * np.arange(1, 6).reshape(-1, 1, 1, 1)
    moved = src + rng.standard_normal(src.shape)
    out = D.keep_norm(moved, src)
    assert np.allclose(np.linalg.norm(out.reshape(5, -1), axis=1), np.linalg.norm(src.reshape(5, -1), axis=1))
    # Direction of each moved row is unchanged.
    cos = (out * moved).reshape(5, -1).sum(1) / np.linalg.norm(out.reshape(5, -1), axis=1) / \
        np.linalg.norm(moved.reshape(5, -1), axis=1)
    assert np.allclose(cos, 1)


def test_calibration_reaches_the_target_on_a_monotone_model():
    """Per-row gains from 0.4x to 2.5x the nominal, with a saturating response: the search
    finds each row's multiplier within half a degree in 5 rounds."""
    gains = np.array([0.4, 0.6, 1.0, 1.7, 2.5, 1.0])
    wanted = np.array([30.0, -20.0, 10.0, -30.0, 20.0, 0.3])

    def achieved(k):
        return 40 * np.tanh(gains * k * wanted / 40)   # monotone in k, odd, saturating

    cal = D.calibrate(achieved, wanted, rounds=5)
    assert np.all(cal.error < 0.5), cal.error
    assert np.allclose(achieved(cal.scale), cal.achieved)
    assert len(cal.history) == 5
    # One round is the uncalibrated move (multiplier 1): that is what the first reading shows.
    assert np.allclose(cal.history[0], achieved(np.ones(6)))


def test_calibration_never_picks_a_worse_multiplier_and_recovers_from_the_wrong_sign():
    wanted = np.array([20.0, 20.0])

    def achieved(k):          # row 0 turns the wrong way at first, then the right way
        return np.array([-5 + 10 * k[0], 8 * k[1]])

    cal = D.calibrate(achieved, wanted, rounds=5)
    assert cal.error[1] < 0.5
    assert cal.error[0] <= np.abs(achieved(np.array([1.0, 1.0])) - wanted)[0]
    assert cal.scale.max() <= 4.0
