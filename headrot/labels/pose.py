"""Image-based pose (and light) estimators: tiny CNNs trained on fresh synthetic renders.

Two users, kept independent of each other (a method must not grade its own homework):
- the evaluation's judge (headrot.stages.evaluate): yaw only, `arch="avgpool3"`;
- the method's labeller (headrot.stages.samples, and the render stage's calibration):
  yaw and light azimuth, `arch="maxpool4"`, other seed, other identities; calibration's reader
  and the local steps' steering networks (`MeanReading`) are more of its kind, other seeds.
`check_independent` refuses a judge that shares the seed or architecture of any of them.

Why its own model: the pose error of a render must not be judged by the same latent
space (or the same landmark files) the method moved along. This estimator sees only
pixels, preprocessed exactly like the model's input (render -> PNG bytes ->
headrot.data.images.decode_face(bytes, S)), and is trained on identities the
evaluated data never contains (headrot.synth with a seed of its own).

Training set: `n_identities` new identities, `per_identity` random poses each: yaw
uniform in +-yaw_max (wider than any source yaw + delta), light azimuth in +-75,
|pitch| <= 5, |roll| <= 4, like the synthetic data. For speed the faces are rendered at
half the CelebA size (89x109, the same crop geometry) when the model input is small
enough (S <= 35) that the central square still oversamples S by 2.5x; at 32x32 this
changes the preprocessed pixels by about 40 dB PSNR, far below the augmentation.
Augmentation: Gaussian blur (sigma up to 1.2 px at S=32, scaled with S), pixel noise,
brightness/contrast jitter; a horizontal flip negates the yaw (doubles the data).
A held-out set of other identities gives the estimator's own error: `mae_deg_heldout`
on clean renders and `mae_deg_heldout_blur` on blurred ones (what a small diffusion
model's renders look like); every pose figure of the report shows it.

Prediction is antisymmetric by construction: yaw(x) = (f(x) - f(flip(x))) / 2, so a
frontal face reads 0 and mirror images read opposite yaws.

Cache: the fitted weights and their metadata go to one .npz (no pickle: arrays and a
JSON string, loaded with allow_pickle=False): the judge's in report/yaw_estimator.npz, the
labeller's in checkpoints/labeller/pose.npz; a rerun with the same settings loads it instead of
refitting.
"""
from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from headrot import storage

log = logging.getLogger(__name__)

VERSION = 1


@dataclass(frozen=True)
class PoseConfig:
    size: int = 32                  # model input S (the generator's image_size)
    seed: int = 1_000_003           # identities' seed: differs from the data's (checked by the caller)
    n_identities: int = 500         # training identities
    per_identity: int = 6           # poses per training identity
    n_heldout: int = 60             # held-out identities (x per_identity poses)
    yaw_max: float = 80.0           # training yaw range +-yaw_max (source yaw + delta can reach ~75)
    light_max: float = 75.0
    pitch_max: float = 5.0
    roll_max: float = 4.0
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    width: int = 8                  # CNN channels (first block; doubles once)
    torch_threads: int = 1
    arch: Literal["avgpool3", "maxpool4"] = "avgpool3"  # the judge's net / the labeller's deeper one
    light: bool = False             # also regress the light azimuth (the labeller)

    def key(self) -> dict:
        return {**asdict(self), "version": VERSION}


# ---------------------------------------------------------------------------
# Data


