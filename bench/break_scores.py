"""Can a number see the breaks? Scores of the demo's turned renders against the eye's labels.

    python -m bench.break_scores [--root runs/demo] [--critic PROBE [--epochs 30]]

bench/results/eye-breaks.json lists which of the default method's renders at |delta| >= 20 of the
24 faces on the demo's contact sheet are broken (patches, smears, dissolving hair), labelled by eye
on `make demo`'s renders; its hash pins those renders, and the tool refuses a root whose renders
differ (relabel them first). For each candidate score it prints the ROC AUC of the score against
the labels (0.5: blind; a guard needs well above 0.9). The scores: image-space statistics of each
render against its unmoved render (delta 0) or its leg's start (10 degrees back), and with
--critic a small CNN trained to tell the generator's reconstructions of the root's training faces
(G(z) of their latents: clean heads at every yaw) from the default method's renders at |delta| >=
20 in runs/probes/PROBE (made by `python -m bench.steer_probe PROBE --labeller-alone --set
'split="train"' limit=160 max_novel_colour=null min_leg_psnr=null max_drift=null`: turns of
training faces with no guard, where breaks are common).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import io
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LABELS = ROOT / "bench" / "results" / "eye-breaks.json"


def rendered(pattern: str, method: str) -> dict[tuple[str, int], bytes]:
    import pyarrow.parquet as pq

    out = {}
    for f in sorted(glob.glob(pattern)):
        for r in pq.read_table(f, columns=["source_id", "method", "delta", "image"]).to_pylist():
            if r["method"] == method:
                out[r["source_id"], int(r["delta"])] = r["image"]["bytes"]
    return out


def decoded(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def labelled(root: str) -> tuple[dict, list[tuple[str, int]], np.ndarray]:
    """(renders by (source, delta), the labelled keys, broken [bool]); refuses other renders."""
    doc = json.loads(LABELS.read_text())
    renders = rendered(f"{root}/rotated/part-*.parquet", doc["method"])
    keys = sorted((s, d) for (s, d) in renders if abs(d) >= 20 and s[:6] in set(doc["faces"]))
    digest = hashlib.sha256()
    for k in keys:
        digest.update(renders[k])
    if digest.hexdigest() != doc["renders_sha256"]:
        raise SystemExit(f"{root}/rotated holds other renders than {LABELS.name} labels (made on "
                         f"`make demo` of {doc['made_on']}): relabel them by eye")
    broken = np.array([s[:6] in doc["broken"].get(str(d), []) for s, d in keys])
    return renders, keys, broken


def image_scores(renders: dict, keys: list[tuple[str, int]]) -> dict[str, np.ndarray]:
    """Statistics of each render against its unmoved render and its leg's start."""
    from scipy.ndimage import gaussian_filter, uniform_filter

    img = {k: decoded(renders[k]).astype(float) / 255 for k in {*keys, *((s, 0) for s, _ in keys),
                                                               *((s, d - 10 * int(np.sign(d))) for s, d in keys)}}

    def change(a, b):
        return np.abs(a - b).sum(-1)

    def detail(x):
        return ((x - gaussian_filter(x, (1, 1, 0))) ** 2).mean()

    def each(fn):
        return np.array([fn(img[s, d], img[s, 0], img[s, d - 10 * int(np.sign(d))]) for s, d in keys])

    return {
        "mean change from delta 0": each(lambda x, x0, _: change(x, x0).mean()),
        "99th pct change from delta 0": each(lambda x, x0, _: np.percentile(change(x, x0), 99)),
        "largest 8x8 change from delta 0": each(lambda x, x0, _: uniform_filter(change(x, x0), 8).max()),
        "largest 6x6 change over the leg": each(lambda x, _, xl: uniform_filter(change(x, xl), 6).max()),
        "detail lost (1 - hf energy ratio)": each(lambda x, x0, _: 1 - detail(x) / detail(x0)),
        "largest 6x6 luminance change": each(lambda x, x0, _: uniform_filter(np.abs(x.mean(-1) - x0.mean(-1)), 6).max()),
    }


def critic_scores(root: str, probe: str, test: np.ndarray, epochs: int) -> np.ndarray:
    """A small CNN's P(render is a moved one) for `test`, trained as the module docstring says."""
    import pyarrow.parquet as pq
    import torch
    from torch import nn

    from bench.steer_probe import PRIMARY, render_config
    from headrot.stages.render import RenderShards

    torch.manual_seed(0)
    actor = RenderShards(render_config(root, str(ROOT / "runs" / "probes" / "_unused"), [], None))
    latents = []
    for f in sorted(glob.glob(f"{root}/latents/part-*.parquet")):
        t = pq.read_table(f, columns=["partition", "latent"])
        keep = t.column("partition").to_numpy() == 0
        latents.append(t.column("latent").combine_chunks().to_numpy_ndarray()[keep])
    with torch.inference_mode():
        clean = actor.decode(np.concatenate(latents))
    moved = np.stack([decoded(b) for (s, d), b in
                      rendered(str(ROOT / "runs" / "probes" / probe / "part-*.parquet"), PRIMARY).items() if abs(d) >= 20])

    def model_range(x):
        return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1

    x_all, y_all = model_range(np.concatenate([clean, moved])), torch.cat([torch.zeros(len(clean)), torch.ones(len(moved))])
    weight = torch.where(y_all > 0, len(clean) / len(moved), 1.0)   # the classes weigh alike
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                        nn.Conv2d(64, 128, 3, 2, 1), nn.ReLU(), nn.Conv2d(128, 128, 3, 2, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 1))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(x_all))
        for s in range(0, len(x_all), 64):
            i = order[s:s + 64]
            flip = torch.rand(len(i)) < 0.5
            xb = torch.where(flip[:, None, None, None], x_all[i].flip(-1), x_all[i])
            loss = (nn.functional.binary_cross_entropy_with_logits(net(xb)[:, 0], y_all[i], reduction="none") * weight[i]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return net(model_range(test))[:, 0].numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="runs/demo")
    ap.add_argument("--critic", default=None, help="a steer_probe name whose renders are the critic's negatives")
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    from sklearn.metrics import roc_auc_score

    renders, keys, broken = labelled(args.root)
    scores = image_scores(renders, keys)
    if args.critic:
        test = np.stack([decoded(renders[k]) for k in keys])
        scores[f"critic ({args.critic}, {args.epochs} epochs)"] = critic_scores(args.root, args.critic, test, args.epochs)
    print(json.dumps({"renders": len(keys), "broken": int(broken.sum()),
                      "auc": {name: round(float(roc_auc_score(broken, v)), 3) for name, v in scores.items()}}, indent=2))


if __name__ == "__main__":
    main()
