"""Render one synthetic face: orthographic ray casting of ellipsoids, Lambertian light.

Frames. The head frame has its origin at the centre of the skull ellipsoid, x to
the image's right, y up, z toward the camera (at yaw 0). Lengths are pixels of
the canonical 178x218 aligned image. The camera frame is the same axes after the
head's rotation R = Rz(roll) Rx(pitch) Ry(yaw); the image is u = tu + x, v = tv - y,
with (tu, tv) chosen like CelebA's alignment: the eye midpoint on row EYE_ROW and
the face midpoint (eyes and mouth) on column CENTRE_COL, whatever the pose.

Conventions (DESIGN.md): yaw > 0 turns the nose toward the image's right; light
azimuth < 0 puts the light at the image's left; pitch > 0 lifts the nose; roll > 0
turns the face counter-clockwise as seen in the image.

The 5 landmarks are 3D points of the head frame (eye centres, nose tip, mouth
corners) projected with the same rotation as the pixels; the nose tip stands
NOSE_DEPTH_RATIO x iod in front of the eye-mouth plane, the proportion the yaw
estimator (headrot.labels.yaw) assumes, so one estimator is right on both.
"""
from __future__ import annotations

import functools

import numpy as np

from headrot.labels.yaw import NOSE_DEPTH_RATIO
from headrot.synth.identity import IdentityParams

# ---------------------------------------------------------------------------
# Canvas and light

CANON_W, CANON_H = 178, 218
EYE_ROW = 111.0          # CelebA aligned crops: eyes near row 111 of 218
CENTRE_COL = 88.5        # ... and the face centred on the 178-wide image
LIGHT_ELEVATION_DEG = 15.0  # the light sits a little above the head: shadows fall down-sideways
AMBIENT = 0.2            # share of light that reaches surfaces facing away (keeps the shaded side readable)
DIFFUSE = 1.0            # lit side ~5x the shaded side: the light's side is plain at 32x32
SPECULAR = 0.10          # a faint highlight on skin; hair and clothes get less
_INF = np.inf


