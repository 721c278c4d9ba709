"""Ground truth for synthetic data: the same identity re-rendered at the target yaw, same light.

For a render of source image s (identity i, true yaw y, light azimuth a, pitch p, roll r
from truth.parquet) at delta d, the ground-truth image is identity i rendered at yaw
y + d with everything else unchanged (headrot.synth.writer.rerender), then preprocessed
exactly like the model's input: PNG bytes -> headrot.data.images.decode_face(bytes, S).

Identity retrieval uses a gallery per (source, delta): every identity of the evaluated
set (up to `gallery_max`: the true one plus a deterministic sample of the others)
rendered in that same pose and light; top-1 is right when the render's nearest gallery
image (L2 on the S x S pixels) is its own identity's.

Every render is cached by (identity, yaw, light azimuth, pitch, roll), so the gallery's
true-identity image is the ground truth itself and nothing is rendered twice.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from headrot.labels.pose import preprocess
from headrot.synth.writer import light_class, rerender


class GroundTruth:
    """Ground-truth renders of one synthetic dataset at model size `size`."""

    def __init__(self, truth: pa.Table, size: int, gallery_max: int = 64):
        rows = truth.to_pylist()
        self.rows = {r["image_id"]: r for r in rows}
        self.params: dict[int, dict] = {}
        for r in rows:
            self.params.setdefault(int(r["identity"]), r["params"])
        self.size = int(size)
        self.gallery_max = int(gallery_max)
        self.cache: dict[tuple, np.ndarray] = {}
        self.renders = 0

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.rows

    def source(self, image_id: str) -> dict:
        try:
            return self.rows[image_id]
        except KeyError:
            raise ValueError(f"truth.parquet has no row for image {image_id!r}: "
                             "was the run made from this dataset?") from None

    def true_yaw(self, image_id: str) -> float:
        return float(self.source(image_id)["yaw"])

    def light(self, image_id: str) -> str:
        """The true light class (left|center|right) from the azimuth."""
        return str(light_class(self.source(image_id)["light_azimuth"]))

    def render(self, image_id: str, delta: float, identity: int | None = None) -> np.ndarray:
        """uint8 [S,S,3]: `identity` (default the source's own) in the source's pose turned by delta."""
        row = self.source(image_id)
        ident = int(row["identity"]) if identity is None else int(identity)
        yaw = float(row["yaw"]) + float(delta)
        key = (ident, round(yaw, 6), round(float(row["light_azimuth"]), 6),
               round(float(row["pitch"]), 6), round(float(row["roll"]), 6), row["width"], row["height"])
        image = self.cache.get(key)
        if image is None:
            params = self.params[ident] if ident != int(row["identity"]) else row["params"]
            image = preprocess(rerender({**row, "params": params}, yaw_deg=yaw), self.size)
            self.cache[key] = image
            self.renders += 1
        return image

    def gallery_identities(self, image_id: str, identities: list[int]) -> list[int]:
        """The source's identity first, then up to gallery_max - 1 others (deterministic per source)."""
        own = int(self.source(image_id)["identity"])
        others = sorted(set(int(i) for i in identities) - {own})
        if len(others) > self.gallery_max - 1:
            seed = int.from_bytes(image_id.encode()[:8].ljust(8, b"\0"), "little")
            rng = np.random.default_rng([seed, len(others)])
            others = sorted(rng.choice(others, self.gallery_max - 1, replace=False).tolist())
        return [own, *others]

    def identity_top1(self, image_id: str, delta: float, renders: np.ndarray,
                      identities: list[int]) -> np.ndarray:
        """For renders [N,S,S,3] of this (source, delta): is the nearest gallery image the own identity?"""
        ids = self.gallery_identities(image_id, identities)
        gallery = np.stack([self.render(image_id, delta, i) for i in ids]).astype(np.float64)
        r = np.asarray(renders, np.float64).reshape(len(renders), -1)
        g = gallery.reshape(len(gallery), -1)
        d2 = (r ** 2).sum(1)[:, None] - 2 * r @ g.T + (g ** 2).sum(1)[None]
        return np.argmin(d2, axis=1) == 0