def preprocess(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 HWC render -> the model's input face (PNG bytes through decode_face)."""
    from PIL import Image

    from headrot.data.images import decode_face

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return decode_face(buf.getvalue(), size)


def render_scale(size: int) -> int:
    """2 (render at 89x109) when the half-size square still oversamples S by 2.5x, else 1."""
    return 2 if 89 >= 2.5 * size else 1


def synth_pose_set(config: PoseConfig, first_identity: int, n_identities: int) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N,S,S,3], targets float32 [N,2]: yaw, light azimuth) of identities
    first_identity.. of config.seed."""
    from headrot.synth.identity import sample_identity
    from headrot.synth.render import render_face

    k = render_scale(config.size)
    w, h = 178 // k, 218 // k
    images, targets = [], []
    for ident in range(first_identity, first_identity + n_identities):
        params = sample_identity(config.seed, ident)
        rng = np.random.default_rng([config.seed, ident, 7])
        for _ in range(config.per_identity):
            yaw = rng.uniform(-config.yaw_max, config.yaw_max)
            light = rng.uniform(-config.light_max, config.light_max)
            img, _ = render_face(params, yaw, light,
                                 pitch=rng.uniform(-config.pitch_max, config.pitch_max),
                                 roll=rng.uniform(-config.roll_max, config.roll_max), width=w, height=h)
            images.append(preprocess(img, config.size))
            targets.append((yaw, light))
    return np.stack(images), np.asarray(targets, np.float32)


def to_model(images: np.ndarray):
    """uint8 NHWC -> float32 NCHW in [-1, 1] (torch)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def blur(x, sigma):
    """Gaussian blur of NCHW images, one sigma (px) per image (0 = none); reflect padding."""
    import torch
    import torch.nn.functional as F

    sigma = torch.as_tensor(sigma, dtype=torch.float32).clamp(min=1e-3)
    r = 3
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    taps = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))
    taps = taps / taps.sum(1, keepdim=True)                       # [N, 7]
    n, c, h, w = x.shape
    y = F.pad(x, (r, r, r, r), mode="reflect")
    # Grouped conv: every (image, channel) plane has its own kernel.
    kx = taps.repeat_interleave(c, 0)[:, None, None, :]           # [N*C,1,1,7]
    ky = taps.repeat_interleave(c, 0)[:, None, :, None]
    y = y.reshape(1, n * c, h + 2 * r, w + 2 * r)
    y = F.conv2d(F.conv2d(y, kx, groups=n * c), ky, groups=n * c)
    return y.reshape(n, c, h, w)


