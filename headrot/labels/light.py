"""Light direction of a face, three classes (left / center / right), semi-supervised.

The paper (Asperti, Colasuonno, Guerra 2024) labels CelebA by the direction the
light comes from, with a semi-supervised process. Here:

1. `light_features`: cheap, vectorised luminance features placed relative to the
   5 landmarks, on small (S x S, default 32) crops: a coarse grid of the face in
   a landmark frame, normalised by the face's mean luminance (so skin tone and
   exposure cancel), plus left/right asymmetries of mirrored grid cells, plus
   the physical heuristic's azimuth and fit loss (`physical_azimuth`).
2. A heuristic azimuth: the light azimuth that best explains the face band's
   shading under a Lambertian model of a head turned by the landmark yaw
   (`physical_azimuth`), minus the data set's median (`calibrate`).
3. `LightLabeler`: seeds from the heuristic's confident rows (azimuth far from
   the +-20 degree class boundaries) and from the user's labels, then a
   scikit-learn `SelfTrainingClassifier` fitted on all rows' features.

Convention (DESIGN.md): light 'left' = the image's left half of the face is the
lit one; yaw > 0 = the nose points toward the image's right. The asymmetry is
(left - right) / (left + right), so a positive score means 'left'.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from headrot.data.celeba_text import LIGHT_CLASSES  # one definition of the classes for the whole project

log = logging.getLogger(__name__)

LEFT, CENTER, RIGHT = LIGHT_CLASSES

# ---------------------------------------------------------------------------
# The face frame and the sampling grid
#
# Origin: the midpoint of the eye midpoint E and the mouth midpoint M (on the
# face's midline whatever the yaw: both midpoints are points of the symmetry
# plane). Unit: s = |M - E|, the eye-to-mouth distance, which yaw does not
# foreshorten (the inter-ocular distance does). Axes: `down` = (M - E) / s and
# `right` = down rotated by -90 degrees, so roll is removed too.
# Grid columns are mirrored pairs about the midline; rows run from the forehead
# to below the mouth.
GRID_A = np.array([-1.05, -0.75, -0.45, -0.2, 0.2, 0.45, 0.75, 1.05])
GRID_B = np.array([-1.2, -0.85, -0.5, -0.15, 0.2, 0.55, 0.9])
# The heuristic's regions, as (column, row) indices of the grid's LEFT half (the
# right half is their mirror): the inner columns (a = 0.2 and 0.45 s from the
# midline: beside the nose, the inner cheeks, the inner forehead) from the
# forehead to the mouth. On synthetic faces these cells' yaw-corrected
# asymmetries correlate best with the light's azimuth (0.85-0.93, against 0.4-0.7
# for the outer columns, which reach hair, ears and background at larger yaws).
HEURISTIC_CELLS = ((2, 1), (3, 1), (2, 2), (3, 2), (2, 3), (3, 3), (2, 4), (3, 4))


def _luminance(images: np.ndarray) -> np.ndarray:
    """uint8 [N,S,S,3] -> float32 [N,S,S] Rec. 601 luma in [0,1], 3x3 box-blurred."""
    x = np.asarray(images, dtype=np.float32)
    y = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]) / 255.0
    # 3x3 box blur (edge-padded): each grid sample then averages ~3x3 pixels of a
    # 32x32 face, the spacing of the grid, so the samples are not single-pixel noise.
    p = np.pad(y, ((0, 0), (1, 1), (1, 1)), mode="edge")
    s = p[:, :-2] + p[:, 1:-1] + p[:, 2:]
    return ((s[:, :, :-2] + s[:, :, 1:-1] + s[:, :, 2:]) / 9.0).astype(np.float32)


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample img [N,H,W] at pixel coordinates x, y [N,K] (pixel centres at integers), clamped."""
    n, h, w = img.shape
    x = np.clip(x, 0.0, w - 1.0)
    y = np.clip(y, 0.0, h - 1.0)
    x0 = np.clip(np.floor(x).astype(np.int64), 0, w - 2) if w > 1 else np.zeros_like(x, np.int64)
    y0 = np.clip(np.floor(y).astype(np.int64), 0, h - 2) if h > 1 else np.zeros_like(y, np.int64)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    fx = x - x0
    fy = y - y0
    r = np.arange(n)[:, None]
    top = img[r, y0, x0] * (1 - fx) + img[r, y0, x1] * fx
    bot = img[r, y1, x0] * (1 - fx) + img[r, y1, x1] * fx
    return top * (1 - fy) + bot * fy


