"""Does a yaw-conditioned generator turn heads? A probe: the shipped demo generator fine-tuned with
a yaw input, then each test face inverted under its own yaw and decoded under the target yaw.

    python -m bench.yaw_conditioned train NAME [--minutes 13] [--faces 6000]
    python -m bench.yaw_conditioned train NAME --coupled INIT [--minutes 40] [--sources 4000]
                                               [--pairs truth|identity] [--inversions PROBE] [--per-identity 10]
                                               [--colour-weight W] [--reach 60] [--unrolled U [--fresh-inversions]]
    python -m bench.yaw_conditioned judge NAME [--root runs/demo] [--weights net|ema] [--calibrate 3 [--guards]]
                                               [--record DESCRIPTION]
    python -m bench.yaw_conditioned export NAME [--weights net|ema] [--to headrot/assets/demo_generator_yaw.pt]
    python -m bench.yaw_conditioned curve NAME,NAME,... [--root runs/demo]   # -> docs/figures/yaw-generator-curve.png

`train` writes a synthetic CelebA of its own (the demo generator's training seed, 3; 10 images per
head) under runs/probes/NAME/data, adds a zero-initialised yaw embedding (sin/cos of 4 multiples of
the yaw, through a linear layer) to the U-Net's noise embedding (`UNet.forward(condition=)`, the
guided-diffusion way of conditioning), so training starts from the shipped network exactly, and
trains both nice'd for the given minutes (AdamW 2e-4, the new layer 3e-3, P2 gamma 2 as the shipped
model, random flips with the yaw's sign flipped); a rerun continues from runs/probes/NAME/model.pt.

`train --coupled INIT` goes on from probe INIT's EMA weights with coupled examples (reflow's
training on given couplings, Liu et al. 2022): `sources` training faces are inverted once under
their true yaw (runs/probes/NAME/pairs.npz, with two renderer-true turns of each head), and the
network learns to denoise the line from each turn's image to its source's inverted noise under the
turn's yaw, so that the sampler takes a head's latent to that head turned; plain denoising keeps it
a sampler. The same resumable checkpoint (copy another run's model.pt into NAME first to go on
from its step with new pairs). INIT `asset` starts from the shipped yaw generator
(headrot/assets/demo_generator_yaw.pt). `--colour-weight W` adds the x_0 estimate's 4x4
block-colour error to the coupled loss (`coupled_loss`). `--unrolled U` also draws U turns a step
whole, through the 10-step sampler with gradients, and adds their error against the truth
(`sampled_loss`; the shipped file's last 3,741 steps, bench/NOTES.md, twenty-fifth and
twenty-sixth sessions).
`--per-identity K` writes the probe's set with K images per head (6,000 faces at K 2: 3,000 heads
instead of 600; the truth turns need one image of a head).
`--pairs identity` takes the turns from the data instead
of the renderer: other images of the same identity in the same light class, which a CelebA-layout
set has too (`coupled_pairs`).

`judge` inverts the root's rendered test faces under the labels stage's yaw (the embed stage's
10-step inversion), decodes each under yaw + delta at the root's deltas, and measures the renders
as the evaluate stage measures its own (bench.path_probes.measured: the yardstick printed, a
contact sheet beside the root's default in runs/probes/NAME/sheet.png). `--guards` makes its
calibration refuse the renders the demo's guards refuse (colour drift, novel colours): such a face
stays at its last good pose, as in the render stage. `--record` writes the candidate's row of
BENCHMARKS.md's generator table (bench/results/latent-cond-NAME-WEIGHTS.json).

`export` writes the probe's weights as a headrot generator checkpoint with a yaw input
(UNetConfig.yaw_harmonics): what the pipeline's `yaw` render method loads.

What it found is in bench/NOTES.md ("The generator can draw the turned heads; no path to them on
this model is clean" and the section after it).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DELTAS = (-30, -20, -10, 0, 10, 20, 30)


def conditional(base, harmonics: int = 4):
    """The network `base` (a headrot UNet) with a yaw input: net.yaw [N] (degrees) must be set
    before each call, which keeps the sampler's (x, noise variance) calling convention."""
    import torch
    from torch import nn

    class YawConditioned(nn.Module):
        def __init__(self):
            super().__init__()
            self.base, self.yaw = base, None
            self.yaw_in = nn.Linear(2 * harmonics, base.config.embedding_dims)
            nn.init.zeros_(self.yaw_in.weight)   # starts as `base`, to the bit
            nn.init.zeros_(self.yaw_in.bias)
            self.schedule = getattr(base, "schedule", None)

        def forward(self, noisy_images, noise_variances):
            rad = torch.as_tensor(self.yaw, dtype=torch.float32).reshape(-1, 1) * math.pi / 180
            k = torch.arange(1, harmonics + 1, dtype=torch.float32)
            feats = torch.cat([torch.sin(rad * k), torch.cos(rad * k)], 1)
            return self.base(noisy_images, noise_variances, condition=self.yaw_in(feats))

    return YawConditioned()


def load_faces(data: Path, size: int):
    import pyarrow.parquet as pq

    from headrot.data.images import decode_face

    truth = pq.read_table(data / "truth.parquet", columns=["image_id", "yaw"]).to_pandas()
    images = np.stack([decode_face((data / "img_align_celeba" / i).read_bytes(), size) for i in truth.image_id])
    return images, truth.yaw.to_numpy(np.float32)


