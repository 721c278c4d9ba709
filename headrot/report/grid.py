"""Image grids: sample sheets during training, contact sheets in later stages.

`image_grid` only arranges pixels (nearest-neighbour upscale, so small 16x16 or
64x64 renders stay crisp); optional labels go in a margin left of each row and
above each column, drawn with PIL's built-in bitmap font (no font files needed).
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


# ---------------------------------------------------------------------------
# Grid


def image_grid(
    images: np.ndarray | Sequence[np.ndarray],
    nrow: int | None = None,
    upscale: int = 1,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    padding: int = 2,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """A PIL RGB image of `images` (uint8 [N,S,S,3] or [N,H,W,3]) laid out `nrow` per row.

    nrow: images per row (columns); default ceil(sqrt(N)). Missing cells at the end stay blank.
    upscale: integer nearest-neighbour magnification of every image.
    row_labels / col_labels: text left of each row / above each column (at most one per row/column).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"image_grid: expected uint8 images [N,H,W,3], got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"image_grid: expected uint8 images, got {images.dtype} (use to_uint8 first)")
    n, h, w, _ = images.shape
    if n == 0:
        raise ValueError("image_grid: no images")
    if upscale < 1:
        raise ValueError(f"image_grid: upscale must be >= 1, got {upscale}")
    ncol = int(nrow) if nrow else int(np.ceil(np.sqrt(n)))
    if ncol < 1:
        raise ValueError(f"image_grid: nrow must be >= 1, got {nrow}")
    rows = (n + ncol - 1) // ncol
    if row_labels is not None and len(row_labels) > rows:
        raise ValueError(f"image_grid: {len(row_labels)} row labels for {rows} rows")
    if col_labels is not None and len(col_labels) > ncol:
        raise ValueError(f"image_grid: {len(col_labels)} column labels for {ncol} columns")

    if upscale > 1:
        images = images.repeat(upscale, axis=1).repeat(upscale, axis=2)
    ch, cw = h * upscale, w * upscale

    font = ImageFont.load_default()
    # Margins sized from the text itself (bitmap font: about 6 px per character, 11 px high).
    left = _text_width(font, row_labels) + 2 * padding if row_labels else 0
    top = _text_height(font, col_labels) + 2 * padding if col_labels else 0
    width = left + ncol * cw + (ncol + 1) * padding
    height = top + rows * ch + (rows + 1) * padding

    canvas = Image.new("RGB", (width, height), background)
    for i in range(n):
        r, c = divmod(i, ncol)
        x = left + padding + c * (cw + padding)
        y = top + padding + r * (ch + padding)
        canvas.paste(Image.fromarray(images[i]), (x, y))

    draw = ImageDraw.Draw(canvas)
    for r, label in enumerate(row_labels or []):
        y = top + padding + r * (ch + padding) + ch // 2
        draw.text((padding, y), str(label), fill=(0, 0, 0), font=font, anchor="lm")
    for c, label in enumerate(col_labels or []):
        x = left + padding + c * (cw + padding) + cw // 2
        draw.text((x, top // 2), str(label), fill=(0, 0, 0), font=font, anchor="mm")
    return canvas


def _text_width(font, labels) -> int:
    return max((int(font.getlength(str(t))) for t in labels), default=0)


def _text_height(font, labels) -> int:
    boxes = [font.getbbox(str(t)) for t in labels] or [(0, 0, 0, 0)]
    return max(b[3] - b[1] for b in boxes)


# ---------------------------------------------------------------------------
# Conversions


def to_uint8(images) -> np.ndarray:
    """Model-range images (torch or numpy, [-1,1], NCHW) -> uint8 NHWC for a grid or a PNG."""
    try:
        import torch

        if isinstance(images, torch.Tensor):
            images = images.detach().float().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"to_uint8: expected [N,3,S,S] in [-1,1], got shape {images.shape}")
    # x = u8 / 127.5 - 1  =>  u8 = (x + 1) * 127.5; round, then clip the network's overshoot.
    out = np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return out.transpose(0, 2, 3, 1)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
