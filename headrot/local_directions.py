"""Per-face pose steps from the generator's own response: the `local` direction source.

A global direction (the paper's centroids, or the generator's samples) is one vector for
every face, but the inverted latents of real faces sit off the Gaussian shell the samples
come from, and how a head answers a move there varies per face (bench/NOTES.md, issue 14:
the achieved yaw of one global step spread over 40 degrees between faces, and hair, skin
and background drifted with it). Here each face gets its own step, from the Jacobian of
what the labeller reads off the render G(z) with respect to z:

    r(z) = [yaw, light azimuth, mean R,G,B of image / border / centre / hair](G(z))
    J    = dr/dz, low-passed (headrot.directions.lowpass: coarse moves only)
    step = P(dyaw/dz) / (dyaw/dz . P(dyaw/dz)),  P: off the span of the other rows of J

so that, to first order, the move turns the head by one degree per unit and changes none of
the other readings (InterFaceGAN's conditional manipulation, made local). Large turns follow
the path in segments (`follow`): re-linearise every `segment` degrees, calibrate each leg.

First order is not enough over 30 degrees: each leg's step keeps the colours only to first
order, and the second-order drift adds up leg after leg (hair from brown to black at +-30).
So each new linearisation also gives a corrector (`correction`): the Gauss-Newton move, off
the yaw gradient, that takes the other readings back to the unmoved render's values (a
predictor-corrector path follower on the level set "everything but yaw as at the source").
It costs nothing more: the readings at the leg's start come from the Jacobian's forward pass.
On the demo model it traded pose for a little PSNR (bench/NOTES.md), so the render stage's
`local_correct` leaves it off by default.

Torch (autograd through the 10-step sampler); the stages call it from the render actor.
Cost: per face and leg, one forward pass and K batched backward passes (K = 14 with every region
read; `jacobian_decodes`).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from headrot import directions as D
from headrot.labels import nuisance


# ---------------------------------------------------------------------------
# What is read off a render


def readings(labeller, size: int, regions=nuisance.REGIONS):
    """x (NCHW in [-1, 1], torch) -> [N, K]: yaw, light azimuth (labeller), the mean R, G, B of
    each of `regions` (headrot.labels.nuisance's regions, in its order; K = 2 + 3 x regions).
    Differentiable."""
    import torch

    masks = [m for name, m in nuisance.region_masks(size).items() if name in set(regions)]

    def read(x):
        pose = labeller.differentiable(x)                # [N, 2]: yaw, light azimuth (degrees)
        img = (x + 1) / 2
        # Masks become tensors here, not in `readings`: a caller under torch.inference_mode
        # would otherwise make them inference tensors, which autograd refuses to save.
        colours = [img[:, :, torch.from_numpy(m)].mean(-1) for m in masks]  # each [N, 3]
        return torch.cat([pose] + colours, dim=1)

    return read


N_READINGS = 2 + len(nuisance.NAMES)   # every region read


def n_readings(regions) -> int:
    return 2 + 3 * len(set(regions))


# ---------------------------------------------------------------------------
# Jacobian and the conditional step


def jacobian(render: Callable, read: Callable, z: np.ndarray, blocks: int,
             chunk: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(values [N, K], jac [N, K, C, S, S]): the readings of render(z_i) and their gradients
    d reading_k(render(z_i)) / d z_i, low-passed (float64).

    One forward pass per face and K backward passes batched over one-hot cotangents
    (`is_grads_batched`: autograd vmaps the backward). Measured on the demo model: 3.2x faster
    than repeating each face K times in the batch, with the same numbers. `render`: z (torch)
    -> x in [-1, 1]."""
    import torch

    n = len(z)
    out = at = None
    for s in range(0, n, chunk):
        with torch.enable_grad():
            zz = torch.from_numpy(np.ascontiguousarray(z[s:s + chunk], np.float32)).requires_grad_()
            values = read(render(zz).clamp(-1, 1))                         # [m, K]
            k = values.shape[1]
            if out is None:
                out, at = np.zeros((n, k, *z.shape[1:])), np.zeros((n, k))
            cotangents = torch.eye(k).unsqueeze(1).expand(k, len(zz), k)
            (grads,) = torch.autograd.grad(values, zz, grad_outputs=cotangents, is_grads_batched=True)
        out[s:s + len(zz)] = D.lowpass(grads.transpose(0, 1).numpy().astype(np.float64), blocks)
        at[s:s + len(zz)] = values.detach().numpy()
    return at, out


def jacobian_decodes(k: int = N_READINGS) -> int:
    """What one Jacobian of K readings costs in decodes (10-step renders) of the same faces: one
    forward pass and K batched backward passes, measured 3.2x cheaper than K forward + backward
    passes (~3K decodes)."""
    return round(3 * k / 3.2)


JACOBIAN_DECODES = jacobian_decodes()


def conditional_steps(jac: np.ndarray, ortho: bool = True) -> np.ndarray:
    """[N, C, S, S]: per face, the first-order one-degree yaw step (row 0 of its Jacobian),
    projected off the other rows when `ortho` (D.orthogonalise does exactly this).

    A face whose yaw reading does not respond at all (a zero gradient, or one inside the other
    readings' span) gets a zero step: it is rendered unmoved and its labeller reading (0) says
    so in the rotated table, rather than failing its whole shard."""
    out = np.zeros((len(jac), *jac.shape[2:]))
    for i, rows in enumerate(jac):
        gy = rows[0]
        norm2 = float((gy * gy).sum())
        if norm2 == 0:
            continue
        try:
            out[i] = D.orthogonalise(gy / norm2, rows[1:]) if ortho else gy / norm2
        except ValueError:
            continue
    return out


def correction(jac: np.ndarray, values: np.ndarray, reference: np.ndarray, ridge: float = 1e-2) -> np.ndarray:
    """[N, C, S, S]: per face, the move back towards `reference` [N, K] of every reading but yaw
    (light azimuth, colours), to first order, that leaves yaw alone: the damped least-norm
    solution of J_o dz = reference_o - values_o with dz orthogonal to the yaw gradient.

    The readings have different units (degrees, colour fractions), so each row is scaled to
    unit gradient norm before solving (its residual becomes a distance in z), and the ridge
    (a fraction of the mean eigenvalue) keeps nearly parallel rows from asking for huge moves.
    A face whose rows vanish gets no correction."""
    out = np.zeros((len(jac), *jac.shape[2:]))
    for i, rows in enumerate(jac):
        flat = rows.reshape(len(rows), -1)
        gy, others = flat[0], flat[1:]
        if float(gy @ gy) > 0:
            others = others - np.outer(others @ gy / float(gy @ gy), gy)
        scale = np.linalg.norm(others, axis=1)
        live = scale > 1e-12 * max(float(scale.max()), 1e-300)
        if not live.any():
            continue
        a = others[live] / scale[live, None]
        r = (reference[i, 1:] - values[i, 1:])[live] / scale[live]
        gram = a @ a.T
        lam = ridge * float(np.trace(gram)) / len(gram)
        out[i] = (a.T @ np.linalg.solve(gram + lam * np.eye(len(gram)), r)).reshape(rows.shape[1:])
    return out


# ---------------------------------------------------------------------------
# Following the path


def plan_legs(targets: list[float], segment: float) -> list[tuple[float, bool, bool]]:
    """The legs that reach `targets` (yaw changes of one sign): [(leg end, is a target, new step)].

    segment 0: every target is reached from the source along the one step computed there.
    segment > 0: the targets are visited in order of size, each leg starting where the last one
    ended, with stops inserted so that no leg is longer than `segment`; the step is recomputed
    at a leg's start once the head has turned more than `segment` degrees past the point of the
    last computation (so 10/20/30 with segment 20 linearise at 0 and at 20)."""
    stops = sorted({float(t) for t in targets}, key=abs)
    if not stops:
        return []
    if segment <= 0:
        return [(t, True, i == 0) for i, t in enumerate(stops)]
    sign, eps = float(np.sign(stops[-1])), 1e-9
    ends: list[tuple[float, bool]] = []
    last = 0.0
    for stop in stops:
        while abs(stop) - abs(last) > segment + eps:
            last += sign * segment
            ends.append((last, False))
        ends.append((stop, True))
        last = stop
    legs, lin, start = [], None, 0.0
    for end, wanted in ends:
        fresh = lin is None or abs(end - lin) > segment + eps
        if fresh:
            lin = start
        legs.append((end, wanted, fresh))
        start = end
    return legs


def follow(z: np.ndarray, base_images: np.ndarray, targets: list[float], step_at: Callable,
           decode_read: Callable[[np.ndarray], tuple], segment: float,
           rounds: int, norm: bool,
           leg_valid: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
           ) -> dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Renders of every face at each yaw change in `targets` (all of one sign), walked in the
    legs of `plan_legs`: each leg's step from `step_at(latents at its start)` when the plan says
    so (a step, or (step, offset): the offset, e.g. a `correction`, is added once, to the leg
    that starts there), its length calibrated over `rounds` decodes (headrot.directions.calibrate)
    against what `decode_read(latents) -> (images, yaw change from the unmoved render[, valid])`
    reports.

    `valid` (bool [N], optional) is the caller's guard against renders that break, judged on
    whatever it likes (the render stage judges the decoded render before -colour maps it): an
    invalid render is never kept; a face with no valid render on a leg stays where the previous
    leg left it (its render and reading too: it turns less, but stays itself).
    `leg_valid(images, images at the leg's start) -> bool [N]` refuses, as well, a render that
    changed more over its leg than a leg's turn should (both must pass). `base_images`: the
    unmoved renders G(z).

    Returns {target: (images, reading, multiplier)}."""
    start, reached, images_at = z, np.zeros(len(z)), base_images
    out: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    step = None
    rows = np.arange(len(z))
    for target, wanted, fresh in plan_legs(targets, segment):
        offset = 0.0
        if fresh:
            step = step_at(start)
            if isinstance(step, tuple):
                step, offset = step
        chained = segment > 0
        origin, got = (start, reached) if chained else (z, np.zeros(len(z)))
        base = origin + offset
        tried, images = [], []
        prev_images = images_at if chained else base_images

        def achieved_at(k):
            moved = base + ((target - got) * k).reshape(-1, *([1] * (z.ndim - 1))) * step
            moved = D.keep_norm(moved, z) if norm else moved
            tried.append(moved)
            ims, read, *verdict = decode_read(moved)
            images.append(ims)
            valid = verdict[0] if verdict else None
            if leg_valid is not None:
                ok = np.asarray(leg_valid(ims, prev_images), bool)
                valid = ok if valid is None else np.asarray(valid, bool) & ok
            # The leg's own turn: calibrate's secant runs through the leg's start.
            return (read - got, valid) if valid is not None else read - got

        cal = D.calibrate(achieved_at, float(target) - got, rounds)
        kept = cal.best_round >= 0
        pick = np.maximum(cal.best_round, 0)
        leg_images = np.where(kept[:, None, None, None], np.stack(images)[pick, rows], prev_images)
        leg_latents = np.where(kept.reshape(-1, *([1] * (z.ndim - 1))), np.stack(tried)[pick, rows], origin)
        leg_reached = np.where(kept, cal.achieved + got, got)
        if wanted:
            out[target] = (leg_images, leg_reached, np.where(kept, cal.scale, 0.0))
        if chained:
            start, reached, images_at = leg_latents, leg_reached, leg_images
    return out