def face_grid(images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Luminance [N, len(GRID_B), len(GRID_A)] sampled on the landmark grid (unnormalised)."""
    images = np.asarray(images)
    n, size = images.shape[0], images.shape[1]
    lum = _luminance(images) if n else np.zeros((0, size, size), np.float32)
    origin, s, down, right, bad = _face_frame(np.asarray(landmarks, dtype=np.float64).reshape(n, 10), size)
    aa, bb = np.meshgrid(GRID_A, GRID_B)  # [R, C]
    aa, bb = aa.ravel(), bb.ravel()
    # Landmark coordinates put pixel centres on whole numbers (embed.landmarks_in_crop keeps
    # that convention through the crop and resize), as _bilinear expects.
    px = origin[:, :1] + s[:, None] * (aa[None] * right[:, :1] + bb[None] * down[:, :1])
    py = origin[:, 1:] + s[:, None] * (aa[None] * right[:, 1:] + bb[None] * down[:, 1:])
    vals = _bilinear(lum, px, py) if n else np.zeros((0, aa.size))
    return vals.reshape(n, len(GRID_B), len(GRID_A)).astype(np.float32)


def raw_asymmetry(grid: np.ndarray) -> np.ndarray:
    """(left - right) / (left + right) of the heuristic's mirrored regions, before yaw correction."""
    ncol = grid.shape[2]
    left = np.zeros(grid.shape[0], np.float64)
    right = np.zeros(grid.shape[0], np.float64)
    for c, r in HEURISTIC_CELLS:
        left += grid[:, r, c]
        right += grid[:, r, ncol - 1 - c]
    with np.errstate(invalid="ignore", divide="ignore"):
        a = (left - right) / (left + right)
    return np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)



# ---------------------------------------------------------------------------
# The physical heuristic: the light azimuth that best explains the shading
#
# A linear asymmetry saturates: strong side light on a head turned the other way
# leaves both inner cheeks in shadow and reads 'center'. Instead, model the face
# band (from the eyes to below the nose) as the front of a head whose horizontal
# cross-section is an ellipse, semi-axes PHYS_W (across) and PHYS_D (depth) in
# units of the eye-to-mouth distance s (adult norms: half head breadth ~75 mm,
# half head depth ~95 mm, eye-to-mouth ~70 mm), turned by the yaw from the
# landmarks. Each sample is a face point fixed on that ellipse (PHYS_T from the
# front, at a few heights), so its image position and normal follow; under a distant
# light at azimuth phi a roughly Lambertian, roughly uniform-albedo skin is
# A (ambient + max(0, cos(psi - phi))). For each row, every (phi, ambient) on a
# grid is scored by the robust spread of log(observed) - log(model) after
# removing its median (the unknown albedo and exposure A cancel), and the best
# phi is the row's azimuth. Clipping at 0 is what keeps the information the
# linear asymmetry loses: which part of the head is still lit when the inner
# cheeks are both dark. Generic facts only (ellipse proportions, Lambertian skin).
PHYS_W = 1.0                     # head half-breadth / s
PHYS_D = 1.2                     # head half-depth / s (front of the face to the head's centre)
PHYS_T = np.radians(np.linspace(-60.0, 60.0, 11))  # sample points: angle around the head from the front
PHYS_ROWS = (-0.5, -0.2, 0.1, 0.3)       # sample rows, b in the face frame (eyes -0.5, mouth +0.5)
PHYS_VISIBLE = 0.3                       # a sample counts where its normal's cos to the camera exceeds this
PHYS_PHI = np.arange(-120.0, 120.5, 2.0)  # candidate azimuths, degrees
PHYS_AMBIENT = (0.1, 0.2, 0.35, 0.5)     # candidate ambient shares
PHYS_CLIP = 0.3                          # robust loss: squared log-residuals clipped at this
PHYS_CHUNK = 2048                        # rows per vectorised block


