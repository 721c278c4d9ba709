"""Image bytes -> the paper's preprocessed face: central square crop, resized to S x S RGB.

Pure: bytes in, array out, no I/O. Untrusted input: every way a file can be bad
ends in `ImageError(reason)`, never another exception and never a silent fix.
"""
from __future__ import annotations

import io
import math
import re
import warnings

import numpy as np
from PIL import Image

# Explicit cap on the pixels we are willing to decode (CelebA images are 39 kP).
# PIL's own guard only warns below ~89 MP and is a process-wide setting.
MAX_PIXELS = 40_000_000
# DCT-scaled JPEG decoding (PIL's draft) only while the decoded square keeps at
# least this many pixels per output pixel: 178 -> 89 -> 64 passes (1.39), so
# CelebA at 64x64 decodes at half scale; at 128x128 it decodes at full scale.
DRAFT_MIN_OVERSAMPLE = 1.25
# Bicubic is antialiased in PIL's resize (its support grows with the scale).
RESAMPLE = Image.Resampling.BICUBIC


class ImageError(ValueError):
    """A file that cannot become a face image; `reason` is a short human sentence."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------
# Geometry


def central_square(width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the central min(w, h) square.

    178 x 218 -> (0, 20, 178, 198): rows 20..197, the paper's crop of aligned CelebA.
    """
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return left, top, left + side, top + side


def _draft_scale(side: int, size: int) -> int:
    """The largest JPEG DCT scale (1, 2, 4, 8) that keeps the oversampling margin."""
    for scale in (8, 4, 2):
        if side / scale >= size * DRAFT_MIN_OVERSAMPLE:
            return scale
    return 1


# ---------------------------------------------------------------------------
# Decoding


def decode_face(data: bytes, size: int, draft: bool = True) -> np.ndarray:
    """Decode image bytes and return the central square resized to [size, size, 3] uint8 RGB.

    Accepts any format PIL reads, whatever the file is called, and grey, RGBA
    (composited over black), CMYK and palette images. `draft=False` turns off the
    DCT-scaled JPEG decode (for measuring its effect).
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # PIL warns (not raises) on big images; our own cap below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large ({exc})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"not an image (unrecognised format, {len(data)} bytes)") from None
    except Exception as exc:  # untrusted bytes: any parser failure is a bad file
        raise ImageError(f"corrupt image header ({type(exc).__name__}: {exc})") from None

    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise ImageError(f"image has no pixels ({width} x {height})")
        if width * height > MAX_PIXELS:
            raise ImageError(f"image too large: {width} x {height} pixels "
                             f"(limit {MAX_PIXELS / 1e6:.0f} MP)")
        box = central_square(width, height)
        try:
            if draft and image.format == "JPEG" and image.mode in ("RGB", "L"):
                scale = _draft_scale(box[2] - box[0], size)
                if scale > 1:
                    # Ask for at least (w/scale, h/scale): PIL picks exactly `scale`.
                    image.draft(image.mode, (width // scale, height // scale))
            image.load()  # the first frame of a multi-frame file
            decoded = _to_rgb(image)
        except ImageError:
            raise
        except Exception as exc:
            raise ImageError(_load_reason(exc)) from None
        # The crop box in the decoded image's coordinates (a draft shrinks it).
        # Crop first, so the resampling filter never reaches rows outside the
        # square; then resize with the (possibly fractional) box inside the crop.
        sx = decoded.width / width
        sy = decoded.height / height
        x0, y0, x1, y1 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
        ix0, iy0 = math.floor(x0), math.floor(y0)
        ix1, iy1 = min(math.ceil(x1), decoded.width), min(math.ceil(y1), decoded.height)
        square = decoded.crop((ix0, iy0, ix1, iy1))
        face = square.resize((size, size), RESAMPLE,
                             box=(x0 - ix0, y0 - iy0, min(x1, ix1) - ix0, min(y1, iy1) - iy0))
        return np.asarray(face, dtype=np.uint8).copy()


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        # Composite over black: transparent pixels must not show hidden colours.
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / float grey: scale to 8 bits by the data's range, not by clipping.
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = np.zeros_like(values) if high <= low else (values - low) * (255.0 / (high - low))
        return Image.fromarray(scaled.round().astype(np.uint8), "L").convert("RGB")
    return image.convert("RGB")


def _load_reason(exc: Exception) -> str:
    text = str(exc)
    if "truncated" in text or isinstance(exc, EOFError):
        detail = re.search(r"\d+ bytes not processed", text)
        return f"truncated image ({detail.group(0)})" if detail else "truncated image"
    return f"corrupt image ({type(exc).__name__}: {text})"


def read_failure_reason(uri: str, exc: BaseException) -> str:
    """The reason recorded when the bytes of an image cannot be read at all."""
    if isinstance(exc, FileNotFoundError):
        return f"missing file: {uri}"
    if isinstance(exc, IsADirectoryError):
        return f"not a file (a folder): {uri}"
    return f"could not read {uri} ({type(exc).__name__}: {exc})"
