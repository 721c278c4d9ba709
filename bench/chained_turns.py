"""Does turning a head in two legs, not one, keep the background's rings away? A probe on a demo root.

    python -m bench.chained_turns [--root runs/demo] [--deltas -30,-20,20,30]

The shipped yaw generator, untuned and uncalibrated (raw offsets, no colour map: the probe isolates
the path): each of the root's rendered test faces is inverted under its labelled yaw and drawn at
yaw + delta directly, and in two legs: drawn at yaw + delta/2, that render inverted again under
yaw + delta/2, drawn at yaw + delta. The rings some faces get beside the head on a far turn
(000074 at -30/-20, 000109 at -30) come from the inverted latent, which carries the source's outline;
the second inversion carries the halfway head's. Prints PSNR against the renderer's truth and the
judge's median pose error per delta for both paths. What it found: bench/NOTES.md, twenty-fourth
session.
"""
from __future__ import annotations

import argparse
import glob
import json

import numpy as np
import pyarrow.parquet as pq
import torch


def judge_of(root: str):
    """The evaluate stage's cached pose estimator of `root` (its report's judge)."""
    from headrot.labels.pose import PoseConfig, YawEstimator
    from headrot.stages.evaluate import EvaluateConfig

    pe, ec = json.load(open(f"{root}/report/report.json"))["pose_estimator"], EvaluateConfig(root=root)
    return YawEstimator.load(f"{root}/report/yaw_estimator.npz", PoseConfig(
        size=pe["image_size"], seed=pe["seed"], n_identities=ec.pose_identities, per_identity=ec.pose_per_identity,
        n_heldout=ec.pose_heldout, epochs=ec.pose_epochs))


def main(argv=None) -> dict:
    from headrot.data.images import decode_face
    from headrot.evaluate.truth import GroundTruth
    from headrot.model.checkpoint import load_model
    from headrot.model.conditioning import at_yaw
    from headrot.model.sampler import ddim_inversion, reverse_diffusion

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="runs/demo", help="a finished demo root")
    ap.add_argument("--deltas", default="-30,-20,20,30")
    args = ap.parse_args(argv)
    root, deltas = args.root, [float(d) for d in args.deltas.split(",")]
    net, config, _ = load_model(f"{root}/checkpoints/generator_yaw/model.pt", "generator")
    net.eval()
    size = config.image_size
    yaws = pq.read_table(glob.glob(f"{root}/latents/*.parquet"), columns=["image_id", "yaw"]).to_pandas()
    yaws = yaws.set_index("image_id").yaw
    rotated = pq.read_table(glob.glob(f"{root}/rotated/*.parquet"), columns=["source_id", "method"]).to_pandas()
    ids = sorted(rotated[rotated.method == "no_move"].source_id.unique())
    truth_table = pq.read_table(f"{root}/data/truth.parquet")
    truth, true_yaw = GroundTruth(truth_table, size), truth_table.to_pandas().set_index("image_id").yaw.loc[ids]
    judge = judge_of(root)
    x = torch.stack([torch.from_numpy(decode_face(open(f"{root}/data/img_align_celeba/{s}", "rb").read(), size))
                     for s in ids]).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = torch.tensor([float(yaws.loc[s]) for s in ids])

    def invert(images, yaw):
        return ddim_inversion(at_yaw(net, yaw), images, 10, None, 5, 2)   # the embed stage's inversion

    def draw(z, yaw):
        return reverse_diffusion(at_yaw(net, yaw), z, 10)

    def uint8(t):
        return ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()

    out: dict[str, dict[str, list[float]]] = {"direct": {}, "two_legs": {}}
    with torch.no_grad():
        z = invert(x, y)
        for d in deltas:
            halfway = draw(z, y + d / 2)
            made = {"direct": uint8(draw(z, y + d)), "two_legs": uint8(draw(invert(halfway, y + d / 2), y + d))}
            gt = np.stack([truth.render(s, d) for s in ids]).astype(np.float64)
            for path, images in made.items():
                psnr = 10 * np.log10(255.0 ** 2 / ((images - gt) ** 2).mean(axis=(1, 2, 3)))
                pose = np.abs(judge.predict(images) - (true_yaw.to_numpy() + d))
                out[path][f"{d:+g}"] = [round(float(psnr.mean()), 2), round(float(np.median(pose)), 2)]
    print(json.dumps({"faces": len(ids), "psnr_db_and_pose_error_deg_by_delta": out}))
    return out


if __name__ == "__main__":
    main()