def _face_frame(landmarks: np.ndarray, size: int):
    """(origin [N,2], s [N], down [N,2], right [N,2], bad [N]) of the landmark frame (see face_grid)."""
    n = landmarks.shape[0]
    lm = np.asarray(landmarks, dtype=np.float64).reshape(n, 5, 2)
    eye = lm[:, :2].mean(axis=1)
    mouth = lm[:, 3:].mean(axis=1)
    d = mouth - eye
    s = np.hypot(d[:, 0], d[:, 1])
    bad = ~np.isfinite(s) | (s < 1e-3) | ~np.all(np.isfinite(lm.reshape(n, 10)), axis=1)
    # Fallback frame for rows without usable landmarks: the crop's centre, upright.
    s = np.where(bad, size * 0.24, s)
    down = np.where(bad[:, None], np.array([0.0, 1.0]), d / np.where(bad, 1.0, s)[:, None])
    origin = np.where(bad[:, None], np.array([size / 2, size / 2]), (eye + mouth) / 2)
    right = np.stack([down[:, 1], -down[:, 0]], axis=1)
    return origin, s, down, right, bad


def physical_azimuth(lum: np.ndarray, landmarks: np.ndarray, yaw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(azimuth degrees [N], robust loss [N]) of the best Lambertian explanation of the face band.

    lum: [N,S,S] luminance (see _luminance); landmarks [N,10] in its pixel frame;
    yaw [N] degrees (NaN -> 0). Rows without landmarks get azimuth 0, loss NaN.
    """
    n, size = lum.shape[0], lum.shape[1]
    if n == 0:
        return np.zeros(0), np.zeros(0)
    yaw = np.nan_to_num(np.asarray(yaw, np.float64).reshape(n), nan=0.0, posinf=0.0, neginf=0.0)
    origin, s, down, right, bad = _face_frame(landmarks, size)
    th = np.radians(np.clip(yaw, -90, 90))[:, None]
    # Face points fixed on the head (angle t from the front on the ellipse), turned by the yaw:
    # image offset from the midline (whose point is the front, at camera x = D sin th) and the
    # camera-frame normal azimuth psi = (head-frame normal azimuth) + th.
    t = PHYS_T[None]
    a = PHYS_W * np.sin(t) * np.cos(th) + PHYS_D * np.cos(t) * np.sin(th) - PHYS_D * np.sin(th)
    psi1 = np.arctan2(np.sin(t) / PHYS_W, np.cos(t) / PHYS_D) + th
    obs = []
    for b in PHYS_ROWS:
        px = origin[:, :1] + s[:, None] * (a * right[:, :1] + b * down[:, :1])
        py = origin[:, 1:] + s[:, None] * (a * right[:, 1:] + b * down[:, 1:])
        obs.append(_bilinear(lum, px, py))
    lo = np.log(np.maximum(np.concatenate(obs, axis=1), 0.01))
    psi = np.tile(psi1, (1, len(PHYS_ROWS)))
    wt = (np.cos(psi) > PHYS_VISIBLE).astype(np.float64)   # hidden or grazing samples do not count
    phi = np.radians(PHYS_PHI)
    az = np.zeros(n)
    loss = np.zeros(n)
    c = PHYS_CLIP
    for c0 in range(0, n, PHYS_CHUNK):
        sl = slice(c0, c0 + PHYS_CHUNK)
        cosd = np.maximum(0.0, np.cos(psi[sl, None, :] - phi[None, :, None]))  # [n, P, K]
        w = wt[sl, None, :]
        sw = np.maximum(w.sum(axis=2, keepdims=True), 1.0)
        best = None
        for amb in PHYS_AMBIENT:
            r = lo[sl, None, :] - np.log(amb + cosd)
            r -= (r * w).sum(axis=2, keepdims=True) / sw               # albedo and exposure: the mean ...
            r -= (np.clip(r, -c, c) * w).sum(axis=2, keepdims=True) / sw  # ... refined, robust to outliers
            lss = (np.minimum(r * r, c * c) * w).sum(axis=2) / sw[..., 0]
            best = lss if best is None else np.minimum(best, lss)
        k = np.argmin(best, axis=1)
        az[sl] = PHYS_PHI[k]
        loss[sl] = best[np.arange(len(k)), k]
    az = np.where(bad, 0.0, az)
    loss = np.where(bad, np.nan, loss)
    return az, loss


# ---------------------------------------------------------------------------
# Features

_NR, _NC = len(GRID_B), len(GRID_A)
FEATURE_NAMES = (
    tuple(f"grid_r{r}_c{c}" for r in range(_NR) for c in range(_NC))
    + tuple(f"asym_r{r}_c{c}" for r in range(_NR) for c in range(_NC // 2))
    + ("asym_heuristic", "yaw_over_30", "phys_azimuth_over_30", "phys_loss")
)
ASYM_COL = FEATURE_NAMES.index("asym_heuristic")
YAW_COL = FEATURE_NAMES.index("yaw_over_30")
PHYS_COL = FEATURE_NAMES.index("phys_azimuth_over_30")
PHYS_LOSS_COL = FEATURE_NAMES.index("phys_loss")


def light_features(images: np.ndarray, landmarks: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """float32 [N, len(FEATURE_NAMES)] light features of S x S face crops.

    images: uint8 [N,S,S,3]; landmarks: [N,10] in the S x S crop's pixel frame
    (CelebA column order); yaw: degrees [N] (NaN allowed: it becomes 0).
    Columns (FEATURE_NAMES): the luminance grid divided by the face's mean
    luminance (exposure and skin tone cancel), the (left - right) / (left + right)
    asymmetry of every mirrored pair of grid cells, the inner cells' raw
    asymmetry (the first heuristic, kept as a feature), yaw / 30, and the physical
    heuristic's azimuth / 30 and fit loss (`physical_azimuth`; its data-set offset is
    removed later, by `calibrate`, which needs every row). Never raises on odd rows
    (black images, missing landmarks): they get finite, uninformative values.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [N,S,S,3], got {images.shape}")
    n = images.shape[0]
    yaw = np.nan_to_num(np.asarray(yaw, dtype=np.float64).reshape(n), nan=0.0, posinf=0.0, neginf=0.0)
    lm = np.asarray(landmarks, dtype=np.float64).reshape(n, 10)
    grid = face_grid(images, lm).astype(np.float64)
    phys_az, phys_loss = physical_azimuth(_luminance(images) if n else np.zeros((0,) + images.shape[1:3]), lm, yaw)
    inner = grid[:, 1:_NR - 1, 1:_NC - 1].mean(axis=(1, 2))
    norm = grid / np.maximum(inner, 1e-3)[:, None, None]
    left = grid[:, :, : _NC // 2]
    right = grid[:, :, ::-1][:, :, : _NC // 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        pairs = np.where(left + right > 1e-6, (left - right) / (left + right), 0.0)
    out = np.concatenate([
        norm.reshape(n, _NR * _NC), pairs.reshape(n, _NR * (_NC // 2)),
        raw_asymmetry(grid)[:, None], (yaw / 30.0)[:, None],
        (phys_az / 30.0)[:, None], np.nan_to_num(phys_loss, nan=1.0)[:, None],
    ], axis=1)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


# ---------------------------------------------------------------------------
# The heuristic: the physical azimuth, recentred on the data set
#
# History: the first heuristic was the inner cells' asymmetry (raw_asymmetry), corrected for yaw
# linearly (azimuth ~ yaw - (asymmetry - offset) / slope). It saturates: strong side light on a
# head turned the other way leaves both inner cheeks dark and reads 'center' (heuristic 78.5 %,
# labeler 77.4 % on 5,000 synthetic faces). The heuristic is now `physical_azimuth` (92 %), which
# takes the yaw into its model; the asymmetry stays a feature.
CENTER_HALF_WIDTH_DEG = 20.0   # |azimuth| below this is 'center' (headrot.synth's truth threshold)
SEED_MARGIN_DEG = 6.0          # heuristic seeds only this far (or more) from a class boundary
SEED_LOSS_QUANTILE = 0.7       # ... and only among this share of rows best fitted by the physical model
MIN_FIT_ROWS = 40              # fewer rows: default calibration, heuristic labels only


@dataclass(frozen=True)
class AzimuthCalibration:
    offset_deg: float          # the data set's median physical azimuth, subtracted from every row's
    center_half_width: float   # |azimuth| below this (degrees) is 'center'
    fitted: bool               # False: too few rows, no offset removed


def _huber_line(x: np.ndarray, y: np.ndarray, epsilon: float = 1.35) -> tuple[float, float]:
    """Robust y ~ a + b x (scikit-learn's HuberRegressor); x scaled for conditioning."""
    from sklearn.linear_model import HuberRegressor

    sx = max(float(np.std(x)), 1e-9)
    h = HuberRegressor(epsilon=epsilon, alpha=0.0, max_iter=500).fit((x / sx)[:, None], y)
    return float(h.intercept_), float(h.coef_[0]) / sx


def calibrate(azimuth: np.ndarray, center_half_width: float = CENTER_HALF_WIDTH_DEG) -> AzimuthCalibration:
    """The data set's azimuth offset (degrees): the median of the physical azimuths.

    azimuth: the physical heuristic's azimuths in degrees (features[:, PHYS_COL] * 30).
    Over a data set whose light is not biased to one side, the median azimuth is
    ~0; a constant offset (a camera or alignment bias: on the synthetic set the
    half-pixel convention of the crop's landmarks shifts it by ~-5 degrees) is
    removed. The yaw needs no correction here: `physical_azimuth` models the turned head.
    Fewer than MIN_FIT_ROWS rows: no offset.
    """
    a = np.asarray(azimuth, np.float64)
    a = a[np.isfinite(a)]
    if a.size < MIN_FIT_ROWS:
        return AzimuthCalibration(0.0, center_half_width, False)
    return AzimuthCalibration(float(np.median(a)), center_half_width, True)


def asymmetry_yaw_slope(asym: np.ndarray, yaw: np.ndarray) -> float:
    """Diagnostic (bench.light): the robust (Huber) slope of the inner cells' asymmetry on yaw
    over a data set, what the first heuristic divided by (NaN if unfit)."""
    ok = np.isfinite(asym) & np.isfinite(yaw)
    if ok.sum() < MIN_FIT_ROWS or np.std(np.asarray(yaw)[ok]) < 3.0:
        return float("nan")
    return _huber_line(np.asarray(yaw, np.float64)[ok], np.asarray(asym, np.float64)[ok])[1]


def heuristic_azimuth(features: np.ndarray, cal: AzimuthCalibration) -> np.ndarray:
    """Estimated light azimuth in degrees (< 0: light at the image's left): the physical
    azimuth of the features less the data set's offset."""
    f = np.asarray(features, dtype=np.float64)
    return f[:, PHYS_COL] * 30.0 - cal.offset_deg


def classes_from_azimuth(az: np.ndarray, center_half_width: float) -> np.ndarray:
    return np.where(az < -center_half_width, LEFT, np.where(az > center_half_width, RIGHT, CENTER)).astype(object)


def heuristic_labels(features: np.ndarray, cal: AzimuthCalibration) -> tuple[np.ndarray, np.ndarray]:
    """(labels, confidence in [1/3, 1]) from the heuristic azimuth alone."""
    az = heuristic_azimuth(features, cal)
    labels = classes_from_azimuth(az, cal.center_half_width)
    dist = np.abs(np.abs(az) - cal.center_half_width)  # degrees to the nearest class boundary
    conf = 1.0 / 3.0 + (2.0 / 3.0) * (1.0 - np.exp(-dist / SEED_MARGIN_DEG))
    return labels, conf


# ---------------------------------------------------------------------------
# The semi-supervised labeler


def _clean_known(known_labels, n: int) -> np.ndarray:
    """known_labels -> object array of class names, "" where unknown (None / NaN / "")."""
    if known_labels is None:
        return np.full(n, "", dtype=object)
    k = np.asarray(known_labels, dtype=object).reshape(-1)
    if k.size != n:
        raise ValueError(f"known_labels has {k.size} rows, features have {n}")
    out = np.full(n, "", dtype=object)
    for i, v in enumerate(k):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        s = str(v).strip().lower()
        if s in ("", "none", "nan"):
            continue
        if s not in LIGHT_CLASSES:
            raise ValueError(f"unknown light label {v!r} (expected one of {LIGHT_CLASSES})")
        out[i] = s
    return out


class LightLabeler:
    """Light direction classes for a whole data set (fit and predict on the same rows).

    fit: remove the data set's azimuth offset (all rows); calibrate the centre class's
    half-width from the user's labels when they cover enough rows of at least two
    classes; seed with the user's labels plus the heuristic's confident rows
    (>= SEED_MARGIN_DEG from a class boundary, among the SEED_LOSS_QUANTILE
    best-fitted by the physical model); fit a SelfTrainingClassifier
    (standardised features -> logistic regression) on all rows.
    predict: the user's labels win where given (source "labels"), the classifier
    elsewhere ("classifier"), the heuristic where no classifier could be fitted
    ("heuristic": fewer than MIN_FIT_ROWS rows, or fewer than two seeded classes).
    """

    def __init__(self, seed: int = 0, center_half_width: float = CENTER_HALF_WIDTH_DEG,
                 seed_margin: float = SEED_MARGIN_DEG):
        self.seed = int(seed)
        self.center_half_width = float(center_half_width)
        self.seed_margin = float(seed_margin)
        self.calibration_: AzimuthCalibration | None = None
        self.fallback_reason_: str | None = None  # why predict gives heuristic labels, if it does
        self.classifier_ = None
        self.n_seeds_: dict[str, int] = {}

    # -- inputs

    def _design(self, features: np.ndarray, yaw: np.ndarray) -> np.ndarray:
        """Classifier inputs: the features, the heuristic azimuth and its yaw interaction."""
        az = heuristic_azimuth(features, self.calibration_) / 30.0
        y = np.nan_to_num(np.asarray(yaw, np.float64).reshape(len(features)), nan=0.0) / 30.0
        return np.concatenate([np.asarray(features, np.float64), az[:, None], (az * y)[:, None]], axis=1)

    def _calibrate_half_width(self, features, yaw, known) -> float:
        """The centre half-width that best reproduces the user's labels (default without them)."""
        have = known != ""
        classes = set(known[have])
        if have.sum() < 10 or len(classes) < 2:
            return self.center_half_width
        az = heuristic_azimuth(features[have], self.calibration_)
        grid = np.arange(2.0, 60.5, 0.5)
        agree = [np.mean(classes_from_azimuth(az, w) == known[have]) for w in grid]
        best = grid[np.flatnonzero(np.asarray(agree) == np.max(agree))]
        return float(np.median(best))

    # -- fit / predict

    def fit(self, features: np.ndarray, yaw: np.ndarray, known_labels=None) -> "LightLabeler":
        f = np.nan_to_num(np.asarray(features, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        n = f.shape[0]
        y = np.asarray(yaw, dtype=np.float64).reshape(n)
        known = _clean_known(known_labels, n)
        self.calibration_ = calibrate(f[:, PHYS_COL] * 30.0 if n else np.zeros(0), self.center_half_width)
        width = self._calibrate_half_width(f, y, known)
        cal = self.calibration_
        self.calibration_ = AzimuthCalibration(cal.offset_deg, width, cal.fitted)
        self.classifier_ = None
        if n < MIN_FIT_ROWS:
            self.fallback_reason_ = f"{n} rows, fewer than {MIN_FIT_ROWS}"
            return self

        az = heuristic_azimuth(f, self.calibration_)
        dist = np.abs(az) - width  # > 0 outside the centre band
        # Seeds: far from a class boundary AND well explained by the shading model (the
        # SEED_LOSS_QUANTILE best-fitting rows: hair over the face, glasses or odd albedo fit worse).
        loss = f[:, PHYS_LOSS_COL]
        fits = loss <= np.quantile(loss, SEED_LOSS_QUANTILE)
        seeds = np.full(n, "", dtype=object)
        seeds[fits & (dist > self.seed_margin) & (az < 0)] = LEFT
        seeds[fits & (dist > self.seed_margin) & (az > 0)] = RIGHT
        seeds[fits & (dist < -self.seed_margin)] = CENTER
        seeds[known != ""] = known[known != ""]
        self.n_seeds_ = {c: int(np.sum(seeds == c)) for c in LIGHT_CLASSES}
        present = [c for c in LIGHT_CLASSES if self.n_seeds_[c] >= 2]
        if len(present) < 2 or sum(self.n_seeds_.values()) < MIN_FIT_ROWS // 2:
            self.fallback_reason_ = f"too few confident seeds {self.n_seeds_}"
            return self

        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.semi_supervised import SelfTrainingClassifier

        target = np.array([LIGHT_CLASSES.index(s) if s else -1 for s in seeds], dtype=np.int64)
        base = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=500, random_state=self.seed))
        clf = SelfTrainingClassifier(base, threshold=0.9, max_iter=3)
        try:
            clf.fit(self._design(f, y), target)
        except (ValueError, np.linalg.LinAlgError) as exc:
            # A degenerate solve (e.g. seeds of one class left after self-training): the heuristic
            # labels are still sound, so the stage goes on with them, and says so.
            self.fallback_reason_ = f"classifier fit failed: {exc}"
            log.warning("light labels: %s; using the heuristic's labels", self.fallback_reason_)
            return self
        self.classifier_ = clf
        return self

    def predict(self, features: np.ndarray, yaw: np.ndarray, known_labels=None):
        """(labels [N] str, score [N] float in [0,1], source [N] str)."""
        if self.calibration_ is None:
            raise RuntimeError("LightLabeler.predict before fit")
        f = np.nan_to_num(np.asarray(features, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        n = f.shape[0]
        y = np.asarray(yaw, dtype=np.float64).reshape(n)
        known = _clean_known(known_labels, n)
        if n == 0:
            return np.zeros(0, dtype=object), np.zeros(0, np.float32), np.zeros(0, dtype=object)
        if self.classifier_ is not None:
            proba = self.classifier_.predict_proba(self._design(f, y))
            cls = np.asarray(self.classifier_.classes_, dtype=np.int64)
            labels = np.array([LIGHT_CLASSES[c] for c in cls[np.argmax(proba, axis=1)]], dtype=object)
            score = proba.max(axis=1)
            source = np.full(n, "classifier", dtype=object)
        else:
            labels, score = heuristic_labels(f, self.calibration_)
            source = np.full(n, "heuristic", dtype=object)
        have = known != ""
        labels[have] = known[have]
        score = np.where(have, 1.0, score)
        source[have] = "labels"
        return labels, np.clip(score, 0.0, 1.0).astype(np.float32), source
