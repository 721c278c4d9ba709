"""Quality of the shipped demo generator: samples and embedding reconstruction on held-out faces.

    python -m bench.quality [--n 64] [--refine-n 16] [--generator CKPT] [--results DIR]

Held-out = a synthetic set of its own seed (the generator was trained on seed 1, the demo runs
on seed 0; this uses seed 7), preprocessed exactly like the embed stage's input. Reports PSNR
(dB, images in [-1, 1]) of the 10-step reconstruction for `inversion`, for `refine` started from
inversion (better than its start is the claim), and for `network` when an embedder checkpoint is
given, each with its images/s (the reconstruction's decode included) measured in the same run.
Writes bench/results/quality.json and two PNGs: 16 samples from fixed seeds, and originals above
their inversion reconstructions. A candidate generator's screen goes to a folder of its own
(`--results DIR`, `--refine-n 0`: about a minute), so that the shipped model's figures stay.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from bench.common import RESULTS, machine_info, write_result
from headrot.data.dataset import decode_batch
from headrot.data.index import read_index
from headrot.model.checkpoint import load_model
from headrot.model.embedding import embed, psnr
from headrot.model.sampler import noise_for_seeds, reverse_diffusion
from headrot.synth.writer import write_synthetic_celeba
from headrot.report.grid import image_grid

HELD_OUT_SEED = 7


def _u8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="held-out images for inversion")
    parser.add_argument("--refine-n", type=int, default=16, help="of those, refined (expensive)")
    parser.add_argument("--refine-steps", type=int, default=30)
    parser.add_argument("--generator", help="default: the shipped demo model")
    parser.add_argument("--embedder", help="an embedder checkpoint for the `network` method")
    parser.add_argument("--results", default=str(RESULTS), help="folder for quality.json and the PNGs")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    generator_uri = args.generator or str(resources.files("headrot") / "assets" / "demo_generator.pt")
    generator, config, extra = load_model(generator_uri, "generator")
    generator.requires_grad_(False)
    size = config.image_size
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_celeba(tmp, args.n, seed=HELD_OUT_SEED)
        index = read_index(tmp)
        table = index.table.slice(0, args.n)
        batch = decode_batch({"path": np.array(table.column("path").to_pylist(), dtype=object)}, size)
    x = torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).float() / 127.5 - 1

    result: dict = {"generator": {"file": Path(generator_uri).name, "image_size": size,
                                  "step": extra.get("step"), "epoch": extra.get("epoch")},
                    "n": args.n, "held_out_seed": HELD_OUT_SEED}
    with torch.inference_mode():
        samples = reverse_diffusion(generator, noise_for_seeds(range(16), (3, size, size)), 10)
        image_grid(_u8(samples), nrow=8, upscale=3).save(results / "demo_samples.png")

        t = time.time()
        inv = embed(x, "inversion", generator)
        result["inversion"] = {"psnr_db_mean": float(psnr(inv.reconstructions, x).mean()),
                               "images_per_s": args.n / (time.time() - t)}
        rows = np.concatenate([_u8(x[:8]), _u8(inv.reconstructions[:8])])
        image_grid(rows, nrow=8, upscale=3).save(results / "demo_inversion.png")

    k = min(args.refine_n, args.n)
    if k > 0:
        start = psnr(inv.reconstructions[:k], x[:k]).mean()
        t = time.time()
        ref = embed(x[:k], "refine", generator, refine_steps=args.refine_steps)
        result["refine"] = {"n": k, "steps": args.refine_steps, "from": "inversion",
                            "psnr_db_start": float(start),
                            "psnr_db_mean": float(psnr(ref.reconstructions, x[:k]).mean()),
                            "images_per_s": k / (time.time() - t)}
    if args.embedder:
        embedder, _, embedder_extra = load_model(args.embedder, "embedder")
        t = time.time()
        with torch.inference_mode():
            net = embed(x, "network", generator, embedder=embedder)
        # The reconstruction's 10 decode calls are timed with it, as for inversion.
        result["network"] = {"psnr_db_mean": float(psnr(net.reconstructions, x).mean()),
                             "images_per_s": args.n / (time.time() - t),
                             "embedder": {"file": Path(args.embedder).name, "step": embedder_extra.get("step"),
                                          "epoch": embedder_extra.get("epoch")}}
    else:
        result["network"] = {"psnr_db_mean": None,
                             "note": "no embedder trained for the demo model (see BENCHMARKS.md)"}
    result["machine"] = machine_info()
    return write_result("quality", result, results)


if __name__ == "__main__":
    print(main())
