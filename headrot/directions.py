"""Pose directions from the generator's own samples: low-pass, gain, nuisances, norm, calibration.

Pure maths (numpy only; no Ray, no torch, no I/O), used by the fit and render stages.

Why these pieces (measured on the demo model, bench/NOTES.md "issue 14"):
- The paper's estimator (centroids of the dataset's *inverted* latents) finds a direction
  along which yaw is readable but to which the generator does not respond. Seeded samples
  x_T ~ N(0, I), labelled by an image-based pose estimator, find the direction the generator
  turns heads along (InterFaceGAN's recipe, for a DDIM's x_T).
- A direction fitted in all 3*S*S dimensions of x_T from a few thousand samples is mostly
  noise, and a noisy direction changes everything else about the face (hair, skin,
  background) while it turns it. Pose is a coarse, global property, so the fit runs in a
  **low-pass subspace**: block means of r x r blocks (`lowpass`), 3*r*r dimensions.
- Samples are white (identity covariance), so the least-squares line of latent on yaw
  (the centroid line the fit computes) is parallel to the yaw *readout* direction w, but
  attenuated: slope = w / Var(yaw). `readout_step` turns it back into the step that
  changes yaw by one degree, w / |w|^2, correcting |w|^2 for the sampling noise.
- Conditional manipulation (InterFaceGAN): the step is projected off the directions along
  which the things that must stay (brightness and colour of face, hair and background,
  the light's azimuth) change (`orthogonalise`), rescaled to keep its yaw gain.
- `keep_norm`: the moved latent rescaled to the source's norm (x_T lives near a shell).
- `calibrate`: per face, the step multiplier is searched until an image-based pose
  estimator reads the requested change (the generator's response varies per face).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

# ---------------------------------------------------------------------------
# The low-pass subspace of x_T


def lowpass(x: np.ndarray, blocks: int) -> np.ndarray:
    """Orthogonal projection of latents [..., C, S, S] onto piecewise-constant `blocks` x
    `blocks` images (each block replaced by its mean). blocks == S (or 0) is the identity."""
    x = np.asarray(x)
    s = x.shape[-1]
    if blocks in (0, s):
        return x
    if blocks < 1 or s % blocks:
        raise ValueError(f"lowpass: {blocks} blocks must divide the latent size {s}")
    b = s // blocks
    shape = x.shape[:-2] + (blocks, b, blocks, b)
    means = x.reshape(shape).mean(axis=(-3, -1), keepdims=True)
    return np.broadcast_to(means, shape).reshape(x.shape)


def subspace_dim(shape: tuple[int, ...], blocks: int) -> int:
    """Dimensions of the low-pass subspace of latents of `shape` (C, S, S)."""
    c, s = shape[0], shape[-1]
    return c * s * s if blocks in (0, s) else c * blocks * blocks


# ---------------------------------------------------------------------------
# From the attenuated centroid slope to a step of one degree


def readout_step(slope: np.ndarray, yaw_var: float, n: int, dims: int) -> np.ndarray:
    """The step that changes yaw by one degree, from the centroid line's slope on white samples.

    For white latents x and yaw = a + w.x + noise, the regression of x on yaw has slope
    s = w / V (V = Var(yaw)), so w = s V, and the minimal step for +1 degree is w / |w|^2.
    Each of the `dims` coordinates of the estimated w carries sampling noise of variance
    V / n, which inflates |w|^2 by dims V / n; that bias is taken off (a noisy direction
    would otherwise look stronger than it is, and its step come out too short). The
    correction is floored at a tenth of the raw |w|^2 so that a direction that is mostly
    noise gives a long (clearly weak) step rather than a division by zero."""
    s = np.asarray(slope, dtype=np.float64)
    if yaw_var <= 0 or n < 2:
        raise ValueError("readout_step: needs a yaw variance > 0 and at least 2 samples")
    w = s * yaw_var
    raw = float((w * w).sum())
    if raw == 0:
        raise ValueError("readout_step: the slope is zero; the samples show no yaw direction")
    signal = max(raw - dims * yaw_var / n, 0.1 * raw)
    return w / signal


# ---------------------------------------------------------------------------
# Nuisance directions (mergeable sums) and conditional manipulation


@dataclass
class NuisanceSums:
    """Sums for the covariance of latents with K image statistics (float64; merge by adding)."""

    names: tuple[str, ...]
    n: int = 0
    stat_sum: np.ndarray | None = None       # [K]
    latent_sum: np.ndarray | None = None     # [C,S,S]
    cross_sum: np.ndarray | None = None      # [K,C,S,S]: sum of stat_k * latent

    def add(self, other: "NuisanceSums") -> "NuisanceSums":
        if other.names != self.names:
            raise ValueError(f"nuisance sums of different statistics: {self.names} vs {other.names}")
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        return NuisanceSums(self.names, self.n + other.n, self.stat_sum + other.stat_sum,
                            self.latent_sum + other.latent_sum, self.cross_sum + other.cross_sum)

    def directions(self) -> np.ndarray:
        """[K,C,S,S]: Cov(latent, stat_k), the direction along which stat_k changes (white latents)."""
        if self.n < 2:
            raise ValueError("nuisance directions: need at least 2 samples")
        mean_x = self.latent_sum / self.n
        mean_s = self.stat_sum / self.n
        return self.cross_sum / self.n - mean_s.reshape(-1, *([1] * mean_x.ndim)) * mean_x[None]


def reduce_nuisance(latents: np.ndarray, stats: np.ndarray, names: tuple[str, ...]) -> NuisanceSums:
    """Sums of latents [N,C,S,S] against statistics [N,K] (float64 accumulation)."""
    x = np.asarray(latents)
    s = np.asarray(stats, dtype=np.float64).reshape(len(x), len(names))
    if len(x) == 0:
        return NuisanceSums(tuple(names))
    flat = x.reshape(len(x), -1)
    cross = (s.T @ flat.astype(np.float64)).reshape(len(names), *x.shape[1:])
    return NuisanceSums(tuple(names), len(x), s.sum(axis=0), flat.sum(axis=0, dtype=np.float64).reshape(x.shape[1:]),
                        cross)


def orthogonalise(step: np.ndarray, nuisances: np.ndarray) -> np.ndarray:
    """The one-degree step restricted to the complement of the nuisance directions.

    InterFaceGAN's conditional manipulation for several conditions: project the yaw readout
    w (= step / |step|^2) off the span of the nuisance directions, then return the
    one-degree step of the projected readout, P w / |P w|^2. Moving along it changes
    none of the nuisances' linear readouts, and yaw by one degree."""
    step = np.asarray(step, dtype=np.float64)
    n = np.asarray(nuisances, dtype=np.float64).reshape(len(nuisances), -1)
    w = step.reshape(-1) / float((step * step).sum())
    before = float(w @ w)
    if len(n):
        q, r = np.linalg.qr(n.T)
        keep = np.abs(np.diag(r)) > 1e-12 * max(1.0, float(np.abs(r).max()))
        q = q[:, keep]
        w = w - q @ (q.T @ w)
    norm2 = float(w @ w)
    if norm2 <= 1e-12 * before:  # nothing of the readout is left outside the nuisances' span
        raise ValueError("orthogonalise: the yaw direction lies inside the nuisance directions")
    return (w / norm2).reshape(step.shape)