def train(out: Path, minutes: float, faces: int) -> None:
    import torch

    from headrot.model.checkpoint import load_model
    from headrot.synth.writer import write_synthetic_celeba
    from headrot.train.steps import EMA, generator_loss

    data = out / "data"
    if not (data / "truth.parquet").exists():
        write_synthetic_celeba(str(data), faces, seed=3, images_per_identity=10)
    base, config, _ = load_model(str(ROOT / "headrot" / "assets" / "demo_generator.pt"), "generator")
    images, yaws = load_faces(data, config.image_size)
    net = conditional(base)
    ema = EMA(net, 0.999, warmup=False)  # from trained weights: no warm-up to forget a random start
    opt = torch.optim.AdamW([{"params": base.parameters(), "lr": 2e-4},
                             # the new layer starts at zero and has minutes, not hours, to learn
                             {"params": net.yaw_in.parameters(), "lr": 3e-3}])
    ckpt, step = out / "model.pt", 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        net.load_state_dict(state["net"]), ema.load_state_dict(state["ema"]), opt.load_state_dict(state["opt"])
        step = state["step"]
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    y_all = torch.from_numpy(yaws)

    def loss_of(gen):
        i = torch.randint(len(x_all), (64,), generator=gen)
        flip = torch.rand(64, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x_all[i].flip(-1), x_all[i])
        net.yaw = torch.where(flip, -y_all[i], y_all[i])   # a mirrored head turns the other way
        return generator_loss(net, x, gen, net.schedule, p2_gamma=2.0)

    run_for(minutes, net, ema, opt, ckpt, step, loss_of)


def run_for(minutes: float, net, ema, opt, ckpt: Path, step: int, loss_of, tensors: dict | None = None) -> None:
    """Optimizer steps on `loss_of(generator)` for `minutes`, the EMA after each, the checkpoint
    ({net, ema, opt, step} and the named `tensors`, which the loss may change) every 2 minutes and at
    the end; the draws are seeded by the step, so a resumed run does not repeat its batches."""
    import torch

    gen = torch.Generator().manual_seed(step)
    started = last = time.time()
    losses = []

    def save():
        torch.save({"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step,
                    **(tensors or {})}, ckpt)

    while time.time() - started < minutes * 60:
        loss = loss_of(gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(net)
        step += 1
        losses.append(loss.item())
        if time.time() - last > 120:
            save()
            last = time.time()
            print(json.dumps({"step": step, "loss": round(float(np.mean(losses[-200:])), 4),
                              "yaw_weight_mean_abs": round(net.yaw_in.weight.abs().mean().item(), 5)}), flush=True)
    save()
    print(json.dumps({"step": step, "minutes": round((time.time() - started) / 60, 1)}))


def asset_state(probe) -> dict:
    """The shipped yaw generator (headrot/assets/demo_generator_yaw.pt) as `probe`'s state dict:
    `export` in reverse (the UNet's own names under base., its yaw_in as the probe's)."""
    from headrot.model.checkpoint import load_model

    shipped, _, _ = load_model(str(ROOT / "headrot" / "assets" / "demo_generator_yaw.pt"), "generator")
    state = {(k if k.startswith("yaw_in.") else f"base.{k}"): v for k, v in shipped.state_dict().items()}
    if set(state) != set(probe.state_dict()):
        raise ValueError("the shipped yaw generator's layers are not this probe's: export it again from a probe")
    return state


def coupled_pairs(out: Path, net, sources: int, seed: int = 0, kind: str = "truth",
                  inversions: Path | None = None, reach: float = 60.0) -> dict:
    """Training pairs for `train --coupled`, made once and cached in out/pairs.npz: `sources`
    training faces x_s (true yaw y_s), their inversion z_s under y_s by `net` (the embed stage's
    (5, 2) inversion), and up to two turns x_t of each at yaw y_t:

    - kind "truth": the renderer's truth (headrot.evaluate.truth), the same head and light at
      y_t = y_s + delta, |delta| in [5, 35], |y_t| <= `reach` (the renderer and the judge go to
      80): synthetic data only;
    - kind "identity": other images of the same identity with the same light label, |y_t - y_s| in
      [5, 45]: what a CelebA-layout set affords (identity_CelebA.txt and the light labels), where
      another photo of a person is also another expression, pitch and light within the class.

    `inversions`: another probe's pairs.npz whose sources are these (the same faces, seed and
    count): its x_s, y_s and z_s are taken instead of inverting again."""
    import pyarrow.parquet as pq
    import torch

    from headrot.evaluate.truth import GroundTruth
    from headrot.model.sampler import ddim_inversion

    cache = out / "pairs.npz"
    if cache.exists():
        return dict(np.load(cache))
    if kind not in ("truth", "identity"):
        raise ValueError(f"coupled pairs: kind {kind!r}: use truth or identity")
    truth = pq.read_table(out / "data" / "truth.parquet")
    images, yaws = load_faces(out / "data", net.base.config.image_size)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(yaws), min(sources, len(yaws)), replace=False))
    src, x_t, y_t = [], [], []
    if kind == "truth":
        ground = GroundTruth(truth, net.base.config.image_size)
        ids = truth.column("image_id").to_pylist()
        for i in pick:
            for _ in range(2):
                delta = float(rng.uniform(5, 35) * rng.choice([-1, 1]))
                delta = float(np.clip(yaws[i] + delta, -reach, reach) - yaws[i])
                src.append(i), x_t.append(ground.render(ids[i], delta)), y_t.append(yaws[i] + delta)
    else:
        identity, light = truth.column("identity").to_numpy(), np.asarray(truth.column("light").to_pylist())
        rng = np.random.default_rng(seed + 1)   # its own stream: the picked sources stay the truth kind's
        for i in pick:
            gap = np.abs(yaws - yaws[i])
            others = np.flatnonzero((identity == identity[i]) & (light == light[i]) & (gap >= 5) & (gap <= 45))
            for j in rng.permutation(others)[:2]:
                src.append(i), x_t.append(images[j]), y_t.append(yaws[j])
    if inversions is not None:
        given = np.load(inversions)
        if not np.array_equal(given["x_s"], images[pick]):
            raise ValueError(f"{inversions}: its sources are not these {len(pick)} faces; invert anew (no --inversions)")
        z_s = [torch.from_numpy(given["z_s"])]
    else:
        x_s = torch.from_numpy(images[pick]).permute(0, 3, 1, 2).float() / 127.5 - 1
        z_s = []
        with torch.no_grad():
            for b in range(0, len(pick), 128):
                net.yaw = torch.from_numpy(yaws[pick[b:b + 128]])
                z_s.append(ddim_inversion(net, x_s[b:b + 128], 10, net.schedule, 5, 2))
                print(json.dumps({"inverted": b + len(z_s[-1]), "of": len(pick)}), flush=True)
    position = {int(i): k for k, i in enumerate(pick)}
    pairs = {"x_s": images[pick], "y_s": yaws[pick], "z_s": torch.cat(z_s).numpy(),
             "x_t": np.stack(x_t), "y_t": np.asarray(y_t, np.float32),
             "t_src": np.asarray([position[int(i)] for i in src])}
    np.savez(cache, **pairs)
    return pairs


