"""decode_face: the paper's crop geometry, odd but valid files, and every bad file with its reason."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from headrot.data.dataset import decode_batch
from headrot.data.images import ImageError, central_square, decode_face


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def marked_celeba_image() -> np.ndarray:
    """178 x 218 RGB: red outside the central square (rows 20..197), a green square
    inside, and a blue block in its top-left quarter."""
    a = np.zeros((218, 178, 3), np.uint8)
    a[:, :] = (255, 0, 0)
    a[20:198, :] = (0, 255, 0)
    a[20:20 + 89, 0:89] = (0, 0, 255)
    return a


def smooth_face() -> Image.Image:
    y, x = np.mgrid[0:218, 0:178].astype(np.float64)
    r = 128 + 100 * np.sin(x / 17.0)
    g = 128 + 100 * np.cos(y / 23.0)
    b = 128 + 60 * np.sin((x + y) / 31.0)
    return Image.fromarray(np.stack([r, g, b], -1).astype(np.uint8))


# ---------------------------------------------------------------------------
# Geometry


def test_central_square():
    assert central_square(178, 218) == (0, 20, 178, 198)   # rows 20..197
    assert central_square(300, 100) == (100, 0, 200, 100)
    assert central_square(64, 64) == (0, 0, 64, 64)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_crop_lands_the_marked_square(fmt):
    data = encode(Image.fromarray(marked_celeba_image()), fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    face = decode_face(data, 64)
    assert face.shape == (64, 64, 3) and face.dtype == np.uint8
    face = face.astype(int)
    tol = 12 if fmt == "PNG" else 40
    # No red anywhere: the rows outside 20..197 are gone (border pixels included).
    assert face[..., 0].max() <= tol
    # Blue quarter top-left, green elsewhere (away from the edges between them).
    assert np.all(np.abs(face[4:28, 4:28] - (0, 0, 255)) <= tol)
    assert np.all(np.abs(face[36:60, 36:60] - (0, 255, 0)) <= tol)
    assert np.all(np.abs(face[4:28, 36:60] - (0, 255, 0)) <= tol)


def test_draft_does_not_change_the_result_materially():
    data = encode(smooth_face(), "JPEG", quality=90)
    fast, full = decode_face(data, 64), decode_face(data, 64, draft=False)
    diff = np.abs(fast.astype(int) - full.astype(int))
    assert diff.mean() < 1.5 and diff.max() <= 12


def test_square_input_and_upscaling():
    data = encode(Image.new("RGB", (32, 32), (10, 20, 30)), "PNG")
    face = decode_face(data, 64)
    assert face.shape == (64, 64, 3) and np.all(face == (10, 20, 30))


# ---------------------------------------------------------------------------
# Valid but unusual files become RGB


def test_png_named_jpg_is_read():
    face = decode_face(encode(Image.fromarray(marked_celeba_image()), "PNG"), 16)
    assert face.shape == (16, 16, 3)


def test_grayscale():
    face = decode_face(encode(Image.new("L", (178, 218), 77), "JPEG"), 32)
    assert face.shape == (32, 32, 3) and np.all(np.abs(face.astype(int) - 77) <= 2)


def test_rgba_composited_over_black():
    image = Image.new("RGBA", (40, 40), (200, 100, 50, 255))
    image.paste((255, 255, 255, 0), (0, 0, 40, 20))
    face = decode_face(encode(image, "PNG"), 8)
    # (bicubic rings by a few levels next to the sharp edge at row 4)
    assert np.all(face[:3] <= 4) and np.all(np.abs(face[-3:].astype(int) - (200, 100, 50)) <= 4)


def test_cmyk_jpeg():
    image = Image.new("CMYK", (178, 218), (0, 255, 255, 0))  # red in CMYK
    face = decode_face(encode(image, "JPEG"), 16).astype(int)
    assert face.shape == (16, 16, 3)
    assert face[..., 0].mean() > 200 and face[..., 1].mean() < 60 and face[..., 2].mean() < 60


def test_palette_and_16_bit():
    palette = Image.new("RGB", (50, 60), (0, 128, 255)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert np.all(np.abs(decode_face(encode(palette, "PNG"), 8).astype(int) - (0, 128, 255)) <= 3)
    deep = Image.fromarray((np.arange(40 * 40).reshape(40, 40) * 40).astype(np.uint16))
    face = decode_face(encode(deep, "PNG"), 8)
    assert face.shape == (8, 8, 3) and face.min() < 20 and face.max() > 230


# ---------------------------------------------------------------------------
# Bad files: ImageError with a reason


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, followed by a tiny (wrong) IDAT."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", r"^empty file \(0 bytes\)$"),
        (b"000001.jpg -1 1 -1\n", r"^not an image \(unrecognised format, 19 bytes\)$"),
        (png_header_claiming(50_000, 50_000), r"^image too large"),  # 2.5 GP: PIL's own guard
        (png_header_claiming(8_000, 6_000), r"^image too large: 8000 x 6000 pixels \(limit 40 MP\)$"),
    ],
    ids=["zero-byte", "text", "bomb-huge", "bomb-48MP"],
)
def test_bad_files(data, reason):
    with pytest.raises(ImageError, match=reason) as info:
        decode_face(data, 64)
    assert info.value.reason == str(info.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(fmt):
    data = encode(smooth_face(), fmt)
    with pytest.raises(ImageError, match=r"^(truncated image|corrupt image)"):
        decode_face(data[: len(data) // 2], 64)


def test_truncated_jpeg_says_truncated():
    data = encode(smooth_face(), "JPEG")
    with pytest.raises(ImageError, match=r"^truncated image"):
        decode_face(data[: len(data) // 2], 64)


# ---------------------------------------------------------------------------
# decode_batch without Ray


def test_decode_batch(tmp_path):
    good = tmp_path / "good.jpg"
    good.write_bytes(encode(smooth_face(), "JPEG"))
    (tmp_path / "empty.jpg").write_bytes(b"")
    paths = [str(good), str(tmp_path / "empty.jpg"), str(tmp_path / "absent.jpg"), str(good)]
    out = decode_batch({"path": np.array(paths, dtype=object), "image_id": np.arange(4)}, 16)
    assert out["image"].shape == (4, 16, 16, 3) and out["image"].dtype == np.uint8
    assert list(out["reject_reason"]) == ["", "empty file (0 bytes)", f"missing file: {paths[2]}", ""]
    assert out["image"][0].any() and not out["image"][1].any() and not out["image"][2].any()
    assert np.array_equal(out["image"][0], out["image"][3])
    assert list(out["image_id"]) == [0, 1, 2, 3]


def test_decode_batch_raises_on_other_read_errors():
    def failing(uris):
        return {u: PermissionError(u) for u in uris}

    with pytest.raises(OSError, match="reading"):
        decode_batch({"path": np.array(["x"], dtype=object)}, 8, fetch=failing)
