"""How many of the DDIM steps should the yaw methods' colours guide? A sweep on a demo root.

    python -m bench.colour_guidance [--root runs/demo] [--steps 0,1,2,3,5,10]

Each of the root's rendered test faces is inverted under its labelled yaw by the shipped yaw
generator (headrot/assets/demo_generator_yaw.pt; the embed stage's (5, 2) inversion) and drawn at
yaw + delta with the first k steps' x_0 estimates mapped onto the source image's colours
(`reverse_diffusion(guide=, guide_steps=k)`, the render stage's `colour_guidance_steps`), then
transported onto the source as `-colour` writes it; the offsets are raw (no calibration), so the
sweep isolates the guidance. Measured as the evaluate stage measures (bench.path_probes.measured:
runs/probes/colour-guidance/, its sheet.png beside the root's default); prints, per k, the
yardstick and the mean PSNR and colour PSNR per delta. What it found: bench/NOTES.md (sixteenth
session).
"""
from __future__ import annotations

import argparse
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="runs/demo", help="a finished demo root")
    ap.add_argument("--steps", default="0,1,2,3,5,10", help="guided steps to try (comma list)")
    args = ap.parse_args()

    import torch

    from bench.path_probes import measured, print_by_delta, yaw_faces
    from headrot.colour import transport_colours
    from headrot.model.conditioning import at_yaw
    from headrot.model.sampler import ddim_inversion, reverse_diffusion
    from headrot.report.grid import to_uint8

    net, config, sources, deltas, images, yaw, x = yaw_faces(args.root)

    def onto_sources(x0: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(transport_colours(to_uint8(x0), images)).permute(0, 3, 1, 2).float() / 127.5 - 1

    made = {}
    with torch.no_grad():
        z = ddim_inversion(at_yaw(net, yaw), x, 10, None, 5, 2)
        for k in (int(s) for s in args.steps.split(",")):
            drawn = {d: transport_colours(to_uint8(reverse_diffusion(at_yaw(net, yaw + d), z, 10, guide=onto_sources,
                                                                     guide_steps=k)), images) for d in deltas}
            made[f"guided-{k}"] = {(s, d): drawn[d][i] for d in deltas for i, s in enumerate(sources)}
    out = ROOT / "runs" / "probes" / "colour-guidance"
    out.mkdir(parents=True, exist_ok=True)
    print_by_delta(out, measured(args.root, made, out, config.image_size), list(made))

if __name__ == "__main__":
    main()
