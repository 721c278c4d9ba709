"""Yaw (degrees) from CelebA's 5 landmarks: a geometric estimator, no training.

Model: an orthographic view of a head whose eye centres E1, E2 and mouth corners
M1, M2 lie (nearly) on one plane, with the nose tip N a depth D in front of that
plane. Turning the head by `yaw` about its vertical axis moves N sideways off the
eye-mouth midline by D * sin(yaw) and foreshortens the inter-ocular distance to
IOD * cos(yaw), so, in the image,

    offset / iod_image = (D / IOD) * tan(yaw) = NOSE_DEPTH_RATIO * tan(yaw).

Steps (vectorised over rows):
1. roll: rotate all points about the eye midpoint so the eye line is horizontal
   (a pure yaw or pitch keeps the eyes level; only roll tilts the line);
2. the midline runs from the eye midpoint to the mouth midpoint; interpolate it
   at the nose tip's height;
3. yaw = atan(offset / (NOSE_DEPTH_RATIO * iod_image)).

Sign (DESIGN.md): yaw > 0 when the nose points toward the image's right side
(x grows), i.e. the nose tip lies right of the midline.

The synthetic heads (headrot.synth) are built with the same NOSE_DEPTH_RATIO, so
the estimator is exact on them up to pitch and the integer rounding of the files.
"""
from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------
# Anthropometry: nose-tip depth in front of the eye-mouth plane, per inter-ocular distance
#
# Adult norms (Farkas, "Anthropometry of the Head and Face", 2nd ed. 1994, North
# American Caucasian, means of men and women):
# - inter-ocular (pupil to pupil) distance: the pupils sit about mid-fissure, so
#   (en-en + ex-ex) / 2 = (32 mm + 89 mm) / 2 ~= 61 mm; direct measures of adult
#   interpupillary distance agree (Dodgson 2004: mean 63 mm, 61.7 women / 64.0 men).
# - nose-tip depth: nasal tip projection, pronasale in front of the alar crease, is
#   ~0.6 of nasal length n-prn (Goode's ratio 0.55-0.60); Farkas' n-prn ~= 50 mm
#   (53 men / 47 women) gives ~30 mm. Cross-check: Farkas' nasal tip protrusion
#   sn-prn ~= 20 mm (21 / 19), plus subnasale ~10 mm in front of the alar-crease
#   plane, again ~30 mm. In profile the corneal apices and the mouth corners
#   (cheilion) lie within a few mm of that coronal plane, so it stands in for the
#   eye-mouth plane of the 5 landmarks.
# Ratio: 30 mm / 61 mm = 0.49 -> 0.5. Published values for this ratio span about
# 0.45-0.6 (Gee & Cipolla 1994 use a nose depth of 0.6 x the eye-mouth distance,
# which is ~1.0-1.1 x IOD, i.e. ~0.6-0.65); a 20 % error here scales tan(yaw) by
# 20 % (30 deg reads as 26-35 deg) but never changes the sign or the order of yaws,
# which is what yaw bins need.
NOSE_DEPTH_RATIO = 0.5

# Landmark column order in list_landmarks_align_celeba.txt (pairs of x, y).
LANDMARK_NAMES = (
    "lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y",
)


# ---------------------------------------------------------------------------
# Estimator


def yaw_from_landmarks(landmarks: np.ndarray, nose_depth_ratio: float = NOSE_DEPTH_RATIO) -> np.ndarray:
    """Yaw in degrees for landmarks [N, 10] (or one row [10]) in the CelebA column order.

    Rows whose eyes coincide or whose mouth is level with the eyes give NaN
    (no midline / no scale), so a caller can reject them with a reason.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    single = lm.ndim == 1
    if lm.shape[-1] != 10 or lm.ndim not in (1, 2):
        raise ValueError(f"landmarks must have shape [N, 10] or [10], got {lm.shape}")
    lm = lm.reshape(-1, 5, 2)
    left_eye, right_eye, nose, left_mouth, right_mouth = (lm[:, i] for i in range(5))

    # 1. Roll: the eye line's angle, removed about the eye midpoint.
    eye_vec = right_eye - left_eye
    iod = np.hypot(eye_vec[:, 0], eye_vec[:, 1])
    roll = np.arctan2(eye_vec[:, 1], eye_vec[:, 0])
    cos_r, sin_r = np.cos(-roll), np.sin(-roll)
    eye_mid = (left_eye + right_eye) / 2

    def derolled(p: np.ndarray) -> np.ndarray:
        d = p - eye_mid
        return np.stack([cos_r * d[:, 0] - sin_r * d[:, 1], sin_r * d[:, 0] + cos_r * d[:, 1]], axis=1)

    nose_r = derolled(nose)
    mouth_r = derolled((left_mouth + right_mouth) / 2)

    # 2. Midline from the eye midpoint (now the origin) to the mouth midpoint, at the nose's height.
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(mouth_r[:, 1] != 0, nose_r[:, 1] / mouth_r[:, 1], np.nan)
        offset = nose_r[:, 0] - t * mouth_r[:, 0]
        # 3. Orthographic head model; iod is already the foreshortened (image) distance.
        yaw = np.degrees(np.arctan(offset / (nose_depth_ratio * np.where(iod > 0, iod, np.nan))))
    return yaw[0] if single else yaw