def coupled_loss(net, images, noises, yaws, generator, p2_gamma: float = 2.0, colour_weight: float = 0.0):
    """The denoising loss with the noise given: x_t = alpha images + sigma noises, predict noises.
    With noises = the inversion of the same head at another yaw, a DDIM step that predicts them
    exactly stays on that line, so the learned sampler takes z_s to `images` under `yaws`
    (reflow's coupled training, Liu et al. 2022, with the couplings from inversion).

    `colour_weight` > 0 adds the error of the x_0 estimate's 4x4 block colours (what the
    evaluation's colour PSNR reads), sigma * lowpass(eps error) = alpha * lowpass(x_0 error): the
    colours of a 32x32 image are set while the noise is high, where the per-pixel loss spends
    itself on detail the sampler will redraw anyway."""
    import torch

    from headrot.model.sampler import denoise
    from headrot.model.schedule import diffusion_schedule
    from headrot.train.steps import p2_weights

    times = torch.rand((images.shape[0], 1, 1, 1), generator=generator)
    noise_rates, signal_rates = diffusion_schedule(times, net.schedule)
    net.yaw = yaws
    pred, _ = denoise(net, signal_rates * images + noise_rates * noises, noise_rates, signal_rates)
    loss = ((pred - noises).abs() * p2_weights(noise_rates, signal_rates, p2_gamma, schedule=net.schedule)).mean()
    if colour_weight:
        loss = loss + colour_weight * (noise_rates * torch.nn.functional.avg_pool2d(pred - noises, 4)).abs().mean()
    return loss


def sampled_loss(net, latents, images, yaws, colour_weight: float = 0.0, steps: int = 10):
    """The error of a whole draw: `latents` (inversions) through the `steps`-step DDIM sampler under
    `yaws`, with gradients through every step, against `images` (L1, plus `colour_weight` times the
    4x4 block colours' L1, what the evaluation's colour PSNR reads). The denoising loss trains one
    step at a time, and the small errors of ten steps add up to the arcs and smears of a far turn;
    this loss is that of the image the render stage draws (backpropagation through the sampler, as
    DRaFT and AlignProp fine-tune a diffusion model on a reward)."""
    import torch

    from headrot.model.sampler import reverse_diffusion

    net.yaw = yaws
    err = reverse_diffusion(net, latents, steps, net.schedule) - images
    return err.abs().mean() + colour_weight * torch.nn.functional.avg_pool2d(err, 4).abs().mean()


def drawn_from(net, z_s, x_s, y_s, sources, fresh: bool):
    """The latents the unrolled turns of `sources` start from: the pairs' cached inversions z_s, or
    (`fresh`) their images x_s inverted anew under y_s by `net` as it is now, as the render stage
    inverts a source (10 DDIM steps, (5, 2) fixed-point iterations; no gradient through it)."""
    import torch

    from headrot.model.sampler import ddim_inversion

    if not fresh:
        return z_s[sources]
    with torch.no_grad():
        net.yaw = y_s[sources]
        return ddim_inversion(net, x_s[sources], 10, net.schedule, 5, 2)


def unrolled_targets(u, t_src, x_t, y_t, x_s, y_s, reconstructions: int):
    """What U unrolled draws aim at, for pair indices `u`: each pair's source (an index into x_s),
    its turn x_t and the turn's yaw, the first `reconstructions` of them replaced by the source
    itself under its own yaw. A draw under the source's yaw from its own inversion is the render
    stage's delta 0 (the embedding PSNR); the turns alone never train it."""
    import torch

    sources = t_src[u]
    keep = torch.arange(len(u)) >= reconstructions
    images = torch.where(keep[:, None, None, None], x_t[u], x_s[sources])
    return sources, images, torch.where(keep, y_t[u], y_s[sources])


