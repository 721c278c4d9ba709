"""Does a yaw-generator checkpoint draw the render stage's latents as well as the cached ones it
was trained on?

    python -m bench.inversion_gap PROBE [--weights ema|net] [--pairs runs/probes/PROBE/pairs.npz] [--n 48]

`train --coupled ... --unrolled U` draws turns from each pair's cached inversion z_s (made once, by
the file the run started from); the render stage inverts each source with the file it draws with.
For `n` seeded training pairs this inverts x_s anew with the checkpoint (the render stage's 10
steps, (5, 2) iterations) and draws both latents under the turn's yaw and under the source's own,
printing PSNR against the truth turn and the source: the gap is what training on the cached latents
taught that the render stage never sees (bench/NOTES.md, twenty-seventh session).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.yaw_conditioned import ROOT, conditional, psnr


def gap(checkpoint: Path, weights: str, pairs: Path, n: int = 48, seed: int = 1) -> dict:
    import torch

    from headrot.model.checkpoint import load_model
    from headrot.model.sampler import ddim_inversion, reverse_diffusion
    from headrot.report.grid import to_uint8

    base, _, _ = load_model(str(ROOT / "headrot" / "assets" / "demo_generator.pt"), "generator")
    net = conditional(base)
    state = torch.load(checkpoint, weights_only=True)
    net.load_state_dict(state[weights])
    net.eval()
    p = np.load(pairs)
    pick = np.random.default_rng(seed).choice(len(p["y_t"]), min(n, len(p["y_t"])), replace=False)
    src = p["t_src"][pick]

    def to_x(a: np.ndarray):
        return torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1

    y_s, y_t = torch.from_numpy(p["y_s"][src]), torch.from_numpy(p["y_t"][pick])
    cached = torch.from_numpy(p["z_s"][src])
    out = {"checkpoint": str(checkpoint), "weights": weights, "step": int(state["step"]),
           "pairs": len(pick)}
    with torch.inference_mode():
        net.yaw = y_s
        fresh = ddim_inversion(net, to_x(p["x_s"][src]), 10, net.schedule, 5, 2)
        out["fresh_vs_cached_rel"] = round(float((fresh - cached).norm() / cached.norm()), 3)
        for name, z in (("cached", cached), ("fresh", fresh)):
            for what, yaw, truth in (("turn", y_t, p["x_t"][pick]), ("source", y_s, p["x_s"][src])):
                net.yaw = yaw
                drawn = to_uint8(reverse_diffusion(net, z, 10, net.schedule))
                out[f"{name}_{what}_psnr_db"] = round(float(psnr(drawn, truth).mean()), 2)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("probe", help="runs/probes/PROBE/model.pt")
    ap.add_argument("--weights", choices=["ema", "net"], default="ema")
    ap.add_argument("--pairs", help="a pairs.npz (default: the probe's own)")
    ap.add_argument("--n", type=int, default=48, help="training pairs drawn (seeded)")
    args = ap.parse_args(argv)
    probe = ROOT / "runs" / "probes" / args.probe
    row = gap(probe / "model.pt", args.weights, Path(args.pairs) if args.pairs else probe / "pairs.npz", args.n)
    print(json.dumps(row))
    return row


if __name__ == "__main__":
    main()
