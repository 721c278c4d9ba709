"""Yaw from the 5 landmarks: accuracy on synthetic truth, roll invariance, sign."""
from __future__ import annotations

import numpy as np
import pytest

from headrot.labels.yaw import NOSE_DEPTH_RATIO, yaw_from_landmarks
from headrot.synth.identity import sample_identity
from headrot.synth.render import project_landmarks
from headrot.synth.writer import round_landmarks


def _synthetic(n_ids=50, per_id=10, seed=3):
    rng = np.random.default_rng(seed)
    lms, yaws = [], []
    for i in range(n_ids):
        p = sample_identity(seed, i + 1)
        for _ in range(per_id):
            yaw = rng.uniform(-45, 45)
            lms.append(project_landmarks(p, yaw, pitch=rng.uniform(-5, 5), roll=rng.uniform(-4, 4)))
            yaws.append(yaw)
    return np.array(lms), np.array(yaws)


def test_mae_on_integer_landmarks_of_500_synthetic_faces():
    lms, yaws = _synthetic()
    est = yaw_from_landmarks(round_landmarks(lms))  # the integers the file holds
    err = np.abs(est - yaws)
    assert err.mean() <= 3.0, err.mean()
    assert np.percentile(err, 95) <= 6.0
    # Exact landmarks: only pitch is unmodelled.
    assert np.abs(yaw_from_landmarks(lms) - yaws).mean() <= 1.0


def test_roll_invariance():
    lms, _ = _synthetic(n_ids=5, per_id=4)
    base = yaw_from_landmarks(lms)
    pts = lms.reshape(-1, 5, 2)
    for angle in (-25.0, 7.0, 40.0):
        a = np.radians(angle)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        centre = np.array([89.0, 120.0])
        turned = ((pts - centre) @ rot.T + centre).reshape(-1, 10)
        np.testing.assert_allclose(yaw_from_landmarks(turned), base, atol=1e-9)
    # Translation and scale do not matter either.
    np.testing.assert_allclose(yaw_from_landmarks(lms * 1.7 + 13.0), base, atol=1e-9)


def test_sign_convention_nose_toward_image_right_is_positive():
    p = sample_identity(0, 1)
    assert yaw_from_landmarks(project_landmarks(p, 25.0)) > 20
    assert yaw_from_landmarks(project_landmarks(p, -25.0)) < -20
    assert abs(yaw_from_landmarks(project_landmarks(p, 0.0))) < 1e-9
    # Hand-made row: nose 5 px right of the midline, iod 40 -> atan(5 / (0.5 * 40)).
    row = np.array([70, 110, 110, 110, 95, 135, 75, 150, 105, 150], float)
    assert yaw_from_landmarks(row) == pytest.approx(np.degrees(np.arctan(5 / (NOSE_DEPTH_RATIO * 40))))


def test_shapes_and_degenerate_rows():
    row = np.array([70, 110, 110, 110, 90, 135, 75, 150, 105, 150], float)
    assert np.ndim(yaw_from_landmarks(row)) == 0
    assert yaw_from_landmarks(np.stack([row, row])).shape == (2,)
    bad = row.copy()
    bad[2:4] = bad[0:2]  # both eyes at one point
    assert np.isnan(yaw_from_landmarks(bad))
    with pytest.raises(ValueError):
        yaw_from_landmarks(np.zeros((3, 8)))