def anchor_draws(teacher, net, noise, yaws, colour_weight: float = 0.0):
    """--anchor: the `sampled_loss` of drawing fresh noise under `yaws` as `teacher` (a headrot
    yaw-conditioned generator, frozen) draws it. Trained on inversions alone, the network moves the
    colours of a head into the latent: its draws from fresh noise turn grey and speckled (the
    latent benchmark's sample FD 0.16 -> 0.31 in 989 steps), though the yaw methods never draw
    from fresh noise; the anchor holds that part of the map where the teacher had it."""
    import torch

    from headrot.model.conditioning import at_yaw
    from headrot.model.sampler import reverse_diffusion

    with torch.no_grad():
        target = reverse_diffusion(at_yaw(teacher, yaws), noise, 10)
    return sampled_loss(net, noise, target, yaws, colour_weight)


def keep_inversions(z_s, eps_s, x_s, sources, z, a1, s1) -> None:
    """--refresh-pairs: `sources`' new inversions z replace their cached z_s, in place, and their line
    noise eps_s with them (z = a1 x_s + s1 eps_s), so the coupled lines of the next steps go through
    the latents the network makes now."""
    z_s[sources] = z
    eps_s[sources] = (z - a1 * x_s[sources]) / s1


def train_coupled(out: Path, init: str, minutes: float, faces: int, sources: int, pairs_kind: str = "truth",
                  inversions: Path | None = None, per_identity: int = 10, colour_weight: float = 0.0,
                  reach: float = 60.0, unrolled: int = 0, fresh: bool = False, reconstructions: int = 0,
                  plain_weight: float = 1.0, refresh: bool = False, anchor: Path | None = None,
                  anchor_draws_per_step: int = 8) -> None:
    """Fine-tune a yaw-conditioned checkpoint (runs/probes/INIT/model.pt, its EMA weights; INIT
    "shipped": the demo generator with a zero-initialised yaw embedding; "asset": the shipped yaw
    generator, headrot/assets/demo_generator_yaw.pt) so that the inversion of
    a head under its own yaw decodes under another yaw to the same head turned: each batch of 64
    is 32 coupled turns (z_s -> x_t under y_t), 16 coupled reconstructions (z_s -> x_s under y_s)
    and 16 ordinary denoising examples (fresh noise), which keep it a sampler. Resumable from
    out/model.pt like `train`.

    `unrolled` U > 0 adds the `sampled_loss` of U turns a step: z_s drawn whole by the 10-step
    sampler under y_t against x_t. `fresh`: those U start from x_s inverted anew by the network
    being trained (no gradient through the inversion), as the render stage inverts a source, instead
    of the cached z_s: a network trained thousands of steps to draw the cached latents draws them
    3.4 dB nearer the truth than the latents it makes itself (bench/NOTES.md, twenty-seventh
    session). `reconstructions` R of the U draw the source itself under its own yaw
    (`unrolled_targets`); `plain_weight` weighs the ordinary denoising examples (1: a quarter of the
    batch's loss beside the coupled three quarters), which keep the network a sampler of fresh noise.
    `refresh` (with `fresh`): each step's fresh inversions replace their sources' cached z_s, and so
    the noise eps_s the coupled lines are drawn through; the cache follows the network instead of
    staying the file it started from, and is saved in (and resumed from) the checkpoint.
    `anchor` (a headrot yaw-generator file): `anchor_draws_per_step` fresh noises a step drawn as
    that file draws them (`anchor_draws`)."""
    import torch

    from headrot.model.checkpoint import load_model
    from headrot.model.schedule import diffusion_schedule
    from headrot.synth.writer import write_synthetic_celeba
    from headrot.train.steps import EMA, generator_loss

    data = out / "data"
    if not (data / "truth.parquet").exists():
        # Fewer images per head, more heads: the truth turns come from the renderer, not the set.
        write_synthetic_celeba(str(data), faces, seed=3, images_per_identity=per_identity)
    base, _, _ = load_model(str(ROOT / "headrot" / "assets" / "demo_generator.pt"), "generator")
    net = conditional(base)
    ckpt, step = out / "model.pt", 0
    if ckpt.exists():
        start = torch.load(ckpt, weights_only=True)
        net.load_state_dict(start["net"])
    elif init == "asset":
        net.load_state_dict(asset_state(net))
        # count on from the shipped file's own step, so an export of this run says how far it trained
        step = int(load_model(str(ROOT / "headrot" / "assets" / "demo_generator_yaw.pt"), "generator")[2]
                   ["yaw_conditioned"]["step"])
    elif init != "shipped":   # "shipped": the demo generator with a zero yaw embedding, to the bit
        net.load_state_dict(torch.load(ROOT / "runs" / "probes" / init / "model.pt", weights_only=True)["ema"])
    net.eval()
    pairs = coupled_pairs(out, net, sources, kind=pairs_kind, inversions=inversions, reach=reach)
    net.train()
    ema = EMA(net, 0.999, warmup=False)
    opt = torch.optim.AdamW([{"params": base.parameters(), "lr": 1e-4},
                             # from zero (shipped) the yaw layer has everything to learn
                             {"params": net.yaw_in.parameters(), "lr": 3e-3 if init == "shipped" else 1e-3}])
    if ckpt.exists():
        ema.load_state_dict(start["ema"]), opt.load_state_dict(start["opt"])
        step = start["step"]
    to_x = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1   # noqa: E731
    x_s, x_t, z_s = to_x(pairs["x_s"]), to_x(pairs["x_t"]), torch.from_numpy(pairs["z_s"])
    # The noise of the line through z_s at t = 1 and through x_s at t = 0 (z_s = a1 x_s + s1 eps_s):
    # the sampler starts at z_s itself, and every coupled line of the head shares eps_s.
    s1, a1 = diffusion_schedule(torch.ones(1), net.schedule)
    eps_s = (z_s - a1 * x_s) / s1
    if refresh and ckpt.exists() and "z_s" in start:
        z_s = start["z_s"]
        eps_s = (z_s - a1 * x_s) / s1
    y_s, y_t, t_src = torch.from_numpy(pairs["y_s"]), torch.from_numpy(pairs["y_t"]), torch.from_numpy(pairs["t_src"])
    images, yaws = load_faces(data, base.config.image_size)
    x_all, y_all = to_x(images), torch.from_numpy(yaws)
    teacher = None
    if anchor is not None:
        teacher = load_model(str(anchor), "generator")[0].eval()
        for weight in teacher.parameters():
            weight.requires_grad_(False)

    def loss_of(gen):
        t = torch.randint(len(y_t), (32,), generator=gen)
        s = torch.randint(len(y_s), (16,), generator=gen)
        o = torch.randint(len(y_all), (16,), generator=gen)
        turn = coupled_loss(net, torch.cat([x_t[t], x_s[s]]), torch.cat([eps_s[t_src[t]], eps_s[s]]),
                            torch.cat([y_t[t], y_s[s]]), gen, colour_weight=colour_weight)
        net.yaw = y_all[o]
        loss = (3 * turn + plain_weight * generator_loss(net, x_all[o], gen, net.schedule, p2_gamma=2.0)) / 4
        if unrolled:
            u = torch.randint(len(y_t), (unrolled,), generator=gen)
            picked, targets, target_yaws = unrolled_targets(u, t_src, x_t, y_t, x_s, y_s, reconstructions)
            z = drawn_from(net, z_s, x_s, y_s, picked, fresh)
            if refresh:
                keep_inversions(z_s, eps_s, x_s, picked, z, a1, s1)
            loss = loss + sampled_loss(net, z, targets, target_yaws, colour_weight)
        if teacher is not None:   # under yaws of the data's own spread, as the sample FD draws
            a = torch.randint(len(y_all), (anchor_draws_per_step,), generator=gen)
            noise = torch.randn((len(a), *x_all.shape[1:]), generator=gen)
            loss = loss + anchor_draws(teacher, net, noise, y_all[a], colour_weight)
        return loss

    run_for(minutes, net, ema, opt, ckpt, step, loss_of, {"z_s": z_s} if refresh else None)