def rotation(yaw_deg: float, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """Head -> camera rotation R = Rz(roll) @ Rx(pitch) @ Ry(yaw) (see the module's conventions)."""
    y, p, r = np.radians([yaw_deg, pitch_deg, roll_deg])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def light_direction(azimuth_deg: float, elevation_deg: float = LIGHT_ELEVATION_DEG) -> np.ndarray:
    """Unit vector toward the light, camera frame (x image-right, y up, z to the camera)."""
    a, e = np.radians([azimuth_deg, elevation_deg])
    return np.array([np.sin(a) * np.cos(e), np.sin(e), np.cos(a) * np.cos(e)])


# ---------------------------------------------------------------------------
# Head geometry (head frame)


def _surface_z(p: IdentityParams, x: float, y: float) -> float:
    """Depth of the skull ellipsoid's front surface at (x, y)."""
    q = 1.0 - (x / p.head_w) ** 2 - (y / p.head_h) ** 2
    return float(p.head_d * np.sqrt(max(q, 0.0)))


def landmarks_3d(p: IdentityParams) -> np.ndarray:
    """[5, 3] head-frame points: left eye, right eye, nose tip, left and right mouth corner.

    "left" is the image's left (x < 0). The nose tip is NOSE_DEPTH_RATIO * iod in
    front of the eye-mouth plane, measured at the nose's height.
    """
    ex, ey = p.iod / 2, p.eye_y
    my = p.eye_y - p.eye_mouth
    ny = p.eye_y - p.nose_frac * p.eye_mouth
    ze, zm = _surface_z(p, ex, ey), _surface_z(p, p.mouth_hw, my)
    z_plane = ze + p.nose_frac * (zm - ze)
    nz = z_plane + NOSE_DEPTH_RATIO * p.iod
    return np.array([
        [-ex, ey, ze], [ex, ey, ze], [0.0, ny, nz], [-p.mouth_hw, my, zm], [p.mouth_hw, my, zm],
    ])


class _Ellipsoid:
    """centre c, semi-axes s, optional rotation M (columns: the ellipsoid's axes)."""

    __slots__ = ("c", "s", "m", "inv_s2")

    def __init__(self, c, s, m=None):
        self.c = np.asarray(c, dtype=np.float64)
        self.s = np.asarray(s, dtype=np.float64)
        self.m = None if m is None else np.asarray(m, dtype=np.float64)
        self.inv_s2 = 1.0 / self.s ** 2

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(t_near, t_far) for rays o + t d (o [P,3], d [3]); inf where missed."""
        oc = o - self.c
        dl = d
        if self.m is not None:
            oc = oc @ self.m
            dl = d @ self.m
        oc = oc / self.s
        dl = dl / self.s
        a = float(dl @ dl)
        b = 2.0 * (oc @ dl)
        cc = np.einsum("ij,ij->i", oc, oc) - 1.0
        disc = b * b - 4.0 * a * cc
        hit = disc >= 0
        sq = np.sqrt(np.where(hit, disc, 0.0))
        t1 = np.where(hit, (-b - sq) / (2 * a), _INF)
        t2 = np.where(hit, (-b + sq) / (2 * a), _INF)
        return t1, t2

    def normal(self, pts: np.ndarray) -> np.ndarray:
        q = pts - self.c
        if self.m is not None:
            q = q @ self.m
        n = q * self.inv_s2
        if self.m is not None:
            n = n @ self.m.T
        return n / np.linalg.norm(n, axis=1, keepdims=True)


@functools.lru_cache(maxsize=256)
def _geometry(p: IdentityParams) -> dict:
    lm = landmarks_3d(p)
    nose = lm[2]
    v = p.hair_volume
    tip_rz = p.nose_w * 1.15
    g = {
        "head": _Ellipsoid((0, 0, 0), (p.head_w, p.head_h, p.head_d)),
        "hair": _Ellipsoid((0, 0.6 * v, -0.3 * v), (p.head_w + v, p.head_h + v, p.head_d + v)),
        "tip": _Ellipsoid((0, nose[1], nose[2] - tip_rz), (p.nose_w, p.nose_w * 0.85, tip_rz)),
        "ear_l": _Ellipsoid((-(p.head_w - 4), p.eye_y - 7, -3), (4.5, 10.5, 7.5)),
        "ear_r": _Ellipsoid((p.head_w - 4, p.eye_y - 7, -3), (4.5, 10.5, 7.5)),
    }
    # Nose bridge: an ellipsoid along the dorsum, from between the eyes to just above the tip.
    top = np.array([0.0, p.eye_y + 2.0, _surface_z(p, 0.0, p.eye_y + 2.0) + 1.0])
    bottom = np.array([0.0, nose[1] + 0.6 * p.nose_w, nose[2] - 0.55 * p.nose_w])
    axis = top - bottom
    length = float(np.linalg.norm(axis))
    ay = axis / length
    az = np.cross([1.0, 0, 0], ay)
    m = np.stack([[1.0, 0, 0], ay, az], axis=1)
    g["bridge"] = _Ellipsoid((top + bottom) / 2, (p.nose_w * 0.62, length / 2 + 2.0, 4.5), m)
    if p.hair_style == "long":
        g["hair_back"] = _Ellipsoid((0, p.eye_y - 48, -0.38 * p.head_d), (p.head_w + v + 3, 64, p.head_d * 0.72))
    # Body, camera frame (the body does not turn with the head).
    g["neck"] = _Ellipsoid((0, -0.78 * p.head_h, -0.28 * p.head_d), (p.head_w * 0.6, p.head_h * 0.62, p.head_d * 0.62))
    g["torso"] = _Ellipsoid((0, -p.head_h - 66, -0.35 * p.head_d), (p.head_w * 2.5, 50, p.head_d * 0.95))
    # Hair boundary, height above which the shell is hair, against the azimuth around the
    # vertical axis (0 front, 90 side, 180 back): [front, front, side, back].
    front = p.eye_y + (14.0 if p.bangs else p.hairline)
    side, back = {
        "bald": (p.eye_y + 8, p.eye_y - 30),
        "short": (p.eye_y + 8, p.eye_y - 38),
        "medium": (p.eye_y - 30, p.eye_y - 52),
        "long": (p.eye_y - 40, p.eye_y - 62),
    }[p.hair_style]
    g["hair_levels"] = np.array([front, front, side, back])
    return g


_HAIR_ANGLES = np.array([0.0, 35.0, 90.0, 180.0])


def _hair_mask(p: IdentityParams, g: dict, pts: np.ndarray) -> np.ndarray:
    c = g["hair"].c
    phi = np.degrees(np.arctan2(np.abs(pts[:, 0] - c[0]), pts[:, 2] - c[2]))
    level = np.interp(phi, _HAIR_ANGLES, g["hair_levels"])
    mask = pts[:, 1] > level
    if p.hair_style == "bald":  # a fringe around the back and sides only
        mask &= (pts[:, 1] < p.eye_y + 24) & (phi > 70)
    return mask


# ---------------------------------------------------------------------------
# Albedo (head frame, so features turn with the head)


def _mix(base: np.ndarray, colour, mask: np.ndarray, alpha=1.0) -> None:
    """In place: base[mask] = lerp(base[mask], colour, alpha)."""
    if not np.any(mask):
        return
    a = alpha[mask][:, None] if isinstance(alpha, np.ndarray) else alpha
    base[mask] = base[mask] * (1 - a) + np.asarray(colour) * a


def _skin_albedo(p: IdentityParams, pts: np.ndarray) -> np.ndarray:
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    skin = np.asarray(p.skin)
    col = np.tile(skin, (len(pts), 1))
    front = z > 0.2 * p.head_d
    my = p.eye_y - p.eye_mouth
    hair = np.asarray(p.hair)

    # Cheeks, beard and mustache (under the eyes and mouth).
    if p.rosy > 0:
        for sx in (-1, 1):
            r2 = ((x - sx * (p.iod / 2 + 5)) ** 2 + (y - (p.eye_y - 20)) ** 2) / 9.0 ** 2
            _mix(col, (0.86, 0.42, 0.42), front & (r2 < 1), 0.35 * p.rosy * np.clip(1 - r2, 0, 1))
    beard_colour = hair * 0.85 if p.hair_colour != "blond" else hair * 0.7
    # Beard line: rises from above the mouth at the middle to the sideburns at the sides.
    ax = np.clip(np.abs(x) / p.head_w, 0, 1)
    beard_top = my + 8 + (p.eye_y - 10 - my - 8) * np.clip((ax - 0.45) / 0.35, 0, 1) ** 1.5
    if p.beard == "full":
        a = 0.88 * np.clip((beard_top - y) / 3 + 0.5, 0, 1)
        _mix(col, beard_colour, (y < beard_top + 2) & (z > -0.15 * p.head_d), a)
    elif p.beard == "stubble":
        a = 0.3 * np.clip((beard_top - y) / 4 + 0.5, 0, 1)
        _mix(col, (0.25, 0.22, 0.2), (y < beard_top + 2) & (z > -0.15 * p.head_d), a)
    if p.mustache:
        _mix(col, beard_colour, front & (y > my + 1.5) & (y < my + 7.5) & (np.abs(x) < p.mouth_hw + 1), 0.9)
    if p.goatee:
        _mix(col, beard_colour, front & (np.abs(x) < 9) & (y < my - 3.5), 0.85)

    # Mouth: corners at (+-mouth_hw, my); a smile lowers the middle.
    xm = x / p.mouth_hw
    w = np.clip(1 - xm ** 2, 0, 1)
    sw = np.sqrt(w)
    yc = my - p.smile * w
    in_mouth = front & (np.abs(xm) < 1)
    lip = np.array((0.76, 0.12, 0.2)) if p.lipstick else 0.55 * np.asarray(p.lip) + 0.45 * skin * (0.8, 0.6, 0.6)
    _mix(col, lip, in_mouth & (y > yc - (3.4 * sw + 0.4)) & (y < yc + 2.4 * sw + 0.4))
    if p.mouth_open:
        gap = in_mouth & (np.abs(y - yc) < 1.8 * sw)
        _mix(col, (0.2, 0.06, 0.06), gap)
        if p.smile > 0:
            _mix(col, (0.92, 0.9, 0.86), gap & (y > yc) & (np.abs(xm) < 0.75))
    else:
        _mix(col, lip * 0.35, in_mouth & (np.abs(y - yc) < 0.75))

    # Eyes: socket shade, almond of white, iris, pupil, lash line; brows above.
    brow = hair * 0.75 if p.hair_colour not in ("blond", "gray") else hair * 0.55
    if p.hair_style == "bald":
        brow = np.asarray((0.25, 0.18, 0.14))
    for sx in (-1, 1):
        dx = x - sx * p.iod / 2
        dy = y - p.eye_y
        _mix(col, skin * 0.78, front & ((dx / 10.5) ** 2 + (dy / 7) ** 2 < 1), 0.6)
        almond = p.eye_h * np.clip(1 - (dx / 7.2) ** 2, 0, 1)
        white = front & (np.abs(dy) < almond)
        _mix(col, (0.93, 0.91, 0.88), white)
        _mix(col, p.iris, white & (dx ** 2 + dy ** 2 < 3.2 ** 2))
        _mix(col, (0.02, 0.02, 0.02), white & (dx ** 2 + dy ** 2 < 1.4 ** 2))
        _mix(col, (0.08, 0.06, 0.05), front & (np.abs(dx) < 7.5) & (dy >= almond) & (dy < almond + 1.1))
        bx = dx * sx  # outward positive
        yb = p.eye_y + 8.5 + p.brow_arch * np.clip(1 - ((bx - 1) / 9.5) ** 2, 0, 1)
        thick = p.brow_thick / 2 * (1 - 0.45 * np.clip((bx + 9) / 20, 0, 1))
        _mix(col, brow, front & (bx > -8) & (bx < 11) & (np.abs(y - yb) < thick), 0.9)
    if p.glasses:
        _glasses(p, pts, col)
    return col


def _glasses(p: IdentityParams, pts: np.ndarray, col: np.ndarray) -> None:
    """Thick dark rims (visible at 32x32), a bridge and temples running back to the ears."""
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    rim = np.asarray(p.glasses_rgb)
    cy = p.eye_y + 1.0
    for sx in (-1, 1):
        r = np.sqrt(((x - sx * p.iod / 2) / 11.5) ** 2 + ((y - cy) / 8.5) ** 2)
        _mix(col, rim, (z > 0) & (r < 1.0) & (r > 0.74))
        _mix(col, rim, (z > 0) & (r <= 0.74), 0.12)
    _mix(col, rim, (z > 0) & (np.abs(x) < p.iod / 2 - 10) & (np.abs(y - cy - 2) < 1.3))
    _mix(col, rim, (np.abs(x) > p.iod / 2 + 10.5) & (np.abs(y - cy - 2) < 1.4) & (z > -0.1 * p.head_d))


def _hair_albedo(p: IdentityParams, pts: np.ndarray) -> np.ndarray:
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    hair = np.asarray(p.hair)
    strands = 1 + 0.05 * np.sin(0.7 * x + 1.5 * np.sin(0.08 * y) + 0.2 * z)
    col = hair[None, :] * strands[:, None]
    # The parting: a thin line of scalp on the crown, off-centre.
    part = (np.abs(x - p.part_x) < 1.2) & (y > p.eye_y + p.hairline - 6) & (z > -0.25 * p.head_d) & (y < p.head_h + 20)
    if p.hair_style != "bald":
        _mix(col, np.asarray(p.skin) * 0.8, part, 0.55)
    return col


# ---------------------------------------------------------------------------
# Rendering
#
# Rays are orthographic: pixel (u, v) casts x = u - tu, y = tv - v, z = Z0 - t in the
# camera frame. For an ellipsoid, the unit-sphere coordinates along a ray are affine in
# (x, y, t), so the hit depth is a closed-form quadratic evaluated only inside the
# ellipsoid's projected bounding box: small parts (nose, ears) cost almost nothing.

_Z0 = 400.0  # ray origins' depth: in front of everything


@functools.lru_cache(maxsize=8)
def _axes(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical coordinates of the pixel centres: columns u [W], rows v [H]."""
    u = (np.arange(width) + 0.5) * CANON_W / width - 0.5
    v = (np.arange(height) + 0.5) * CANON_H / height - 0.5
    return u, v


@functools.lru_cache(maxsize=64)
def _background(p: IdentityParams, width: int, height: int) -> np.ndarray:
    u, v = _axes(width, height)
    t = ((u[None, :] - CANON_W / 2) * np.cos(p.bg_angle) + (v[:, None] - CANON_H / 2) * np.sin(p.bg_angle)) / 140 + 0.5
    t = np.clip(t, 0, 1)[..., None]
    bg = np.asarray(p.bg1) * (1 - t) + np.asarray(p.bg2) * t
    bg.setflags(write=False)
    return bg.reshape(-1, 3)


def _grid_hits(ell: _Ellipsoid, to_frame: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple:
    """Near and far hit depths t [H, W] (inf where missed) of the rays through every pixel.

    to_frame maps camera to the ellipsoid's frame (rot.T for head parts, I for the body);
    xs [W], ys [H] are the camera x of each column and y of each row.
    """
    m = np.eye(3) if ell.m is None else ell.m
    a_mat = (m.T @ to_frame) / ell.s[:, None]          # camera -> unit sphere (linear part)
    e = -(m.T @ ell.c) / ell.s                          # ... and offset
    # Projected bounding box: centre and half extents in camera x, y.
    centre = to_frame.T @ ell.c
    spread = to_frame.T @ m * ell.s[None, :]
    hx, hy = np.linalg.norm(spread[0]), np.linalg.norm(spread[1])
    cols = np.flatnonzero(np.abs(xs - centre[0]) <= hx + 1)
    rows = np.flatnonzero(np.abs(ys - centre[1]) <= hy + 1)
    t1 = np.full((ys.size, xs.size), _INF)
    t2 = np.full((ys.size, xs.size), _INF)
    if cols.size == 0 or rows.size == 0:
        return t1, t2
    c0, c1, r0, r1 = cols[0], cols[-1] + 1, rows[0], rows[-1] + 1
    x = xs[c0:c1][None, :]
    y = ys[r0:r1][:, None]
    w = -a_mat[:, 2]
    qa = float(w @ w)
    k = [a_mat[i, 0] * x + (a_mat[i, 1] * y + (a_mat[i, 2] * _Z0 + e[i])) for i in range(3)]
    qb = 2.0 * (k[0] * w[0] + k[1] * w[1] + k[2] * w[2])
    qc = k[0] * k[0] + k[1] * k[1] + k[2] * k[2] - 1.0
    disc = qb * qb - 4.0 * qa * qc
    hit = disc >= 0
    sq = np.sqrt(np.where(hit, disc, 0.0))
    t1[r0:r1, c0:c1] = np.where(hit, (-qb - sq) / (2 * qa), _INF)
    t2[r0:r1, c0:c1] = np.where(hit, (-qb + sq) / (2 * qa), _INF)
    return t1, t2


def _project(p: IdentityParams, rot: np.ndarray, width: int, height: int):
    """Landmarks [10] in pixels and the alignment shift (tu, tv), canonical units.

    Alignment, like CelebA's: the eye midpoint on EYE_ROW and the eye+mouth
    midpoint on CENTRE_COL, whatever the pose.
    """
    lm_cam = landmarks_3d(p) @ rot.T
    eye_mid = lm_cam[:2].mean(axis=0)
    face_mid = (eye_mid + lm_cam[3:].mean(axis=0)) / 2
    tu = CENTRE_COL - face_mid[0]
    tv = EYE_ROW + eye_mid[1]
    lm_img = np.stack([tu + lm_cam[:, 0], tv - lm_cam[:, 1]], axis=1)
    scale = np.array([width / CANON_W, height / CANON_H])
    return ((lm_img + 0.5) * scale - 0.5).ravel(), (tu, tv)


def project_landmarks(
    params: IdentityParams, yaw_deg: float, pitch: float = 0.0, roll: float = 0.0,
    width: int = CANON_W, height: int = CANON_H,
) -> np.ndarray:
    """The landmarks render_face returns, without rendering (float [10], CelebA order)."""
    return _project(params, rotation(yaw_deg, pitch, roll), width, height)[0]


def render_face(
    params: IdentityParams,
    yaw_deg: float,
    light_azimuth_deg: float,
    pitch: float = 0.0,
    roll: float = 0.0,
    width: int = CANON_W,
    height: int = CANON_H,
) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 [H, W, 3], landmarks float [10]) in CelebA's column order and pixel units.

    Pure and deterministic: the same arguments give the same pixels (what lets
    evaluation re-render an identity at any yaw under the same light).
    """
    p = params
    g = _geometry(p)
    rot = rotation(yaw_deg, pitch, roll)
    landmarks, (tu, tv) = _project(p, rot, width, height)

    u, v = _axes(width, height)
    xs, ys = u - tu, tv - v
    head_frame, cam_frame = rot.T, np.eye(3)

    def head_points(t: np.ndarray, flat: np.ndarray) -> np.ndarray:
        """Head-frame points of the hits t at flat pixel indices."""
        cam = np.stack([xs[flat % width], ys[flat // width], _Z0 - t], axis=1)
        return cam @ rot

    # Candidate hits [K, H*W]: the nearest valid one wins.
    names: list[tuple[str, str]] = []
    ts: list[np.ndarray] = []
    ts.append(_grid_hits(g["head"], head_frame, xs, ys)[0].ravel())
    names.append(("head", "head"))
    t1, t2 = _grid_hits(g["hair"], head_frame, xs, ys)
    for label, t in (("hair", t1.ravel()), ("hair_in", t2.ravel())):
        flat = np.flatnonzero(np.isfinite(t))
        keep = _hair_mask(p, g, head_points(t[flat], flat))
        t = np.full_like(t, _INF)
        t[flat[keep]] = (t1 if label == "hair" else t2).ravel()[flat[keep]]
        ts.append(t)
        names.append((label, "head"))
    if "hair_back" in g:
        t = _grid_hits(g["hair_back"], head_frame, xs, ys)[0].ravel()
        flat = np.flatnonzero(np.isfinite(t))
        drop = head_points(t[flat], flat)[:, 2] >= 0.12 * p.head_d  # only behind the face
        t[flat[drop]] = _INF
        ts.append(t)
        names.append(("hair_back", "head"))
    for name in ("tip", "bridge", "ear_l", "ear_r"):
        ts.append(_grid_hits(g[name], head_frame, xs, ys)[0].ravel())
        names.append((name, "head"))
    for name in ("neck", "torso"):
        ts.append(_grid_hits(g[name], cam_frame, xs, ys)[0].ravel())
        names.append((name, "cam"))

    t_all = np.stack(ts)
    best = np.argmin(t_all, axis=0)
    t_best = np.take_along_axis(t_all, best[None], axis=0)[0]
    best[~np.isfinite(t_best)] = -1

    light = light_direction(light_azimuth_deg)
    light_head = light @ rot
    half = light + np.array([0.0, 0.0, 1.0])
    half /= np.linalg.norm(half)
    img = _background(p, width, height).copy()
    skin = np.asarray(p.skin)

    for k, (name, frame) in enumerate(names):
        sel = np.flatnonzero(best == k)
        if sel.size == 0:
            continue
        t = t_best[sel]
        pts_cam = np.stack([xs[sel % width], ys[sel // width], _Z0 - t], axis=1)
        pts = pts_cam @ rot if frame == "head" else pts_cam
        n = g["hair" if name == "hair_in" else name].normal(pts)
        if name == "hair_in":
            n = -n  # the inside of the hair behind the head
        n_cam = n @ rot.T if frame == "head" else n
        lam = np.clip(n_cam @ light, 0, 1)
        spec_k = SPECULAR
        if name == "head":
            albedo = _skin_albedo(p, pts)
            lam = lam * _nose_shadow(g, pts, light_head)
        elif name in ("tip", "bridge", "ear_l", "ear_r"):
            albedo = np.tile(skin * (1.0, 0.95, 0.94), (sel.size, 1))
            if p.glasses and name == "bridge":
                _glasses(p, pts, albedo)
        elif name in ("hair", "hair_in", "hair_back"):
            albedo = _hair_albedo(p, pts)
            spec_k = 0.04
            if name == "hair_in":
                albedo = albedo * 0.55
        elif name == "neck":
            albedo = np.tile(skin * 0.9, (sel.size, 1))
        else:
            albedo = np.tile(np.asarray(p.shirt), (sel.size, 1))
            spec_k = 0.02
        spec = spec_k * np.clip(n_cam @ half, 0, 1) ** 16 * (lam > 0)
        img[sel] = albedo * (AMBIENT + DIFFUSE * lam)[:, None] + spec[:, None]

    out = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(height, width, 3)
    return out, landmarks


def _nose_shadow(g: dict, pts: np.ndarray, light_head: np.ndarray) -> np.ndarray:
    """1 where lit, 0.2 where the nose stands between the point and the light."""
    shade = np.ones(len(pts))
    for name in ("tip", "bridge"):
        t1, t2 = g[name].intersect(pts, light_head)
        shade[np.isfinite(t2) & (t2 > 0.5)] = 0.2
    return shade
