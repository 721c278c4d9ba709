"""headrot.trajectories: sums, merges, lines, fallbacks and moves (pure numpy, no Ray)."""
from __future__ import annotations

import numpy as np
import pytest

from headrot import trajectories as tr

EDGES = tr.parse_bins([-45, 45, 10])
ATTRS = ("Male", "Eyeglasses")


def planted(n=600, seed=0, shape=(3, 4, 4)):
    """Rows whose latents are intercept + slope(light, side) * yaw + small noise."""
    rng = np.random.default_rng(seed)
    yaw = rng.uniform(-44, 44, n)
    light = rng.choice(["left", "center", "right"], n)
    attrs = rng.random((n, 2)) < 0.5
    latents = rng.normal(size=(n, *shape)) * 0.01 + 0.02 * yaw.reshape(-1, 1, 1, 1)
    return latents, yaw, light, attrs


def centroids_of(p: tr.Partial):
    return {k: (v.count.copy(), v.centroids()) for k, v in p.groups.items()}


# ---------------------------------------------------------------------------
# Bins


def test_parse_bins_range_and_edges():
    assert np.allclose(EDGES, np.arange(-45, 46, 10))
    assert np.allclose(tr.parse_bins([-30, 0, 30]), [-30, 0, 30])  # increasing: edges
    with pytest.raises(ValueError):
        tr.parse_bins([10, 0])


def test_sides_from_edges():
    # [-5, 5) straddles 0 and serves both sides; [-15,-5) only left; [5,15) only right.
    left, right = tr.side_bins(EDGES, "left"), tr.side_bins(EDGES, "right")
    assert left.tolist() == [True] * 5 + [False] * 4
    assert right.tolist() == [False] * 4 + [True] * 5
    # An edge at 0: neither neighbour serves the other side.
    e = np.array([-20.0, 0.0, 20.0])
    assert tr.side_bins(e, "left").tolist() == [True, False]
    assert tr.side_bins(e, "right").tolist() == [False, True]


def test_bin_index_closed_last_bin_and_out_of_range():
    b = tr.bin_index(np.array([-45, -44.9, 45, 45.1, np.nan, 4.99, 5.0]), EDGES)
    assert b.tolist() == [0, 0, 8, -1, -1, 4, 5]


# ---------------------------------------------------------------------------
# Partials