# ---------------------------------------------------------------------------
# Moves


def keep_norm(moved: np.ndarray, source: np.ndarray) -> np.ndarray:
    """`moved` [N,...] rescaled to the norms of `source` [N,...] (each row on its source's shell)."""
    m = np.asarray(moved, dtype=np.float64)
    s = np.asarray(source, dtype=np.float64)
    axes = tuple(range(1, m.ndim))
    scale = np.sqrt((s * s).sum(axis=axes) / np.maximum((m * m).sum(axis=axes), 1e-30))
    return m * scale.reshape(-1, *([1] * (m.ndim - 1)))


# ---------------------------------------------------------------------------
# Calibration: per face, scale the step until the estimator reads the requested change


@dataclass
class Calibration:
    """Result of `calibrate`: the chosen multiplier per row, what the estimator read there,
    and every round's readings (for the report's cost and convergence figures)."""

    scale: np.ndarray
    achieved: np.ndarray
    error: np.ndarray
    rounds: int
    best_round: np.ndarray                   # per row, the round whose evaluation was chosen
    history: list[np.ndarray] = field(default_factory=list)


def calibrate(achieved_at: Callable[[np.ndarray], np.ndarray | tuple[np.ndarray, np.ndarray]],
              wanted: np.ndarray, rounds: int = 3, max_scale: float = 4.0, tolerance: float = 0.5) -> Calibration:
    """Per row, the multiplier k of a row's move at which `achieved_at(k)` (e.g. estimated yaw
    change of the render) equals `wanted`, by `rounds` evaluations.

    The response of a head's yaw to the step is close to proportional, so each round is a
    secant through the origin (k <- k * wanted / achieved), kept inside the bracket of
    multipliers already seen to undershoot or overshoot (a bisection step where the secant
    leaves it, a doubling where nothing has overshot yet and the sign was wrong). The
    returned multiplier is the best one *evaluated*, so its render already exists: a caller
    keeps the images of that round, and calibration costs exactly `rounds` renders per row.
    Rows already within `tolerance` degrees stop moving.

    `achieved_at` may also return (readings, valid): an invalid evaluation (a render that broke,
    see `drift`) is never chosen and counts as an overshoot, so the next round tries a shorter
    step. A row with no valid evaluation gets best_round -1, multiplier 0 and reading 0 (the
    caller keeps the unmoved render)."""
    wanted = np.asarray(wanted, dtype=np.float64)
    if rounds < 1:
        raise ValueError("calibrate: rounds must be >= 1")
    k = np.ones_like(wanted)
    lo = np.zeros_like(wanted)                   # largest multiplier known to undershoot
    hi = np.full_like(wanted, np.inf)            # smallest multiplier known to overshoot (or break)
    best_k, best_a = np.zeros_like(wanted), np.zeros_like(wanted)
    best_err = np.full_like(wanted, np.inf)
    best_round = np.full(wanted.shape, -1, np.int64)
    history = []
    for r in range(rounds):
        got = achieved_at(k)
        a, valid = (got, np.ones(wanted.shape, bool)) if not isinstance(got, tuple) else got
        a, valid = np.asarray(a, dtype=np.float64), np.asarray(valid, dtype=bool)
        history.append(a.copy())
        err = np.where(valid, np.abs(a - wanted), np.inf)
        better = err < best_err
        best_k, best_a, best_err = np.where(better, k, best_k), np.where(better, a, best_a), np.where(better, err, best_err)
        best_round = np.where(better, r, best_round)
        # Progress along the wanted direction (negative: the move turned the head the wrong way).
        progress = a * np.sign(wanted)
        goal = np.abs(wanted)
        under = (progress < goal) & valid
        lo = np.where(under, np.maximum(lo, k), lo)
        hi = np.where(~under, np.minimum(hi, k), hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            secant = np.where(valid & (progress > 0.5), k * goal / progress, np.nan)
        inside = np.isfinite(secant) & (secant > lo) & (secant < hi)
        bisect = np.where(np.isfinite(hi), (lo + hi) / 2, np.minimum(2 * np.maximum(k, lo), max_scale))
        nxt = np.clip(np.where(inside, secant, bisect), 0.0, max_scale)
        k = np.where(best_err <= tolerance, best_k, nxt)
    return Calibration(scale=best_k, achieved=best_a, error=np.where(np.isfinite(best_err), best_err, np.abs(wanted)),
                       rounds=rounds, best_round=best_round, history=history)


def drift(stats: np.ndarray, base: np.ndarray) -> np.ndarray:
    """[N]: mean absolute change of colour statistics (headrot.labels.nuisance, in [0, 1]) from the
    unmoved render's. On the demo model a turned head drifts ~0.01-0.03; the renders that break
    (saturated blobs, blackened faces) drift past 0.05, with PSNR 9 dB against 16 and identity
    top-1 0.6 against 1.0 (bench/NOTES.md): the render stage's guard (`max_drift`)."""
    return np.abs(np.asarray(stats, np.float64) - np.asarray(base, np.float64)).mean(axis=1)
