"""Does a yaw-conditioned generator turn heads? A probe: the shipped demo generator fine-tuned with
a yaw input, then each test face inverted under its own yaw and decoded under the target yaw.

    python -m bench.yaw_conditioned train NAME [--minutes 13] [--faces 6000]
    python -m bench.yaw_conditioned judge NAME [--root runs/demo] [--weights net|ema]

`train` writes a synthetic CelebA of its own (the demo generator's training seed, 3; 10 images per
head) under runs/probes/NAME/data, adds a zero-initialised yaw embedding (sin/cos of 4 multiples of
the yaw, through a linear layer) to the U-Net's noise embedding (`UNet.forward(condition=)`, the
guided-diffusion way of conditioning), so training starts from the shipped network exactly, and
trains both nice'd for the given minutes (AdamW 2e-4, the new layer 3e-3, P2 gamma 2 as the shipped
model, random flips with the yaw's sign flipped); a rerun continues from runs/probes/NAME/model.pt.
`judge` inverts the 32 test faces of a finished demo root under the labels stage's yaw (the embed
stage's 10-step inversion), decodes each under yaw + delta for delta in -30..+30, and reads the
renders with that root's judge (report/yaw_estimator.npz): the median yaw change achieved per delta
and its spread, plus a contact sheet (runs/probes/NAME/sheet-<weights>.png: source, then -30..+30).

What it found is in bench/NOTES.md ("Neither a critic, nor SmoothGrad, nor a yaw condition"): the
condition barely turns heads and changes the same hair and skin the latent moves do.
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

    torch.set_num_threads(2)
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
    gen = torch.Generator().manual_seed(step)
    started = last = time.time()
    losses = []

    def save():
        torch.save({"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step}, ckpt)

    while time.time() - started < minutes * 60:
        i = torch.randint(len(x_all), (64,), generator=gen)
        flip = torch.rand(64, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x_all[i].flip(-1), x_all[i])
        net.yaw = torch.where(flip, -y_all[i], y_all[i])   # a mirrored head turns the other way
        loss = generator_loss(net, x, gen, net.schedule, p2_gamma=2.0)
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


def judge(out: Path, root: str, weights: str) -> None:
    import pandas as pd
    import pyarrow.parquet as pq
    import torch

    from headrot.config import from_mapping, load_yaml
    from headrot.data.images import decode_face
    from headrot.labels.pose import YawEstimator
    from headrot.layout import RunLayout
    from headrot.model.checkpoint import load_model
    from headrot.model.sampler import ddim_inversion, reverse_diffusion
    from headrot.report.grid import image_grid, to_uint8
    from headrot.stages import evaluate as E

    torch.set_num_threads(2)
    base, config, _ = load_model(str(ROOT / "headrot" / "assets" / "demo_generator.pt"), "generator")
    net = conditional(base)
    state = torch.load(out / "model.pt", weights_only=True)
    net.load_state_dict(state[weights])
    net.eval()
    layout = RunLayout(root)
    tests = pd.concat([t[t.partition == 2] for t in (
        pq.read_table(f, columns=["image_id", "partition", "yaw"]).to_pandas()
        for f in sorted(Path(layout.latents).glob("part-*.parquet")))]).head(32)
    images = np.stack([decode_face((Path(root) / "data" / "img_align_celeba" / i).read_bytes(), config.image_size)
                       for i in tests.image_id])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    source_yaw = torch.tensor(tests.yaw.to_numpy(np.float32))
    renders = {}
    with torch.no_grad():
        net.yaw = source_yaw
        z = ddim_inversion(net, x, 10, net.schedule, 5, 2)   # the embed stage's inversion (5, 2)
        for d in DELTAS:
            net.yaw = source_yaw + d
            renders[d] = to_uint8(reverse_diffusion(net, z, 10, net.schedule))
    evaluate = from_mapping(E.EvaluateConfig, {**(load_yaml(ROOT / "configs" / "demo.yaml").get("evaluate") or {}),
                                               "root": root, "data": f"{root}/data"}, "bench.yaw_conditioned")
    spec, _, _ = E._synthetic_judge(evaluate, f"{root}/data", list(tests.image_id), config.image_size, layout.report)
    estimator = YawEstimator.load(spec.estimator, spec.pose)
    at0 = estimator.predict_all(renders[0])[:, 0]
    figures = {}
    for d in DELTAS:
        if d:
            change = estimator.predict_all(renders[d])[:, 0] - at0
            figures[d] = {"median_change_deg": round(float(np.median(change)), 2),
                          "iqr_deg": round(float(np.subtract(*np.percentile(change, [75, 25]))), 2)}
    columns = [images] + [renders[d] for d in DELTAS]
    cells = np.stack([c[i] for i in range(16) for c in columns])
    image_grid(cells, nrow=len(columns), upscale=3, row_labels=list(tests.image_id[:16]),
               col_labels=["source"] + [f"{d:+d}" for d in DELTAS]).save(out / f"sheet-{weights}.png")
    print(json.dumps({"probe": out.name, "weights": weights, "step": int(state["step"]),
                      "yaw_change_by_delta": figures}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["train", "judge"])
    ap.add_argument("name")
    ap.add_argument("--minutes", type=float, default=13.0)
    ap.add_argument("--faces", type=int, default=6000, help="synthetic training images (10 per head)")
    ap.add_argument("--root", default="runs/demo", help="a finished demo root (judge)")
    ap.add_argument("--weights", choices=["net", "ema"], default="net")
    args = ap.parse_args()
    out = ROOT / "runs" / "probes" / args.name
    out.mkdir(parents=True, exist_ok=True)
    if args.command == "train":
        os.nice(10)   # hours-scale work beside the suite: it yields the CPU
        train(out, args.minutes, args.faces)
    else:
        judge(out, args.root, args.weights)


if __name__ == "__main__":
    main()
