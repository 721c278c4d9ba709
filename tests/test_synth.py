"""Synthetic CelebA: layout and formats, determinism, geometry, light, partitions, truth."""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headrot import cli
from headrot.synth.identity import ATTRIBUTE_NAMES, IdentityParams, celeba_attributes, sample_identity
from headrot.synth.render import render_face
from headrot.synth.writer import read_truth, rerender, write_synthetic_celeba

FILES = ("list_attr_celeba.txt", "list_landmarks_align_celeba.txt", "list_eval_partition.txt",
         "identity_CelebA.txt", "truth.parquet")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "celeba"
    write_synthetic_celeba(str(out), 60, seed=7, images_per_identity=5)
    return out


def _rows(path: Path) -> list[str]:
    return path.read_text().splitlines()


# ---------------------------------------------------------------------------
# Layout


def test_layout_files_parse_in_celeba_formats(dataset):
    for name in FILES:
        assert (dataset / name).is_file(), name
    jpgs = sorted((dataset / "img_align_celeba").iterdir())
    assert [j.name for j in jpgs] == [f"{i:06d}.jpg" for i in range(1, 61)]
    im = Image.open(jpgs[0])
    assert im.format == "JPEG" and im.size == (178, 218) and im.mode == "RGB"

    attr = _rows(dataset / "list_attr_celeba.txt")
    assert attr[0] == "60"
    assert attr[1] == " ".join(ATTRIBUTE_NAMES) + " "  # trailing space, as the real file
    assert len(ATTRIBUTE_NAMES) == 40
    for line in attr[2:]:
        assert re.fullmatch(r"\d{6}\.jpg( [ -]1){40}", line), line
    assert "  1" in attr[2] or " -1 -1" in attr[2]  # values right-aligned in 2-char fields

    lm = _rows(dataset / "list_landmarks_align_celeba.txt")
    assert lm[0] == "60"
    assert lm[1].split() == ["lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
                             "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y"]
    for line in lm[2:]:
        assert re.fullmatch(r"\d{6}\.jpg( +\d+){10}", line), line
        values = np.array(line.split()[1:], int)
        assert values[0] < values[2]  # lefteye is the image-left eye
        assert np.all((values[0::2] >= 0) & (values[0::2] < 178)) and np.all((values[1::2] >= 20) & (values[1::2] < 198))

    part = _rows(dataset / "list_eval_partition.txt")
    ident = _rows(dataset / "identity_CelebA.txt")
    assert len(part) == len(ident) == 60
    assert all(re.fullmatch(r"\d{6}\.jpg [012]", line) for line in part)
    assert all(re.fullmatch(r"\d{6}\.jpg \d+", line) for line in ident)


def test_partitions_split_by_identity(dataset):
    part = dict(line.split() for line in _rows(dataset / "list_eval_partition.txt"))
    ident = dict(line.split() for line in _rows(dataset / "identity_CelebA.txt"))
    by_identity: dict[str, set[str]] = {}
    for image_id, person in ident.items():
        by_identity.setdefault(person, set()).add(part[image_id])
    assert all(len(p) == 1 for p in by_identity.values())  # disjoint across partitions
    assert {"0", "1", "2"} <= set(part.values())
    counts = np.bincount([int(v) for v in part.values()], minlength=3)
    assert counts[0] >= counts[1] + counts[2]


def test_attributes_follow_the_identity(dataset):
    ident = dict(line.split() for line in _rows(dataset / "identity_CelebA.txt"))
    rows: dict[str, set[str]] = {}
    for line in _rows(dataset / "list_attr_celeba.txt")[2:]:
        image_id, rest = line.split(" ", 1)
        rows.setdefault(ident[image_id], set()).add(rest)
    assert all(len(v) == 1 for v in rows.values())
    p = sample_identity(7, 1)
    attrs = celeba_attributes(p)
    assert list(attrs) == list(ATTRIBUTE_NAMES)
    assert attrs["Male"] == (1 if p.male else -1)
    assert attrs["Eyeglasses"] == (1 if p.glasses else -1)


def test_deterministic_for_a_seed(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((a, 1), (b, 1), (c, 2)):
        write_synthetic_celeba(str(out), 8, seed=seed, images_per_identity=4)
    names = [*FILES, *(f"img_align_celeba/{i:06d}.jpg" for i in range(1, 9))]
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "img_align_celeba/000001.jpg").read_bytes() != (c / "img_align_celeba/000001.jpg").read_bytes()
    assert sample_identity(3, 9) == sample_identity(3, 9) != sample_identity(3, 10)