def judge(out: Path, root: str, weights: str, rounds: int = 0, record: str | None = None, guards: bool = False,
          max_scale: float = 2.0) -> None:
    """The root's rendered test faces inverted under their labelled yaw and decoded under yaw +
    delta, measured like the root's own renders (bench.path_probes.measured): the yardstick
    printed, out/sheet.png beside the root's default. `record` (the candidate's description):
    also bench/results/latent-cond-NAME-WEIGHTS.json, a row of BENCHMARKS.md's generator table
    with the sample FD and embedding PSNR bench.latent gives a generator. `guards`: calibration
    refuses the renders the demo's guards refuse (`render_guards`). `max_scale`: the largest
    multiple of the wanted offset calibration may decode under."""
    import torch

    from bench.path_probes import latents_of, measured, root_sources
    from headrot.colour import keep_colours
    from headrot.data.images import decode_face
    from headrot.directions import calibrate
    from headrot.layout import RunLayout
    from headrot.model.checkpoint import load_model
    from headrot.model.sampler import ddim_inversion, reverse_diffusion
    from headrot.report.grid import to_uint8
    from headrot.stages.samples import labeller_key, load_labeller

    torch.set_num_threads(2)
    started = time.time()
    base, config, _ = load_model(str(ROOT / "headrot" / "assets" / "demo_generator.pt"), "generator")
    net = conditional(base)
    state = torch.load(out / "model.pt", weights_only=True)
    net.load_state_dict(state[weights])
    net.eval()
    sources, deltas = root_sources(root)
    labelled = latents_of(root, set(sources), columns=("yaw",))
    images = np.stack([decode_face((Path(root) / "data" / "img_align_celeba" / s).read_bytes(), config.image_size)
                       for s in sources])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    source_yaw = torch.tensor([labelled[s]["yaw"] for s in sources], dtype=torch.float32)
    with torch.no_grad():
        net.yaw = source_yaw
        z = ddim_inversion(net, x, 10, net.schedule, 5, 2)   # the embed stage's inversion (5, 2)

        def decoded(offsets: torch.Tensor) -> np.ndarray:
            net.yaw = source_yaw + offsets
            return to_uint8(reverse_diffusion(net, z, 10, net.schedule))

        unmoved = decoded(torch.zeros(len(sources)))
        raw = {d: decoded(torch.full((len(sources),), float(d))) for d in deltas}
        # The default's colour keeping (headrot.colour) on the same renders: each mapped onto the
        # colours of its own delta-0 render, as the render stage maps its moves onto G(z).
        kept = {d: keep_colours(raw[d], unmoved) for d in deltas}
        cal = {0: unmoved}
        if rounds:
            # -cal as the render stage does it: per face, the condition's offset scaled until the
            # samples stage's reader (not the judge) reads the wanted change, colours kept first.
            reader = load_labeller(RunLayout(root).reader, labeller_key(root, "reader"))
            y0 = reader.predict(unmoved)
            guard = render_guards(unmoved) if guards else None
            for d in (d for d in deltas if d):
                tried = []

                def achieved_at(scale, d=d, tried=tried):
                    decodes = decoded(torch.from_numpy(scale * d).float())
                    tried.append(keep_colours(decodes, unmoved))
                    reading = reader.predict(tried[-1]) - y0
                    return reading if guard is None else (reading, guard(decodes, tried[-1]))

                found = calibrate(achieved_at, np.full(len(sources), float(d)), rounds, max_scale=max_scale)
                chosen = np.stack(tried)[np.maximum(found.best_round, 0), np.arange(len(sources))]
                # no round passed the guards: the face stays unmoved, as in the render stage
                cal[d] = np.where((found.best_round >= 0)[:, None, None, None], chosen, unmoved)
    per_face = lambda images: {(s, d): images[d][i] for d in deltas for i, s in enumerate(sources)}  # noqa: E731
    made = {f"{out.name}-{weights}": per_face(raw), f"{out.name}-{weights}-colour": per_face(kept)}
    if rounds:
        made[f"{out.name}-{weights}-cal{rounds}" + (f"x{max_scale:g}" if max_scale != 2.0 else "") + "-colour"
             + ("-guarded" if guards else "")] = per_face(cal)
    report = measured(root, made, out, config.image_size)
    print(json.dumps({"probe": out.name, "weights": weights, "step": int(state["step"]), "methods": report}, indent=1))
    if record:
        from bench import common
        from bench.latent import sample_fd

        command = (f"python -m bench.yaw_conditioned judge {out.name} --root {root} --weights {weights}"
                   + (f" --calibrate {rounds}" if rounds else "") + (" --guards" if guards else "")
                   + (f" --max-scale {max_scale:g}" if max_scale != 2.0 else "")
                   + " --record DESCRIPTION")
        root_report = json.loads((Path(root) / "report" / "report.json").read_text())
        pe = root_report["pose_estimator"]
        common.write_result(f"latent-cond-{out.name}-{weights}", {
            "generator": f"{record} ({int(state['step']):,} steps; {out.name}'s {weights} weights)",
            "root": root, "sources": len(sources),
            "judge": {k: pe.get(k) for k in ("kind", "seed", "mae_deg_heldout", "model")},
            "reader": pe.get("reader") if rounds else None,
            "primary": list(made)[-1],
            "methods": report,
            **sample_fd(root, root_report, lambda: conditional_samples(net, root), f"{root}/data"),
            "embedding_psnr_db": round(float(np.mean(psnr(unmoved, images))), 2),
            # as the render stage counts -cal: `rounds` decodes per nonzero delta, one shared G(z)
            "decodes_per_render": {**{m: 1.0 for m in made},
                                   **({list(made)[-1]: (rounds * (len(deltas) - 1) + 1) / len(deltas)} if rounds else {})},
            "seconds": round(time.time() - started, 1),
            "command": command,
            "note": "a probe, not a render method of the pipeline: it inverts the root's rendered test faces "
                    "under their labelled yaw with the conditional generator and decodes them under yaw + delta",
        })


