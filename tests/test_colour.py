"""The colour map of -colour renders (headrot.colour): moves a render's colour distribution onto
its reference's, changes nothing else."""
import numpy as np
import pytest

from headrot.colour import keep_colours, novel_colour_share, transport_colours


def _moments(images):
    px = images.reshape(len(images), -1, 3).astype(np.float64)
    return px.mean(1), np.stack([np.cov(p, rowvar=False) for p in px])


def test_the_result_has_the_references_mean_and_covariance():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    # References with correlated channels: a full covariance, not only per-channel spreads.
    base = rng.normal(0, 1, (3, 32, 32, 1)) * np.array([30.0, 20.0, 10.0]) + rng.normal(0, 8, (3, 32, 32, 3))
    refs = np.clip(base + np.array([120.0, 90.0, 140.0]), 0, 255).astype(np.uint8)
    mean, cov = _moments(keep_colours(images, refs))
    ref_mean, ref_cov = _moments(refs)
    assert np.abs(mean - ref_mean).max() < 1.0                  # rounding to uint8 only
    assert np.abs(cov - ref_cov).max() < 0.03 * np.abs(ref_cov).max()
    assert np.abs(_moments(images)[0] - ref_mean).max() > 20    # it did move them


def test_an_image_keeps_its_own_colours_and_a_recoloured_one_gets_them_back():
    rng = np.random.default_rng(1)
    ref = rng.integers(20, 230, (1, 16, 16, 3)).astype(np.uint8)
    assert np.array_equal(keep_colours(ref, ref), ref)
    # A global colour change (an affine map of the pixels, like the demo's hue drift) is undone;
    # exactly when its matrix is symmetric positive definite, which the least-change map is.
    a = np.array([[0.8, 0.1, 0.0], [0.1, 0.7, 0.1], [0.0, 0.1, 0.85]])
    drifted = np.clip(ref.astype(np.float64) @ a.T + 25, 0, 255).astype(np.uint8)
    back = keep_colours(drifted, ref)
    assert np.abs(back.astype(int) - ref.astype(int)).mean() < 2.0
    assert np.abs(drifted.astype(int) - ref.astype(int)).mean() > 10


def test_where_things_are_is_kept():
    """Colours only: a pixel's new colour depends on its old colour alone, so shapes (the pose)
    stay where they were; a flat image stays flat (no division by a zero spread)."""
    rng = np.random.default_rng(2)
    image = np.zeros((1, 16, 16, 3), np.uint8)
    image[0, 4:12, 2:7] = (200, 40, 40)                         # a 'head' on the left
    ref = rng.integers(0, 256, (1, 16, 16, 3)).astype(np.uint8)
    out = keep_colours(image, ref)[0]
    inside = np.zeros((16, 16), bool)
    inside[4:12, 2:7] = True
    assert len(np.unique(out[inside].reshape(-1, 3), axis=0)) == 1
    assert len(np.unique(out[~inside].reshape(-1, 3), axis=0)) == 1
    assert not np.array_equal(out[inside][0], out[~inside][0])
    flat = np.full((1, 8, 8, 3), 90, np.uint8)
    assert np.all(np.isfinite(keep_colours(flat, ref[:, :8, :8])))


def test_a_clear_error_for_wrong_shapes():
    with pytest.raises(ValueError, match=r"\[N,S,S,3\]"):
        keep_colours(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))