def test_merge_any_order_any_split_same_centroids():
    latents, yaw, light, attrs = planted()
    whole = tr.reduce_rows(latents, yaw, light, attrs, EDGES, ATTRS)
    rng = np.random.default_rng(1)
    for trial in range(5):
        perm = rng.permutation(len(yaw))
        cuts = np.sort(rng.choice(np.arange(1, len(yaw)), size=trial + 1, replace=False))
        parts = [tr.reduce_rows(latents[i], yaw[i], light[i], attrs[i], EDGES, ATTRS)
                 for i in np.split(perm, cuts)]
        order = rng.permutation(len(parts))
        merged = tr.merge([parts[i] for i in order])
        # also as a tree: merge(merge(a, b), merge(c, ...))
        tree = tr.merge([tr.merge(parts[: len(parts) // 2] or parts[:1]), tr.merge(parts[len(parts) // 2:])]) \
            if len(parts) > 1 else merged
        for m in (merged, tree):
            assert m.n_rows == whole.n_rows
            assert list(m.groups) == sorted(whole.groups)
            for k, (count, cent) in centroids_of(whole).items():
                assert np.array_equal(m.groups[k].count, count)
                np.testing.assert_allclose(m.groups[k].centroids(), cent, atol=1e-9, rtol=0)
                np.testing.assert_allclose(m.groups[k].mean_yaws(), whole.groups[k].mean_yaws(), atol=1e-9)


def test_spread_merges_to_the_direct_sum_in_any_split():
    """sq_dev (sum of squared deviations from the bin centroid) merged by Chan's update equals
    the two-pass sum over all rows, whatever the split."""
    latents, yaw, light, attrs = planted(seed=4)
    latents = latents.astype(np.float32)
    whole = tr.reduce_rows(latents, yaw, light, attrs, EDGES, ATTRS)
    b = tr.bin_index(yaw, EDGES)
    for (lit, values), sums in whole.groups.items():
        rows = (light == lit) & np.all(attrs == np.array(values), axis=1)
        for k in range(len(EDGES) - 1):
            x = latents[rows & (b == k)].astype(np.float64)
            expect = ((x - x.mean(0)) ** 2).sum() if len(x) else 0.0
            assert sums.sq_dev[k] == pytest.approx(expect, rel=1e-5, abs=1e-9)
    rng = np.random.default_rng(2)
    parts = [tr.reduce_rows(latents[i], yaw[i], light[i], attrs[i], EDGES, ATTRS)
             for i in np.array_split(rng.permutation(len(yaw)), 7)]
    merged = tr.merge(parts[::-1])
    for key, sums in whole.groups.items():
        np.testing.assert_allclose(merged.groups[key].sq_dev, sums.sq_dev, rtol=1e-5, atol=1e-9)


def _noisy_side(shape_fn, noise, n_per_bin=30, seed=0, elements=200):
    """One side's rows: latent = shape_fn(yaw) [elements] + N(0, noise^2); 5 bins, 0..45 deg."""
    rng = np.random.default_rng(seed)
    yaw = rng.uniform(-4.9, 44.9, 5 * n_per_bin)
    clean = shape_fn(yaw)
    latents = clean + rng.normal(scale=noise, size=clean.shape)
    p = tr.reduce_rows(latents.reshape(len(yaw), 1, 1, elements), yaw, ["center"] * len(yaw), None, EDGES, ())
    line = {(l.mode, l.light, l.side): l for l in tr.fit_all(p, min_images=10, min_bins=2)}[
        ("light_conditioned", "center", "right")]
    return line


def test_reliability_separates_sampling_noise_from_a_bend():
    direction = np.random.default_rng(9).normal(size=200)
    straight = lambda y: 0.01 * y[:, None] * direction  # noqa: E731
    # A straight trajectory under heavy noise: a low R^2, yet the noise explains the misfit.
    line = _noisy_side(straight, noise=0.7)
    assert line.r2 < 0.8
    assert line.reliability.noise_share > 0.2
    assert line.reliability.r2_reliable > 0.95
    # A bent trajectory, noise-free: r2_reliable is R^2 itself, up to the bins' own yaw
    # spread (the curve moves inside a bin too, which the estimate counts as noise).
    bent = lambda y: 0.0004 * (y[:, None] - 20) ** 2 * direction + straight(y)  # noqa: E731
    clean = _noisy_side(bent, noise=1e-9)
    assert clean.reliability.noise_share < 0.01
    assert clean.reliability.r2_reliable == pytest.approx(clean.r2, abs=0.01)
    assert clean.r2 < 0.97  # the bend is visible
    # The same bend under noise: r2 drops, r2_reliable stays near the noise-free R^2.
    noisy = _noisy_side(bent, noise=0.8, n_per_bin=60, seed=1)
    assert noisy.r2 < clean.r2 - 0.1
    assert noisy.reliability.r2_reliable == pytest.approx(clean.r2, abs=0.05)


def test_reliability_unknown_without_spread():
    # One image per bin: no within-bin spread to estimate the noise from.
    rel = tr.Reliability.of(1.0, 10.0, np.array([1, 1, 1]), np.zeros(3))
    assert rel == tr.Reliability(None, None)
    # Spread that is all noise: no signal left to explain.
    rel = tr.Reliability.of(8.0, 10.0, np.array([5, 5, 5]), np.full(3, 40.0))  # s2 = 10, (B-1) s2 = 20 > 10
    assert rel.noise_share == 1.0 and rel.r2_reliable is None


def test_merge_refuses_different_bins():
    latents, yaw, light, attrs = planted(50)
    a = tr.reduce_rows(latents, yaw, light, attrs, EDGES, ATTRS)
    b = tr.reduce_rows(latents, yaw, light, attrs, tr.parse_bins([-40, 40, 20]), ATTRS)
    with pytest.raises(ValueError):
        tr.merge([a, b])


# ---------------------------------------------------------------------------
# Lines


def test_fit_line_exact_data():
    yaws = np.array([-40.0, -20.0, -5.0, 0.0])
    slope = np.arange(12.0).reshape(3, 2, 2) / 10
    intercept = -np.ones((3, 2, 2))
    cents = intercept + slope * yaws.reshape(-1, 1, 1, 1)
    s, i, r2 = tr.fit_line(yaws, cents, np.array([3, 1, 7, 2]))
    np.testing.assert_allclose(s, slope, atol=1e-12)
    np.testing.assert_allclose(i, intercept, atol=1e-12)
    assert r2 == pytest.approx(1.0, abs=1e-12)


def test_fit_line_weights_and_noise():
    rng = np.random.default_rng(3)
    yaws = np.linspace(-40, 0, 5)
    cents = 0.5 * yaws.reshape(-1, 1) + rng.normal(size=(5, 50))
    s, i, r2 = tr.fit_line(yaws, cents, np.ones(5))
    assert 0 < r2 < 1
    # An empty bin (count 0) does not count, whatever its centroid.
    bad = cents.copy()
    bad[2] = 1e6
    s2, _, _ = tr.fit_line(yaws, bad, np.array([1, 1, 0, 1, 1]))
    s3, _, _ = tr.fit_line(np.delete(yaws, 2), np.delete(cents, 2, 0), np.ones(4))
    np.testing.assert_allclose(s2, s3)
    with pytest.raises(ValueError):
        tr.fit_line(np.array([1.0]), cents[:1], np.ones(1))


def test_regression_recovers_planted_lines_per_side():
    rng = np.random.default_rng(0)
    n = 4000
    yaw = rng.uniform(-45, 45, n)
    left_slope, right_slope = 0.03, -0.05
    base = np.full((n, 3, 2, 2), 0.7)
    latents = base + np.where(yaw < 0, left_slope * yaw, right_slope * yaw).reshape(-1, 1, 1, 1)
    p = tr.reduce_rows(latents, yaw, ["center"] * n, None, EDGES, ())
    lines = {(l.mode, l.light, l.side): l for l in tr.fit_all(p, min_images=10, min_bins=2)}
    # The straddling bin [-5,5) mixes both slopes, so the fit is close, not exact.
    left = lines[("light_conditioned", "center", "left")]
    right = lines[("light_conditioned", "center", "right")]
    assert np.allclose(left.slope, left_slope, rtol=0.1)
    assert np.allclose(right.slope, right_slope, rtol=0.1)
    assert left.r2 > 0.97 and right.r2 > 0.97 and left.fallback == "none"


# ---------------------------------------------------------------------------
# Fallbacks


def test_chain_order():
    c = tr.chain("light_conditioned", "left", (True, False), ATTRS)
    assert [g for g, _ in c] == [("left", "Male=1,Eyeglasses=0"), ("left", "Male=1"), ("left", ""), ("any", "")]
    assert [d for _, d in c] == ["Eyeglasses", "Male", "light", ""]
    a = tr.chain("light_agnostic", "left", (True, False), ATTRS)
    assert [g for g, _ in a] == [("any", "Male=1,Eyeglasses=0"), ("any", "Male=1"), ("any", "")]


def _rows(light, male, glasses, n, rng):
    yaw = rng.uniform(-44, 44, n)
    return (np.zeros((n, 3, 2, 2)) + 0.01 * yaw.reshape(-1, 1, 1, 1), yaw,
            [light] * n, np.tile([male, glasses], (n, 1)))


def test_fallback_picks_documented_level():
    rng = np.random.default_rng(5)
    parts = [
        _rows("left", True, False, 200, rng),    # big: serves itself
        _rows("left", True, True, 5, rng),       # tiny: -> (left, Male=1) which has 205
        _rows("left", False, True, 5, rng),      # tiny, and (left, Male=0) tiny -> (left, "")
        _rows("right", False, False, 5, rng),    # light 'right' tiny in total -> global
    ]
    p = tr.merge(tr.reduce_rows(*r, EDGES, ATTRS) for r in parts)
    lines = {(l.mode, l.light, l.key, l.side): l for l in tr.fit_all(p, min_images=50, min_bins=3)}
    lc = "light_conditioned"
    assert lines[(lc, "left", "Male=1,Eyeglasses=0", "left")].fallback == "none"
    assert lines[(lc, "left", "Male=1,Eyeglasses=1", "left")].fallback == "drop:Eyeglasses"
    assert lines[(lc, "left", "Male=1,Eyeglasses=1", "left")].served_by == ("left", "Male=1")
    assert lines[(lc, "left", "Male=0,Eyeglasses=1", "right")].fallback == "drop:Eyeglasses,Male"
    assert lines[(lc, "right", "Male=0,Eyeglasses=0", "left")].fallback == "drop:Eyeglasses,Male,light"
    assert lines[(lc, "right", "Male=0,Eyeglasses=0", "left")].served_by == ("any", "")
    # Light-agnostic: (any, Male=1,Eyeglasses=0) big; (any, Male=0, Eyeglasses=1) -> (any, Male=0) tiny -> (any, "")
    la = "light_agnostic"
    assert lines[(la, "any", "Male=1,Eyeglasses=0", "left")].fallback == "none"
    assert lines[(la, "any", "Male=0,Eyeglasses=1", "left")].fallback == "drop:Eyeglasses,Male"
    # single_direction: one row per group, side both
    assert lines[("single_direction", "left", "Male=1,Eyeglasses=0", "both")].fallback == "none"
    assert not any(k[0] == "single_direction" and k[3] != "both" for k in lines)


def test_global_with_one_side_empty_uses_both_sides():
    rng = np.random.default_rng(2)
    yaw = rng.uniform(6, 40, 100)  # nothing left of 0
    p = tr.reduce_rows(np.zeros((100, 3, 2, 2)) + yaw.reshape(-1, 1, 1, 1), yaw, ["left"] * 100, None, EDGES, ())
    lines = {(l.mode, l.light, l.side): l for l in tr.fit_all(p, min_images=10, min_bins=2)}
    assert lines[("light_conditioned", "left", "left")].fallback == "drop:light,side"
    assert lines[("light_conditioned", "left", "right")].fallback == "none"


# ---------------------------------------------------------------------------
# Moves


def test_move_same_side_one_slope_and_crossing_switches():
    z = np.zeros((3, 2))
    left, right = np.array([1.0, 10.0]), np.array([100.0, 1000.0])
    out = tr.move(z, np.array([-30.0, 10.0, -10.0]), np.array([-20.0, 30.0, 20.0]), left, right)
    np.testing.assert_allclose(out[0], 10 * left)               # left side only
    np.testing.assert_allclose(out[1], 20 * right)              # right side only
    np.testing.assert_allclose(out[2], 10 * left + 20 * right)  # crosses 0: both slopes
    back = tr.move(out[2], 20.0, -10.0, left, right)            # and back again
    np.testing.assert_allclose(back, z[2], atol=1e-12)
    assert np.array_equal(tr.move(z, 5.0, 5.0, left, right), z)


def test_centroid_path_hits_centroids():
    means = np.array([-35.0, -12.0, 3.0, 20.0])
    cents = np.random.default_rng(0).normal(size=(4, 3, 2, 2))
    z = np.random.default_rng(1).normal(size=(3, 2, 2))
    for i in range(4):
        for j in range(4):
            out = tr.centroid_path(z, means[i], means[j], means, cents)
            np.testing.assert_allclose(out, z + cents[j] - cents[i], atol=1e-12)
    # clamped beyond the ends; linear in between
    np.testing.assert_allclose(tr.centroid_path(z, -35.0, 80.0, means, cents), z + cents[3] - cents[0], atol=1e-12)
    mid = tr.centroid_path(z, -35.0, -23.5, means, cents)
    np.testing.assert_allclose(mid, z + 0.5 * (cents[0] + cents[1]) - cents[0], atol=1e-12)
    # vectorised over rows
    zs = np.stack([z, z])
    out = tr.centroid_path(zs, np.array([-35.0, 3.0]), np.array([20.0, -12.0]), means, cents)
    np.testing.assert_allclose(out[1], z + cents[1] - cents[2], atol=1e-12)
