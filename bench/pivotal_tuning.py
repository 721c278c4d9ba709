"""Does tuning the yaw generator on each source first keep that head's hair, skin and light when it turns?

    python -m bench.pivotal_tuning [--root runs/demo] [--steps 25,50,100] [--lr 2e-5] [--batch 8]
                                   [--calibrate 3] [--faces 000070,000059] [--pivot-share 0.5]
                                   [--name pivotal-tuning]

Pivotal tuning (Roich et al. 2022, headrot.model.pivotal, the render stage's `pivotal_steps`): the
source inverted under its labelled yaw is the pivot, and a copy of the shipped yaw generator tuned a
few steps on that source alone draws it at yaw + delta. Each of the root's rendered test faces (or
those of --faces; the rest keep the untuned draw) gets its own copy, seeded as the render stage seeds
it; every copy in `--steps` draws the face from its pivot with the root's colour guidance (2 steps),
transported onto the source as `-colour` writes it, with raw offsets and (`--calibrate R`) calibrated
as `-cal` is (R reader reads per delta, the offset at most doubled), beside the untuned generator
drawn alike (`tuned-0`). Measured as the evaluate stage measures (bench.path_probes.measured) into
runs/probes/NAME/ (metrics.parquet, sheet.png; focus.png: the tuned faces beside the renderer's
truth); prints the yardstick per method over the tuned faces. What it found: bench/NOTES.md
(eighteenth session).
"""
from __future__ import annotations

import argparse
import json
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def tuned_at(net, image, pivot, yaw: float, steps: list[int], lr: float, seed: int, batch: int = 8,
             layers: str = "all", pivot_share: float = 0.5):
    """(k, the copy tuned k steps, a plain network) for every k in `steps`, from one run of
    headrot.model.pivotal.tuning on one source."""
    from headrot.model.pivotal import tuning

    wanted = set(steps)
    for done, copies in enumerate(tuning(net, image[None], pivot[None], [yaw], lr, [seed], batch, layers,
                                         pivot_share)):
        if done in wanted:
            yield done, copies.module(0)
        if done >= max(steps):
            return