def augment(x, generator, size: int):
    """Random blur (half the batch), noise and brightness/contrast jitter, in model range."""
    import torch

    n = len(x)
    sigma = torch.rand(n, generator=generator) * 1.2 * size / 32
    sigma = torch.where(torch.rand(n, generator=generator) < 0.5, sigma, torch.zeros(n))
    x = blur(x, sigma)
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.3
    bright = (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.2
    noise = torch.randn(x.shape, generator=generator) * torch.rand(n, 1, 1, 1, generator=generator) * 0.06
    return (x * contrast + bright + noise).clamp(-1, 1)


# ---------------------------------------------------------------------------
# Model


def build_net(size: int, width: int, arch: str = "avgpool3", outputs: int = 1):
    import torch.nn as nn

    w1, w2 = width, 2 * width
    if arch == "maxpool4":
        # The labeller's net: four convs, max-pooling, a wider head; no layer shared with the judge.
        return nn.Sequential(
            nn.Conv2d(3, w1, 3, padding=1), nn.ReLU(), nn.Conv2d(w1, w1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w1, w2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w2, w2, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(4),
            nn.Flatten(), nn.Linear(w2 * 16, 96), nn.ReLU(), nn.Linear(96, outputs),
        )
    if arch != "avgpool3":
        raise ValueError(f"pose estimator: unknown arch {arch!r}; use avgpool3 or maxpool4")
    return nn.Sequential(
        nn.Conv2d(3, w1, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(w1, w2, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(w2, w2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        nn.Flatten(), nn.Linear(w2 * 16, 64), nn.ReLU(), nn.Linear(64, outputs),
    )


def outputs_of(config: PoseConfig) -> int:
    return 2 if config.light else 1


class YawEstimator:
    """Fitted yaw regressor: `predict(uint8 [N,S,S,3]) -> yaw degrees [N]` (yaw > 0: nose to image right)."""

    SCALE = 45.0  # the network regresses yaw / SCALE

    def __init__(self, net, config: PoseConfig, metrics: dict):
        self.net = net.eval()
        self.config = config
        self.metrics = dict(metrics)

    @property
    def size(self) -> int:
        return self.config.size

    def predict(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Yaw (degrees) of uint8 [N,S,S,3] images."""
        return self.predict_all(images, batch_size)[:, 0]

    def predict_light(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Light azimuth (degrees; < 0: the image's left is lit) of uint8 [N,S,S,3] images."""
        if not self.config.light:
            raise ValueError("this pose estimator was trained without light (PoseConfig.light=False)")
        return self.predict_all(images, batch_size)[:, 1]

    def predict_all(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """[N, outputs]: yaw, and light azimuth when trained with it (degrees)."""
        import torch

        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"yaw estimator: expected uint8 [N,{self.size},{self.size},3], got {images.shape}")
        out = []
        with torch.inference_mode():
            for s in range(0, len(images), batch_size):
                x = to_model(images[s:s + batch_size])
                out.append(self._antisym(x).numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, outputs_of(self.config)))

    def differentiable(self, x):
        """[N, outputs] readings of model-range NCHW images (torch), with gradients: what the
        render stage's local steps differentiate (headrot.local_directions)."""
        return self._antisym(x)

    def _antisym(self, x):
        # Yaw and light azimuth both change sign under a horizontal flip.
        return (self.net(x) - self.net(x.flip(3))) * (self.SCALE / 2)

    # -- cache -----------------------------------------------------------------

    def save(self, uri: str) -> None:
        state = {f"w:{k}": v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        meta = json.dumps({"config": self.config.key(), "metrics": self.metrics}, sort_keys=True)
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(meta), **state)
        storage.write_bytes(uri, buf.getvalue())

    @classmethod
    def load(cls, uri: str, config: PoseConfig) -> "YawEstimator | None":
        """The cached estimator when it was fitted with exactly `config`, else None."""
        import torch

        if not storage.exists(uri):
            return None
        try:
            with np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("config") != json.loads(json.dumps(config.key())):
                    return None
                state = {k[2:]: torch.from_numpy(data[k].copy()) for k in data.files if k.startswith("w:")}
        except (OSError, ValueError, KeyError) as exc:
            log.warning("pose estimator cache %s unreadable (%s): refitting", uri, exc)
            return None
        net = build_net(config.size, config.width, config.arch, outputs_of(config))
        net.load_state_dict(state)
        return cls(net, config, meta["metrics"])


class MeanReading:
    """The mean of several estimators' differentiable readings: what the render stage's local
    steps follow when the samples stage trained steering networks (`samples.steer_seeds`).

    A move along one network's gradient is partly adversarial to that network: it turns the
    reading with patterns no head has (white patches, smears; bench/NOTES.md). Networks of the
    same kind trained on other identities share what a turned head looks like and differ in their
    adversarial directions, so the mean gradient keeps the first and averages the second down
    (on the demo, four networks: +0.3 to +0.6 dB PSNR against ground truth at every delta)."""

    def __init__(self, estimators: list[YawEstimator]):
        if not estimators:
            raise ValueError("MeanReading needs at least one estimator")
        outputs = {outputs_of(e.config) for e in estimators}
        if len(outputs) != 1:
            raise ValueError(f"MeanReading: estimators read different outputs {sorted(outputs)}")
        self.estimators = list(estimators)

    def differentiable(self, x):
        """[N, outputs]: the estimators' mean reading of model-range NCHW images, with gradients."""
        return sum(e.differentiable(x) for e in self.estimators) / len(self.estimators)


def fit_yaw_estimator(config: PoseConfig) -> YawEstimator:
    """Render the training and held-out sets, train the CNN, measure its held-out MAE."""
    import torch

    started, cpu_started = time.perf_counter(), time.process_time()
    threads = torch.get_num_threads()
    torch.set_num_threads(config.torch_threads)
    try:
        k = outputs_of(config)
        train_x, train_t = synth_pose_set(config, 1, config.n_identities)
        held_x, held_t = synth_pose_set(config, 1 + config.n_identities, config.n_heldout)
        train_y, held_y = train_t[:, :k], held_t[:, 0]
        render_s = time.perf_counter() - started
        torch.manual_seed(config.seed)
        gen = torch.Generator().manual_seed(config.seed)
        net = build_net(config.size, config.width, config.arch, k)
        x_all = to_model(train_x)
        y_all = torch.from_numpy(train_y) / YawEstimator.SCALE
        # Mirror images: flip x, negate yaw.
        x_all = torch.cat([x_all, x_all.flip(3)])
        y_all = torch.cat([y_all, -y_all])
        steps = config.epochs * ((len(x_all) + config.batch_size - 1) // config.batch_size)
        opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps)
        net.train()
        for _ in range(config.epochs):
            perm = torch.randperm(len(x_all), generator=gen)
            for s in range(0, len(perm), config.batch_size):
                idx = perm[s:s + config.batch_size]
                x = augment(x_all[idx], gen, config.size)
                loss = torch.nn.functional.smooth_l1_loss(net(x), y_all[idx], beta=0.05)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        estimator = YawEstimator(net, config, {})
        err = np.abs(estimator.predict(held_x) - held_y)
        with torch.inference_mode():
            sig = torch.full((len(held_x),), 1.0 * config.size / 32)
            blurred = blur(to_model(held_x), sig)
            pred_blur = estimator._antisym(blurred)[:, 0].numpy()
        err_blur = np.abs(pred_blur - held_y)
        light_metrics = {}
        if config.light:
            light_err = np.abs(estimator.predict_light(held_x) - held_t[:, 1])
            light_metrics = {"light_mae_deg_heldout": round(float(light_err.mean()), 3)}
        estimator.metrics = {
            "mae_deg_heldout": round(float(err.mean()), 3),
            "median_deg_heldout": round(float(np.median(err)), 3),
            "p90_deg_heldout": round(float(np.percentile(err, 90)), 3),
            "mae_deg_heldout_blur": round(float(err_blur.mean()), 3),
            "blur_sigma_px": round(1.0 * config.size / 32, 3),
            "n_train": int(len(train_x)),
            "n_heldout": int(len(held_x)),
            "yaw_range_deg": [-config.yaw_max, config.yaw_max],
            "fit_seconds": round(time.perf_counter() - started, 1),
            "fit_cpu_seconds": round(time.process_time() - cpu_started, 1),
            "render_seconds": round(render_s, 1),
            **light_metrics,
            "model": f"tiny CNN ({config.arch}, width {config.width}), antisymmetric under horizontal flip",
        }
        log.info("pose estimator: %s", estimator.metrics)
        return estimator
    finally:
        torch.set_num_threads(threads)


def check_independent(judge: PoseConfig, *labellers: dict | None) -> None:
    """Refuse a judge that shares the seed (so the identities) or the architecture of any
    estimator the method used (its labeller, calibration's reader, the steering networks): the
    evaluation must not read pose with a network the method moved by. Each of `labellers` is a
    PoseConfig.key() as the samples stage recorded it (None: the method used no such estimator)."""
    for labeller in filter(None, labellers):
        shared = [k for k in ("seed", "arch") if labeller.get(k) == getattr(judge, k)]
        if shared:
            raise ValueError(
                f"evaluate: the pose estimator shares {shared} with an estimator the method used "
                f"(seed {labeller.get('seed')}, arch {labeller.get('arch')}); a method must not be graded by "
                "its own estimator: give evaluate another pose_seed, or the samples stage another "
                "labeller_seed / reader_seed / steer_seeds")


def load_or_fit(cache_uri: str | None, config: PoseConfig) -> tuple[YawEstimator, bool]:
    """(estimator, loaded_from_cache)."""
    if cache_uri:
        cached = YawEstimator.load(cache_uri, config)
        if cached is not None:
            return cached, True
    estimator = fit_yaw_estimator(config)
    if cache_uri:
        estimator.save(cache_uri)
    return estimator, False


# ---------------------------------------------------------------------------
# Real data: mediapipe (optional extra, never a dependency)

MEDIAPIPE_HINT = "pip install 'mediapipe<=0.10.21'"
# Face-mesh points for CelebA's 5 landmarks, image-left first: eye corners (averaged
# to an eye centre), nose tip, mouth corners.
_MESH = {"left_eye": (33, 133), "right_eye": (362, 263), "nose": 1, "left_mouth": 61, "right_mouth": 291}


def mediapipe_available() -> bool:
    try:
        import mediapipe  # noqa: F401
    except Exception:
        return False
    return True


def mediapipe_yaw(images: np.ndarray, upscale_to: int = 256) -> np.ndarray:
    """Yaw (deg) of uint8 [N,S,S,3] faces from mediapipe's face mesh (the model ships inside
    mediapipe <= 0.10.21 wheels) through headrot.labels.yaw.yaw_from_landmarks on the 5
    CelebA points; NaN where no face is found. Small renders are upscaled first."""
    import mediapipe as mp
    from PIL import Image

    from headrot.labels.yaw import yaw_from_landmarks

    out = np.full(len(images), np.nan)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as mesh:
        for i, img in enumerate(np.asarray(images)):
            big = np.asarray(Image.fromarray(img).resize((upscale_to, upscale_to), Image.Resampling.BICUBIC))
            result = mesh.process(big)
            if not result.multi_face_landmarks:
                continue
            lm = result.multi_face_landmarks[0].landmark

            def pt(k):
                return np.array([lm[k].x, lm[k].y]) * upscale_to

            le = (pt(_MESH["left_eye"][0]) + pt(_MESH["left_eye"][1])) / 2
            re = (pt(_MESH["right_eye"][0]) + pt(_MESH["right_eye"][1])) / 2
            pts = np.concatenate([le, re, pt(_MESH["nose"]), pt(_MESH["left_mouth"]), pt(_MESH["right_mouth"])])
            out[i] = float(yaw_from_landmarks(pts[None])[0])
    return out