def render_guards(unmoved: np.ndarray):
    """(decoded, as written) -> valid [N]: the demo's guards on a render of each face (configs/demo.yaml
    render.max_drift on the decoded colours, render.max_novel_colour on the written ones), as the
    render stage's -cal methods apply them: a calibration round they refuse is never chosen."""
    from headrot.colour import novel_colour_share
    from headrot.config import load_yaml
    from headrot.directions import drift
    from headrot.labels.nuisance import image_statistics

    render = load_yaml(ROOT / "configs" / "demo.yaml")["render"]
    max_drift, max_novel = render.get("max_drift"), render.get("max_novel_colour")
    tau = render.get("novel_colour_tau", 0.12)
    ref = image_statistics(unmoved)

    def valid(decoded: np.ndarray, written: np.ndarray) -> np.ndarray:
        ok = np.ones(len(decoded), bool)
        if max_drift is not None:
            ok &= drift(image_statistics(decoded), ref) <= max_drift
        if max_novel is not None:
            ok &= novel_colour_share(written, unmoved, tau) <= max_novel
        return ok

    return valid


def export(out: Path, weights: str, to: Path) -> dict:
    """The probe's checkpoint as a headrot generator checkpoint (headrot.model.checkpoint): the
    demo generator's UNetConfig with yaw_harmonics set, `weights` (net or ema) under the UNet's
    own names, so the pipeline's `yaw` render method loads it (render.yaw_generator). The probe's
    YawConditioned(base, yaw_in) computes exactly what UNet(yaw_harmonics) does: checked here on
    a batch before anything is written."""
    import dataclasses

    import torch

    from headrot.model.checkpoint import load_model, save_model
    from headrot.model.sampler import reverse_diffusion
    from headrot.model.unet import UNet

    base, config, _ = load_model(str(ROOT / "headrot" / "assets" / "demo_generator.pt"), "generator")
    probe = conditional(base)
    harmonics = probe.yaw_in.in_features // 2
    state = torch.load(out / "model.pt", weights_only=True)
    probe.load_state_dict(state[weights])
    cond_config = dataclasses.replace(config, yaw_harmonics=harmonics)
    net = UNet(cond_config)
    net.load_state_dict({k.removeprefix("base."): v for k, v in probe.state_dict().items()})
    net.schedule = base.schedule
    with torch.no_grad():
        x, yaw = torch.randn(4, 3, config.image_size, config.image_size, generator=torch.Generator().manual_seed(0)), \
            torch.tensor([-40.0, -5.0, 12.5, 33.0])
        probe.eval(), net.eval()
        probe.yaw = yaw
        from headrot.model.conditioning import at_yaw

        gap = (reverse_diffusion(probe, x, 10) - reverse_diffusion(at_yaw(net, yaw), x, 10)).abs().max().item()
    if gap > 1e-5:
        raise RuntimeError(f"export: the UNet's yaw input draws {gap:.2e} away from the probe's; not written")
    shown = to.resolve().relative_to(ROOT) if to.resolve().is_relative_to(ROOT) else to
    info = {"probe": out.name, "weights": weights, "step": int(state["step"]),
            "made_by": f"python -m bench.yaw_conditioned export {out.name} --weights {weights} --to {shown}"}
    save_model(str(to), "generator", net, cond_config, extra={"yaw_conditioned": info}, schedule=base.schedule)
    print(json.dumps({**info, "to": str(to), "bytes": to.stat().st_size}))
    return info