def _two_tone(size: int = 32) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    image[:, : size // 2] = (200, 150, 120)   # "skin"
    image[:, size // 2:] = (40, 160, 60)      # "background"
    return image


def test_rearranged_colours_are_not_new_and_a_blotch_is_counted():
    ref = _two_tone()
    turned = np.roll(ref, 5, axis=1)               # the same colours, elsewhere: a turn
    blotch = ref.copy()
    blotch[4:12, 4:12] = (30, 40, 220)             # 64 of 1024 pixels in a colour ref lacks
    near = ref.copy()
    near[4:12, 4:12] = (210, 158, 126)             # close to the skin: within tau
    share = novel_colour_share(np.stack([turned, blotch, near]), ref)
    assert share[0] == 0.0 and share[2] == 0.0
    assert share[1] == pytest.approx(64 / 1024)
    # tau decides what counts as new: the near patch is new at a tau below its distance (~0.05)
    assert novel_colour_share(near[None], ref, tau=0.02)[0] == pytest.approx(64 / 1024)


def test_a_large_reference_is_subsampled_not_refused():
    ref = np.repeat(np.repeat(_two_tone(16), 8, axis=0), 8, axis=1)   # 128x128: 16,384 pixels
    assert novel_colour_share(ref[None], ref, max_reference_pixels=256)[0] == 0.0
    with pytest.raises(ValueError, match="tau"):
        novel_colour_share(ref[None], ref, tau=0.0)


# ---------------------------------------------------------------------------
# The transport map (colour_map: transport)


def _two_regions(left, right, size=32):
    image = np.empty((1, size, size, 3), np.uint8)
    image[:, :, : size // 2], image[:, :, size // 2:] = left, right
    return image


def _three_regions(skin, background, hair, noise):
    image = np.empty((1, 32, 32, 3))
    image[:, :, :11], image[:, :, 11:22], image[:, :, 22:] = skin, background, hair
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def test_the_transport_undoes_a_fault_of_one_region_better_than_the_linear_map():
    """Blonde hair drawn orange beside skin and background that kept their colours: the least-change
    affine map of the colours only comes near, the transport of the distribution takes it back."""
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 4, (1, 32, 32, 3))
    ref = _three_regions((170, 120, 100), (40, 170, 70), (220, 200, 100), noise)
    faulty = _three_regions((170, 120, 100), (40, 170, 70), (235, 150, 40), noise[:, ::-1])

    def error(image):   # the largest error of a region's mean colour (away from the region edges)
        return max(np.abs(image[0][:, cols].reshape(-1, 3).mean(0) - ref[0][:, cols].reshape(-1, 3).mean(0)).max()
                   for cols in (slice(2, 9), slice(13, 20), slice(24, 30)))

    transported = transport_colours(faulty, ref)
    assert error(faulty) > 50
    assert error(transported) < 5 and error(transported) < error(keep_colours(faulty, ref))
    assert novel_colour_share(transported, ref)[0] < 0.01


def test_the_transport_keeps_an_image_on_its_own_colours_and_where_things_are():
    rng = np.random.default_rng(4)
    ref = rng.integers(30, 220, (2, 32, 32, 3)).astype(np.uint8)
    assert np.abs(transport_colours(ref, ref).astype(int) - ref.astype(int)).max() <= 1
    # Two regions (with a little noise, as renders have) onto a two-colour reference of another size:
    # each region is moved as one (the smoothed change does not scatter it into grain: its spread
    # inside stays the image's own), and the two stay apart.
    noisy = lambda a, b, size=32: np.clip(_two_regions(a, b, size) + rng.normal(0, 2, (1, size, size, 3)),  # noqa: E731
                                          0, 255).astype(np.uint8)
    image = noisy((200, 40, 40), (40, 40, 200))
    out = transport_colours(image, noisy((90, 160, 60), (230, 230, 230), size=24))[0].astype(int)
    for cols in (slice(2, 10), slice(22, 30)):
        before, after = image[0][:, cols].reshape(-1, 3).astype(int), out[:, cols].reshape(-1, 3)
        assert np.ptp(after, axis=0).max() <= np.ptp(before, axis=0).max() + 12   # unsmoothed: grain of 100+
    assert np.abs(out[:, 2:10].reshape(-1, 3).mean(0) - out[:, 22:30].reshape(-1, 3).mean(0)).max() > 60
    assert np.array_equal(transport_colours(image, ref[0]), transport_colours(image, ref[0]))  # deterministic


def test_the_transport_refuses_unpaired_shapes():
    with pytest.raises(ValueError, match=r"square images"):
        transport_colours(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="do not pair"):
        transport_colours(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((3, 8, 8, 3), np.uint8))
