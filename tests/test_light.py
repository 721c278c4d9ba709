"""Light labels (headrot.labels.light) on synthetic faces, through the stage's own path."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from headrot.data.images import decode_face
from headrot.labels import light as L
from headrot.labels.yaw import yaw_from_landmarks
from headrot.stages.embed import landmarks_in_crop
from headrot.synth.identity import sample_identity
from headrot.synth.render import render_face

S = 32  # the stage's light_image_size default


def _as_stage(img: np.ndarray, lm: np.ndarray):
    """JPEG round trip + decode_face + integer landmarks, as the stage sees a written file."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    ints = np.floor(np.asarray(lm) + 0.5).astype(np.float32)
    return decode_face(buf.getvalue(), S), ints


def _features(images, marks):
    yaw = yaw_from_landmarks(marks)
    return L.light_features(images, landmarks_in_crop(marks, S), yaw), yaw


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    from bench.light import load_set
    from headrot.synth.writer import write_synthetic_celeba

    root = str(tmp_path_factory.mktemp("synth-light"))
    write_synthetic_celeba(root, 240, seed=3)
    return load_set(root, S)


def test_accuracy_floor(synth_set):
    images, marks, azimuth, truth = synth_set
    feats, yaw = _features(images, marks)
    labels, score, source = L.LightLabeler(seed=0).fit(feats, yaw, None).predict(feats, yaw, None)
    acc = float(np.mean(labels == truth))
    # A floor below the measured figures (240 images, seed 3: 89.2 %, physical heuristic alone 92.1 %;
    # python -m bench.light --n 5000: 92.7 %, 96.9 % away from the thresholds, heuristic 92.8 %). The old linear
    # asymmetry heuristic measured 74 % here.
    assert acc >= 0.86, acc
    assert set(source) <= {"classifier", "heuristic"}
    assert np.all((score >= 0) & (score <= 1))
    assert set(labels) <= set(L.LIGHT_CLASSES)


def test_user_labels_win(synth_set):
    images, marks, azimuth, truth = synth_set
    feats, yaw = _features(images, marks)
    known = np.full(len(truth), "", dtype=object)
    flipped = {"left": "right", "right": "left", "center": "left"}
    known[:20] = [flipped[t] for t in truth[:20]]  # deliberately wrong: the user still wins
    labels, score, source = L.LightLabeler().fit(feats, yaw, known).predict(feats, yaw, known)
    assert list(labels[:20]) == list(known[:20])
    assert np.all(source[:20] == "labels") and np.all(score[:20] == 1.0)
    assert np.all(source[20:] != "labels")


def test_sign_convention():
    p = sample_identity(0, 7)
    rows = [_as_stage(*render_face(p, 0.0, az)) for az in (-60.0, 0.0, 60.0)]
    images = np.stack([r[0] for r in rows])
    marks = np.stack([r[1] for r in rows])
    feats, yaw = _features(images, marks)
    # Light at the image's left -> the image's left half brighter -> positive asymmetry -> 'left'.
    assert feats[0, L.ASYM_COL] > 0 > feats[2, L.ASYM_COL]
    cal = L.calibrate(feats[:, L.PHYS_COL] * 30)  # 3 rows: the default calibration
    assert not cal.fitted
    labels, _ = L.heuristic_labels(feats, cal)
    assert list(labels) == ["left", "center", "right"]
    labels, _, source = L.LightLabeler().fit(feats, yaw, None).predict(feats, yaw, None)
    assert list(labels) == ["left", "center", "right"] and set(source) == {"heuristic"}


def test_yaw_is_corrected():
    """A turned head under frontal light is 'center', though its raw asymmetry leans to one side."""
    p = sample_identity(0, 11)
    rows = [_as_stage(*render_face(p, yaw, 0.0)) for yaw in (-30.0, 30.0)]
    feats, yaw = _features(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]))
    assert feats[1, L.ASYM_COL] - feats[0, L.ASYM_COL] > 0.2  # yaw alone moves the raw asymmetry
    labels, _ = L.heuristic_labels(feats, L.calibrate(feats[:, L.PHYS_COL] * 30))
    assert list(labels) == ["center", "center"]


@pytest.mark.parametrize("n", [0, 1, 2, 5])
def test_tiny_inputs_do_not_crash(n):
    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, (n, S, S, 3), dtype=np.uint8)
    marks = np.tile(np.array([10, 12, 22, 12, 16, 17, 11, 22, 21, 22], np.float32), (n, 1))
    feats = L.light_features(images, marks, np.zeros(n))
    assert feats.shape == (n, len(L.FEATURE_NAMES)) and np.all(np.isfinite(feats))
    for known in (None, np.full(n, "left", dtype=object), np.full(n, "", dtype=object)):
        labels, score, source = L.LightLabeler().fit(feats, np.zeros(n), known).predict(feats, np.zeros(n), known)
        assert len(labels) == len(score) == len(source) == n
        if known is not None and n and known[0]:
            assert set(labels) == {"left"} and set(source) == {"labels"}


def test_all_one_class_and_bad_rows():
    """Many rows that seed only one class, NaN yaw and black images: heuristic labels, no crash."""
    n = 80
    images = np.zeros((n, S, S, 3), np.uint8)
    marks = np.full((n, 10), np.nan, np.float32)
    yaw = np.full(n, np.nan)
    feats = L.light_features(images, marks, yaw)
    assert np.all(np.isfinite(feats))
    labels, score, source = L.LightLabeler().fit(feats, yaw, None).predict(feats, yaw, None)
    assert set(source) == {"heuristic"} and set(labels) == {"center"}
    assert np.all((score >= 0) & (score <= 1))


def test_invalid_label_is_an_error():
    feats = np.zeros((3, len(L.FEATURE_NAMES)), np.float32)
    with pytest.raises(ValueError):
        L.LightLabeler().fit(feats, np.zeros(3), np.array(["left", "up", ""], dtype=object))
