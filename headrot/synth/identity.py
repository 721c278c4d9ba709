"""Who a synthetic face is: the parameters of one identity and its CelebA attributes.

Identities differ mostly in LARGE-scale features (skin tone, hair colour and
shape, background, head shape, glasses) so that they stay recognisable at the
32x32 and 64x64 sizes the diffusion model sees. Lengths are pixels of the
178x218 aligned image at its canonical scale; colours are RGB in [0, 1].
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

# The 40 CelebA attributes, in list_attr_celeba.txt's order.
ATTRIBUTE_NAMES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
    "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)

HAIR_COLOURS = {  # name -> RGB; strongly separated so they survive 32x32
    "black": (0.08, 0.07, 0.07),
    "brown": (0.36, 0.22, 0.12),
    "blond": (0.86, 0.72, 0.42),
    "gray": (0.66, 0.66, 0.68),
    "red": (0.62, 0.25, 0.10),
}
HAIR_STYLES = ("bald", "short", "medium", "long")
BEARDS = ("none", "stubble", "full")

# Attributes drawn per identity but not rendered (they exist so the attribute file
# has CelebA's shape): probability of +1.
_UNRENDERED = {
    "Attractive": 0.5, "Bags_Under_Eyes": 0.2, "Blurry": 0.05, "Double_Chin": 0.05,
    "High_Cheekbones": 0.45, "Oval_Face": 0.28, "Pointy_Nose": 0.28, "Straight_Hair": 0.2,
    "Wavy_Hair": 0.3, "Wearing_Earrings": 0.18, "Wearing_Necklace": 0.12,
    "Wearing_Necktie": 0.07,
}


# ---------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class IdentityParams:
    identity: int
    seed: int
    male: bool
    young: bool
    skin: tuple[float, float, float]
    head_w: float             # head ellipsoid semi-axes (x: width, y: height, z: depth)
    head_h: float
    head_d: float
    iod: float                # inter-ocular (pupil) distance
    eye_y: float              # eye line height above the head centre
    eye_mouth: float          # vertical eye-line to mouth-corner distance
    nose_frac: float          # nose tip height, as a fraction of eye_mouth below the eyes
    nose_w: float             # nose tip radius
    mouth_hw: float           # mouth half width (corner x)
    smile: float              # corner lift in px (0 = neutral)
    mouth_open: bool
    lip: tuple[float, float, float]
    eye_h: float              # eye opening half height
    iris: tuple[float, float, float]
    brow_thick: float
    brow_arch: float
    hair_style: str           # bald | short | medium | long
    hair_colour: str
    hair: tuple[float, float, float]
    hair_volume: float        # how far the hair stands off the skull
    hairline: float           # front hairline height above the eyes
    bangs: bool
    part_x: float             # hair parting, x on the skull
    glasses: bool
    glasses_rgb: tuple[float, float, float]
    beard: str                # none | stubble | full
    mustache: bool
    goatee: bool
    rosy: float               # cheek redness 0..1
    lipstick: bool
    bg1: tuple[float, float, float]
    bg2: tuple[float, float, float]
    bg_angle: float           # gradient direction (radians)
    shirt: tuple[float, float, float]
    unrendered: tuple[int, ...]  # +-1 for the attributes in _UNRENDERED's order

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "IdentityParams":
        """Inverse of to_dict (lists from Parquet become tuples again)."""
        kwargs = {}
        for f in dataclasses.fields(cls):
            value = data[f.name]
            if isinstance(value, (list, tuple, np.ndarray)):
                value = tuple(v.item() if isinstance(v, np.generic) else v for v in value)
            elif isinstance(value, np.generic):
                value = value.item()
            kwargs[f.name] = value
        return cls(**kwargs)


def _rgb(values) -> tuple[float, float, float]:
    return tuple(float(np.clip(v, 0.0, 1.0)) for v in values)


def sample_identity(seed: int, identity: int) -> IdentityParams:
    """Deterministic for (seed, identity): numpy default_rng([seed, identity])."""
    rng = np.random.default_rng([int(seed), int(identity)])
    u = rng.uniform
    male = bool(rng.random() < 0.42)  # CelebA: 42 % Male
    young = bool(rng.random() < 0.77)
    # Skin: a tone axis from pale to dark brown, plus a little warmth jitter.
    tone = rng.beta(1.6, 1.6)
    light_skin, dark_skin = np.array([0.96, 0.80, 0.70]), np.array([0.42, 0.27, 0.18])
    skin = light_skin * (1 - tone) + dark_skin * tone + rng.normal(0, 0.02, 3) + [0.0, 0.0, -0.01 * male]

    if not young:
        hair_colour = rng.choice(["gray", "gray", "black", "brown", "blond"])
    else:
        hair_colour = rng.choice(list(HAIR_COLOURS), p=[0.32, 0.28, 0.22, 0.03, 0.15])
    hair = np.array(HAIR_COLOURS[hair_colour]) * u(0.85, 1.15) + rng.normal(0, 0.02, 3)
    if male:
        hair_style = rng.choice(HAIR_STYLES, p=_norm([0.04 if young else 0.14, 0.66, 0.24, 0.06]))
    else:
        hair_style = rng.choice(HAIR_STYLES, p=[0.0, 0.12, 0.33, 0.55])
    beard = "none"
    if male:
        beard = rng.choice(BEARDS, p=[0.6, 0.22, 0.18])
    head_w = u(42, 49) + (1.5 if male else 0)
    iod = u(37.5, 40.5)
    eye_mouth = u(39, 45)
    return IdentityParams(
        identity=int(identity),
        seed=int(seed),
        male=male,
        young=young,
        skin=_rgb(skin),
        head_w=float(head_w),
        head_h=float(u(66, 74)),
        head_d=float(u(56, 62)),
        iod=float(iod),
        eye_y=float(u(-1, 3)),
        eye_mouth=float(eye_mouth),
        nose_frac=float(u(0.55, 0.62)),
        nose_w=float(u(5.0, 7.5) + (0.8 if male else 0)),
        mouth_hw=float(u(14.5, 18.5)),
        smile=float(rng.choice([0.0, u(2.5, 5.0)], p=[0.52, 0.48])),
        mouth_open=bool(rng.random() < 0.45),
        lip=_rgb(np.array([0.72, 0.36, 0.36]) * u(0.85, 1.05)),
        eye_h=float(u(2.4, 3.6)),
        iris=_rgb(rng.choice([[0.25, 0.15, 0.08], [0.10, 0.08, 0.06], [0.25, 0.40, 0.55], [0.30, 0.38, 0.20]])),
        brow_thick=float(u(2.0, 4.2) + (0.6 if male else 0)),
        brow_arch=float(u(0.0, 3.0)),
        hair_style=str(hair_style),
        hair_colour=str(hair_colour),
        hair=_rgb(hair),
        hair_volume=float(u(3, 7) if hair_style in ("short", "bald") else u(5, 11)),
        hairline=float(u(26, 33) if not (male and not young) else u(30, 40)),
        bangs=bool(hair_style in ("medium", "long") and rng.random() < 0.35),
        part_x=float(u(-20, 20)),
        glasses=bool(rng.random() < 0.15),
        glasses_rgb=_rgb(rng.choice([[0.05, 0.05, 0.05], [0.25, 0.12, 0.06], [0.08, 0.10, 0.25]])),
        beard=str(beard),
        mustache=bool(male and beard != "none" and rng.random() < 0.5),
        goatee=bool(male and beard == "none" and rng.random() < 0.1),
        rosy=float(u(0.0, 1.0) if not male else u(0.0, 0.4)),
        lipstick=bool((not male) and rng.random() < 0.55),
        bg1=_rgb(rng.uniform(0.05, 0.95, 3)),
        bg2=_rgb(rng.uniform(0.05, 0.95, 3)),
        bg_angle=float(u(0, 2 * np.pi)),
        shirt=_rgb(rng.uniform(0.05, 0.9, 3)),
        unrendered=tuple(int(1 if rng.random() < p else -1) for p in _UNRENDERED.values()),
    )


def _norm(p):
    p = np.asarray(p, dtype=float)
    return p / p.sum()


# ---------------------------------------------------------------------------
# CelebA attributes


def celeba_attributes(params: IdentityParams) -> dict[str, int]:
    """The 40 attributes (+1 / -1) of an identity, in ATTRIBUTE_NAMES order."""
    p = params
    b = lambda x: 1 if x else -1  # noqa: E731
    rendered = {
        "5_o_Clock_Shadow": b(p.beard == "stubble"),
        "Arched_Eyebrows": b(p.brow_arch > 2.0),
        "Bald": b(p.hair_style == "bald"),
        "Bangs": b(p.bangs),
        "Big_Lips": b(p.mouth_hw > 17.5),
        "Big_Nose": b(p.nose_w > 7.0),
        "Black_Hair": b(p.hair_colour == "black" and p.hair_style != "bald"),
        "Blond_Hair": b(p.hair_colour == "blond" and p.hair_style != "bald"),
        "Brown_Hair": b(p.hair_colour == "brown" and p.hair_style != "bald"),
        "Bushy_Eyebrows": b(p.brow_thick > 4.0),
        "Chubby": b(p.head_w > 48.5),
        "Eyeglasses": b(p.glasses),
        "Goatee": b(p.goatee),
        "Gray_Hair": b(p.hair_colour == "gray" and p.hair_style != "bald"),
        "Heavy_Makeup": b(p.lipstick and p.rosy > 0.6),
        "Male": b(p.male),
        "Mouth_Slightly_Open": b(p.mouth_open),
        "Mustache": b(p.mustache),
        "Narrow_Eyes": b(p.eye_h < 2.7),
        "No_Beard": b(p.beard == "none" and not p.goatee and not p.mustache),
        "Pale_Skin": b(sum(p.skin) / 3 > 0.82),
        "Receding_Hairline": b(p.hairline > 36 and p.hair_style != "bald"),
        "Rosy_Cheeks": b(p.rosy > 0.7),
        "Sideburns": b(p.male and p.beard == "full"),
        "Smiling": b(p.smile > 0),
        "Wearing_Hat": -1,
        "Wearing_Lipstick": b(p.lipstick),
        "Young": b(p.young),
    }
    drawn = dict(zip(_UNRENDERED, p.unrendered))
    return {name: int(rendered.get(name, drawn.get(name, -1))) for name in ATTRIBUTE_NAMES}