def test_command_writes_the_layout(tmp_path, capsys):
    assert cli.main(["synth", "--out", str(tmp_path / "d"), "--n", "4", "--images-per-identity", "2",
                     "--yaw-range=-30,30", "--seed", "5"]) == 0
    assert '"images": 4' in capsys.readouterr().out
    truth = read_truth(str(tmp_path / "d"))
    assert truth.num_rows == 4
    assert all(-30 <= y <= 30 for y in truth.column("yaw").to_pylist())


# ---------------------------------------------------------------------------
# Geometry and light


def test_landmarks_project_like_celeba():
    p = sample_identity(0, 4)
    _, lm = render_face(p, 0.0, 0.0)
    le, re_, nose, lmth, rmth = lm.reshape(5, 2)
    assert le[1] == pytest.approx(re_[1]) and lmth[1] == pytest.approx(rmth[1])  # level
    assert nose[0] - le[0] == pytest.approx(re_[0] - nose[0])  # symmetric about the nose
    assert le[1] == pytest.approx(111.0)
    assert (le[0] + re_[0]) / 2 == pytest.approx(88.5, abs=0.01)
    assert 37 <= re_[0] - le[0] <= 41
    assert le[1] < nose[1] < lmth[1] < 197
    for yaw in (15.0, 40.0):
        _, right = render_face(p, yaw, 0.0)
        _, left = render_face(p, -yaw, 0.0)
        eye_mid_r = (right[0] + right[2]) / 2
        eye_mid_l = (left[0] + left[2]) / 2
        assert right[4] > eye_mid_r + 2  # nose toward image right for yaw > 0
        assert left[4] < eye_mid_l - 2
    # Roll tilts the eye line; a pure yaw never does.
    _, rolled = render_face(p, 20.0, 0.0, roll=5.0)
    assert rolled[3] != pytest.approx(rolled[1])
    _, turned = render_face(p, 20.0, 0.0)
    assert turned[3] == pytest.approx(turned[1])


def _face_halves(img: np.ndarray, lm: np.ndarray) -> tuple[float, float]:
    lum = img.astype(float) @ np.array([0.299, 0.587, 0.114])
    le, re_, nose, lmth, rmth = lm.reshape(5, 2)
    top, bottom = int(le[1]) - 8, int(lmth[1]) + 8
    mid = int(round(nose[0]))
    left = lum[top:bottom, int(le[0]) - 12:mid].mean()
    right = lum[top:bottom, mid:int(re_[0]) + 12].mean()
    return left, right


@pytest.mark.parametrize("identity", [1, 2, 3, 4, 5])
def test_light_left_lights_the_image_left_half(identity):
    p = sample_identity(0, identity)
    img, lm = render_face(p, 0.0, -60.0)
    left, right = _face_halves(img, lm)
    assert left > 1.3 * right
    img, lm = render_face(p, 0.0, 60.0)
    left, right = _face_halves(img, lm)
    assert right > 1.3 * left
    img, lm = render_face(p, 0.0, 0.0)
    left, right = _face_halves(img, lm)
    assert abs(left - right) < 0.1 * (left + right) / 2


# ---------------------------------------------------------------------------
# Ground truth


def test_truth_round_trip_rerenders_the_image(dataset):
    truth = read_truth(str(dataset))
    assert truth.num_rows == 60
    for col in ("image_id", "identity", "yaw", "pitch", "roll", "light_azimuth", "light",
                "partition", "landmarks", "seed", "params"):
        assert col in truth.column_names
    rows = truth.to_pylist()
    light = {r["light"] for r in rows}
    assert light <= {"left", "center", "right"}
    for row in rows[:3]:
        params = IdentityParams.from_dict(row["params"])
        assert params == sample_identity(row["seed"], row["identity"])
        img = rerender(row)
        expected, lm = render_face(params, row["yaw"], row["light_azimuth"], pitch=row["pitch"], roll=row["roll"])
        np.testing.assert_array_equal(img, expected)
        np.testing.assert_allclose(lm, row["landmarks"], atol=1e-3)
        on_disk = np.asarray(Image.open(io.BytesIO((dataset / "img_align_celeba" / row["image_id"]).read_bytes())))
        assert np.abs(on_disk.astype(int) - img).mean() < 3.0  # JPEG q95
    # The same identity at another yaw, same light: a different, valid image.
    other = rerender(rows[0], yaw_deg=rows[0]["yaw"] + 10)
    assert other.shape == (218, 178, 3) and not np.array_equal(other, rerender(rows[0]))