def curve(names: list[str], root: str, to: Path) -> list[dict]:
    """The training curve of judged checkpoints (probes NAME, each judged with --calibrate): per
    checkpoint its step and the yardstick of its calibrated (else raw) renders, with the colour
    faults at |delta| >= 20 measured on its renders against the root's sources (judges run before
    the evaluation counted them did not record it); drawn against the step beside the root's
    default (`to`, a PNG) and printed."""
    import pandas as pd
    import pyarrow.parquet as pq
    import torch

    from bench.latent import yardstick
    from bench.path_probes import PRIMARY
    from headrot.colour import novel_colour_share
    from headrot.data.images import decode_face
    from headrot.evaluate.measure import decode_png
    from headrot.report.plots import _pyplot

    sources: dict[str, np.ndarray] = {}

    def with_colours(rows: pd.DataFrame) -> pd.DataFrame:
        images = np.stack([decode_png(b["bytes"]) for b in rows.image])
        for s in set(rows.source_id) - set(sources):
            sources[s] = decode_face((Path(root) / "data" / "img_align_celeba" / s).read_bytes(), images.shape[1])
        return rows.assign(novel_colour_share=novel_colour_share(images, np.stack([sources[s] for s in rows.source_id])))

    points = []
    for name in names:
        out = ROOT / "runs" / "probes" / name
        metrics = pd.read_parquet(out / "metrics.parquet")
        method = next(m for m in (f"{name}-net-cal3-colour", f"{name}-net") if m in set(metrics.method))
        if "novel_colour_share" not in metrics:
            renders = pq.read_table(out / "part-00000.parquet", columns=["source_id", "method", "delta", "image"]).to_pandas()
            measured = pd.concat([with_colours(renders[renders.method == m]) for m in (method, PRIMARY)
                                  if (renders.method == m).any()])
            metrics = metrics.merge(measured[["source_id", "method", "delta", "novel_colour_share"]],
                                    on=["source_id", "method", "delta"], how="left")
        step = int(torch.load(out / "model.pt", weights_only=True)["step"])
        points.append({"probe": name, "step": step, "method": method, **yardstick(metrics, method)})
    points.sort(key=lambda p: p["step"])
    base = json.loads((Path(root) / "report" / "report.json").read_text())
    default = yardstick(pd.read_parquet(Path(root) / "report" / "metrics.parquet"), PRIMARY)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    steps = [p["step"] for p in points]
    for ax, key, label in ((axes[0], "pose_error_deg_median", "median pose error (deg)"),
                           (axes[1], "worst_gain", "worst PSNR gain over no_move (dB)"),
                           (axes[2], "colour_fault_rate_far", "colour faults at +-20/30")):
        value = (lambda y: min(y["psnr_gain_db_by_delta"].values())) if key == "worst_gain" else (lambda y: y.get(key))
        ax.plot(steps, [value(p) for p in points], marker="o", label="checkpoint (calibrated in 3 rounds where judged so)")
        ax.axhline(value(default), color="0.4", ls="--", label=f"the demo's {PRIMARY} (4 rounds)")
        ax.set_xlabel("coupled training steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"The yaw-conditioned generator's training, judged on {base['summary']['n_sources']} test faces of {root}",
                 fontsize=10)
    fig.tight_layout()
    to.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(to, dpi=110)
    plt.close(fig)
    for p in points:
        print(json.dumps({k: p[k] for k in ("probe", "step", "method", "pose_error_deg_median", "slope",
                                            "iqr_at_20_deg", "colour_fault_rate_far")}))
    return points


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """dB per image of two uint8 batches [N,S,S,3]."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))


def conditional_samples(net, root: str, n: int = 600) -> np.ndarray:
    """uint8 [n,S,S,3]: samples of the conditional generator from bench.latent's FD noise, each
    under a yaw drawn from the root's labelled yaws (its latents), as the data's own spread."""
    import torch

    from bench.latent import labelled_yaws, sample_noise
    from headrot.model.sampler import reverse_diffusion
    from headrot.report.grid import to_uint8

    yaws = labelled_yaws(root, n)
    noise = sample_noise(n, net.base.config.image_size)
    out = []
    with torch.inference_mode():
        for s in range(0, n, 100):
            net.yaw = torch.from_numpy(yaws[s:s + 100])
            out.append(to_uint8(reverse_diffusion(net, noise[s:s + 100], 10, net.schedule)))
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["train", "judge", "export", "curve"])
    ap.add_argument("name", help="the probe (curve: a comma list of judged probes)")
    ap.add_argument("--minutes", type=float, default=13.0)
    ap.add_argument("--faces", type=int, default=6000, help="synthetic training images (10 per head)")
    ap.add_argument("--root", default="runs/demo", help="a finished demo root (judge)")
    ap.add_argument("--weights", choices=["net", "ema"], default="net")
    ap.add_argument("--coupled", metavar="INIT",
                    help="train: coupled turns from probe INIT's checkpoint ('shipped': the demo generator; "
                         "'asset': the shipped yaw generator)")
    ap.add_argument("--colour-weight", type=float, default=0.0,
                    help="--coupled: weight of the x_0 estimate's block-colour error in the coupled loss")
    ap.add_argument("--threads", type=int, default=2, help="train: torch threads (1 when two runs share 2 cores)")
    ap.add_argument("--sources", type=int, default=4000, help="--coupled: training faces with turns")
    ap.add_argument("--per-identity", type=int, default=10,
                    help="--coupled: images per head in the probe's synthetic set (faces / this = heads)")
    ap.add_argument("--pairs", choices=["truth", "identity"], default="truth",
                    help="--coupled: turns by the renderer's truth, or other images of the identity in the same light")
    ap.add_argument("--reach", type=float, default=60.0,
                    help="--coupled --pairs truth: the largest |yaw| a turn is drawn at (default 60; the renderer's limit is 80)")
    ap.add_argument("--unrolled", type=int, default=0, metavar="U",
                    help="--coupled: also U turns a step drawn whole by the 10-step sampler, the loss through every step")
    ap.add_argument("--fresh-inversions", action="store_true",
                    help="--unrolled: start each drawn turn from the source inverted by the network in training, "
                         "as the render stage does, not from the cached pairs' inversions")
    ap.add_argument("--reconstructions", type=int, default=0, metavar="R",
                    help="--unrolled: R of the U drawn turns are the source itself under its own yaw (delta 0)")
    ap.add_argument("--refresh-pairs", action="store_true",
                    help="--fresh-inversions: the fresh inversions also replace their sources' cached ones "
                         "(the coupled lines' noise); saved in the checkpoint")
    ap.add_argument("--anchor", metavar="FILE",
                    help="--coupled: a headrot yaw-generator file whose draws from fresh noise the network keeps "
                         "(8 a step, the sampled loss)")
    ap.add_argument("--plain-weight", type=float, default=1.0,
                    help="--coupled: weight of the 16 ordinary denoising examples of a batch (default 1: a quarter)")
    ap.add_argument("--inversions", metavar="PROBE", help="--coupled: take the sources' inversions from PROBE's pairs.npz")
    ap.add_argument("--calibrate", type=int, default=0, metavar="ROUNDS",
                    help="judge: also per face calibrated by the root's reader, in ROUNDS decodes")
    ap.add_argument("--guards", action="store_true",
                    help="judge --calibrate: refuse the renders the demo's guards refuse (max_drift, max_novel_colour)")
    ap.add_argument("--max-scale", type=float, default=2.0,
                    help="judge --calibrate: the largest multiple of the wanted offset decoded (default 2)")
    ap.add_argument("--to", default=str(ROOT / "headrot" / "assets" / "demo_generator_yaw.pt"),
                    help="export: where the headrot generator checkpoint goes (default: the shipped demo asset)")
    ap.add_argument("--record", metavar="DESCRIPTION",
                    help="judge: write bench/results/latent-cond-NAME-WEIGHTS.json (BENCHMARKS.md's generator table)")
    args = ap.parse_args()
    out = ROOT / "runs" / "probes" / args.name
    if args.command != "curve":
        out.mkdir(parents=True, exist_ok=True)
    if args.refresh_pairs and not args.fresh_inversions:
        ap.error("--refresh-pairs needs --fresh-inversions (it keeps the inversions those make)")
    if args.command == "train":
        import torch

        os.nice(10)   # hours-scale work beside the suite: it yields the CPU
        # Two runs side by side on 2 cores: --threads 1 each. Two threads each oversubscribe the
        # cores: each run fell from 1.4 steps/s alone to 0.27; with one thread each, 0.83 (1.67 together).
        torch.set_num_threads(args.threads)
        if args.coupled:
            train_coupled(out, args.coupled, args.minutes, args.faces, args.sources, args.pairs,
                          args.inversions and ROOT / "runs" / "probes" / args.inversions / "pairs.npz",
                          args.per_identity, args.colour_weight, args.reach, args.unrolled, args.fresh_inversions,
                          args.reconstructions, args.plain_weight, args.refresh_pairs,
                          args.anchor and Path(args.anchor))
        else:
            train(out, args.minutes, args.faces)
    elif args.command == "export":
        export(out, args.weights, Path(args.to))
    elif args.command == "curve":
        curve(args.name.split(","), args.root, ROOT / "docs" / "figures" / "yaw-generator-curve.png")
    else:
        judge(out, args.root, args.weights, args.calibrate, args.record, args.guards, args.max_scale)


if __name__ == "__main__":
    main()
