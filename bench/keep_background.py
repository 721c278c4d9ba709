"""Does drawing only where the turn acts keep the background clean? A sweep on a demo root.

    python -m bench.keep_background [--root runs/demo] [--thresholds 0.2,0.3,0.5] [--draws 4]
                                    [--name keep-background]

Each of the root's rendered test faces is inverted under its labelled yaw by the shipped yaw
generator and drawn at yaw + delta as the yaw `-colour` methods draw it (colour-guided 2 steps,
transported onto the source; raw offsets, no calibration, no pivotal tuning, so the sweep isolates
the mask), and again with blended sampling (headrot.model.keep): outside DiffEdit's mask of where
the yaw condition changes the noise prediction, the path is the source's own noisy line and the
result the source itself. `oracle` takes the mask from the renderer's truth instead (where the true
turn changes a pixel, grown by a pixel and blurred): the ceiling of any mask. Measured as the
evaluate stage measures (bench.path_probes.measured) into runs/probes/NAME/ (metrics.parquet,
sheet.png, masks.png); prints the yardstick and PSNR / colour PSNR per delta for every variant.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def oracle_masks(root: str, sources: list[str], deltas: list[int], size: int):
    """{delta: [N,1,S,S]}: where the renderer's true turn changes the source (more than 12 levels in
    a channel), grown by a pixel and blurred."""
    import pyarrow.parquet as pq
    import torch
    import torch.nn.functional as F

    from headrot.evaluate.truth import GroundTruth
    from headrot.model.keep import _blur

    truth = GroundTruth(pq.read_table(f"{root}/data/truth.parquet"), size)
    out = {}
    for d in deltas:
        changed = np.stack([np.abs(truth.render(s, d).astype(int) - truth.render(s, 0).astype(int)).max(-1) > 12
                            for s in sources])
        m = torch.from_numpy(changed[:, None].astype(np.float32))
        out[d] = _blur(F.max_pool2d(m, 3, 1, 1), 0.7).clamp(0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="runs/demo", help="a finished demo root")
    ap.add_argument("--thresholds", default="0.2,0.3,0.5", help="DiffEdit mask thresholds to try (comma list)")
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--t", type=float, default=0.5, help="the noise level the mask is read at")
    ap.add_argument("--name", default="keep-background")
    args = ap.parse_args()

    import pandas as pd
    import torch

    from bench.path_probes import PRIMARY, latents_of, measured, root_sources
    from headrot.colour import transport_colours
    from headrot.data.images import decode_face
    from headrot.model.checkpoint import load_model
    from headrot.model.conditioning import at_yaw
    from headrot.model.keep import KeepOutside, edit_mask
    from headrot.model.pivotal import pivot_noise
    from headrot.model.sampler import ddim_inversion, reverse_diffusion
    from headrot.report.grid import image_grid, to_uint8

    torch.set_num_threads(2)
    net, config, _ = load_model(str(ROOT / "headrot" / "assets" / "demo_generator_yaw.pt"), "generator")
    net.eval()
    sources, deltas = root_sources(args.root)
    labelled = latents_of(args.root, set(sources), columns=("yaw",))
    images = np.stack([decode_face((Path(args.root) / "data" / "img_align_celeba" / s).read_bytes(), config.image_size)
                       for s in sources])
    yaw = torch.tensor([labelled[s]["yaw"] for s in sources], dtype=torch.float32)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1

    def onto_sources(x0: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(transport_colours(to_uint8(x0), images)).permute(0, 3, 1, 2).float() / 127.5 - 1

    made, masks = {}, {}
    oracle = oracle_masks(args.root, sources, deltas, config.image_size)
    with torch.no_grad():
        z = ddim_inversion(at_yaw(net, yaw), x, 10, None, 5, 2)
        eps = pivot_noise(net, x, z)
        variants = {"keep-oracle": lambda d: oracle[d]}
        for thr in (float(s) for s in args.thresholds.split(",")):
            variants[f"keep-{thr:g}"] = lambda d, thr=thr: edit_mask(net, x, yaw, yaw + d, args.draws, args.t, thr)
        for name, mask_at in [("plain", None), *variants.items()]:
            drawn = {}
            for d in deltas:
                keep = None
                if mask_at is not None and d != 0:
                    keep = KeepOutside(mask_at(d), x, eps)
                    masks.setdefault(name, {})[d] = keep.mask
                drawn[d] = transport_colours(to_uint8(reverse_diffusion(at_yaw(net, yaw + d), z, 10, guide=onto_sources,
                                                                        guide_steps=2, keep=keep)), images)
            made[name] = {(s, d): drawn[d][i] for d in deltas for i, s in enumerate(sources)}
            print(f"{name} drawn", flush=True)
    out = ROOT / "runs" / "probes" / args.name
    out.mkdir(parents=True, exist_ok=True)
    # The masks of the first eight faces at each nonzero delta, one row per (face, variant).
    turned = [d for d in deltas if d]
    cells, labels = [], []
    for i, s in enumerate(sources[:8]):
        for name, by_delta in masks.items():
            cells += [np.repeat((by_delta[d][i, 0].numpy() * 255).astype(np.uint8)[..., None], 3, -1) for d in turned]
            labels.append(f"{s[:6]} {name}")
    image_grid(np.stack(cells), nrow=len(turned), upscale=3, row_labels=labels,
               col_labels=[f"{d:+d}" for d in turned]).save(out / "masks.png")
    report = measured(args.root, made, out, config.image_size)
    metrics = pd.read_parquet(out / "metrics.parquet")
    for method in [*made, PRIMARY, "no_move"]:
        mine = metrics[metrics.method == method].groupby("delta")
        print(json.dumps({"method": method, **report[method],
                          "psnr_db_by_delta": mine.psnr_db.mean().round(2).tolist(),
                          "colour_psnr_db_by_delta": mine.colour_psnr_db.mean().round(2).tolist()}))


if __name__ == "__main__":
    main()