def focus_sheet(root: str, made: dict[str, dict], faces: list[str], deltas: list[int], size: int):
    """The tuned faces, each as a block of rows: the renderer's truth at each delta, then every
    method's renders (the eye's view of what the figures say)."""
    import pyarrow.parquet as pq

    from headrot.evaluate.truth import GroundTruth
    from headrot.report.grid import image_grid

    truth = GroundTruth(pq.read_table(f"{root}/data/truth.parquet"), size)
    cells, labels = [], []
    for s in faces:
        cells += [truth.render(s, d) for d in deltas]
        labels.append(f"{s[:6]} truth")
        for method, images in made.items():
            cells += [images[s, d] for d in deltas]
            labels.append(method)
    return image_grid(np.stack(cells), nrow=len(deltas), upscale=3, row_labels=labels,
                      col_labels=[f"{d:+d}" for d in deltas])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="runs/demo", help="a finished demo root")
    ap.add_argument("--steps", default="25,50,100", help="tuning steps to measure (comma list)")
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--batch", type=int, default=8, help="tuning batch (half the pivot's line, half fresh noise)")
    ap.add_argument("--layers", default="all", choices=["all", "up"],
                    help="the weights tuned: all, or the up path and output conv only")
    ap.add_argument("--pivot-share", type=float, default=0.5,
                    help="the part of each tuning batch on the pivot's line (the rest fresh noise; 0: fresh only)")
    ap.add_argument("--faces", default="", help="tune only these faces (comma list of ids, e.g. 000070,000059; "
                    "default all): the rest keep the untuned draw")
    ap.add_argument("--name", default="pivotal-tuning")
    ap.add_argument("--calibrate", type=int, default=0, help="also calibrated renders, this many decodes per delta")
    args = ap.parse_args()

    import pandas as pd
    import torch

    from bench.path_probes import PRIMARY, measured, yaw_faces
    from headrot.colour import transport_colours
    from headrot.directions import calibrate
    from headrot.model.conditioning import at_yaw
    from headrot.model.sampler import ddim_inversion, reverse_diffusion
    from headrot.report.grid import to_uint8

    net, config, sources, deltas, images, yaw, x = yaw_faces(args.root)
    steps = [int(s) for s in args.steps.split(",")]
    d = torch.tensor(deltas, dtype=torch.float32)

    def drawn(model, z, yaws, refs) -> np.ndarray:
        """z drawn at each yaw, colour-guided 2 steps and transported onto refs, as yaw -colour writes."""
        def onto(x0):
            return torch.from_numpy(transport_colours(to_uint8(x0), refs)).permute(0, 3, 1, 2).float() / 127.5 - 1
        return transport_colours(to_uint8(reverse_diffusion(at_yaw(model, yaws), z, 10, guide=onto, guide_steps=2)), refs)

    with torch.no_grad():
        z = ddim_inversion(at_yaw(net, yaw), x, 10, None, 5, 2)
    reader = None
    if args.calibrate:
        from headrot.layout import RunLayout
        from headrot.stages.samples import labeller_key, load_labeller

        reader = load_labeller(RunLayout(args.root).reader, labeller_key(args.root, "reader"))

    def face_renders(model, i: int) -> dict[str, dict]:
        """Face i drawn by `model` at every delta: raw offsets, and (--calibrate R) calibrated as
        -cal does, the offset scaled per delta until the root's reader reads the wanted change."""
        refs = np.repeat(images[i:i + 1], len(deltas), 0)
        zs = z[i:i + 1].expand(len(deltas), -1, -1, -1)
        with torch.no_grad():
            raw = drawn(model, zs, yaw[i] + d, refs)
            out = {"": {(sources[i], dd): raw[j] for j, dd in enumerate(deltas)}}
            if reader is not None:
                y0 = reader.predict(raw[deltas.index(0)][None])[0]
                tried = []

                def achieved_at(scale):
                    tried.append(drawn(model, zs, yaw[i] + torch.from_numpy(scale).float() * d, refs))
                    return np.where(d.numpy() == 0, 0.0, reader.predict(tried[-1]) - y0)

                found = calibrate(achieved_at, d.numpy().astype(np.float64), args.calibrate, max_scale=2.0)
                chosen = np.stack(tried)[np.maximum(found.best_round, 0), np.arange(len(deltas))]
                out[f"-cal{args.calibrate}"] = {(sources[i], dd): chosen[j] for j, dd in enumerate(deltas)}
        return out

    made: dict[str, dict] = {}
    wanted = {f.strip() for f in args.faces.split(",") if f.strip()}
    tuned_faces = [s for s in sources if not wanted or s[:6] in wanted]
    started = time.monotonic()
    for i, s in enumerate(sources):   # the untuned generator, every face (the baseline and the rest's fill)
        for suffix, renders in face_renders(net, i).items():
            made.setdefault(f"tuned-0{suffix}", {}).update(renders)
    print(f"untuned: {time.monotonic() - started:.0f} s", flush=True)
    for s in tuned_faces:
        i = sources.index(s)
        for k, tuned in tuned_at(net, x[i], z[i], float(yaw[i]), steps, args.lr,
                                 seed=zlib.crc32(s.encode()), batch=args.batch, layers=args.layers,
                                 pivot_share=args.pivot_share):   # the render stage's seed
            for suffix, renders in face_renders(tuned, i).items():
                made.setdefault(f"tuned-{k}{suffix}", {}).update(renders)
        print(f"{s} tuned, {time.monotonic() - started:.0f} s", flush=True)
    for method in made:   # faces not tuned keep the untuned draw (the measure wants every face)
        base = made["tuned-0" + method[method.index("-cal"):] if "-cal" in method else "tuned-0"]
        made[method] = {key: made[method].get(key, im) for key, im in base.items()}
    out = ROOT / "runs" / "probes" / args.name
    out.mkdir(parents=True, exist_ok=True)
    report = measured(args.root, made, out, config.image_size)
    metrics = pd.read_parquet(out / "metrics.parquet")
    focus_sheet(args.root, made, tuned_faces, deltas, config.image_size).save(out / "focus.png")
    tuned_only = metrics[metrics.source_id.isin(tuned_faces)]
    for method in [*made, PRIMARY, "no_move"]:
        mine = tuned_only[tuned_only.method == method]
        by_delta = mine.groupby("delta")
        print(json.dumps({"method": method, "faces": len(tuned_faces), **(report[method] if not wanted else {}),
                          "pose_error_deg_median_nonzero": round(float(mine[mine.delta != 0].pose_error_deg.median()), 3),
                          "psnr_db_by_delta": by_delta.psnr_db.mean().round(2).tolist(),
                          "colour_psnr_db_by_delta": by_delta.colour_psnr_db.mean().round(2).tolist()}))


if __name__ == "__main__":
    main()
