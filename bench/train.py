"""Training step throughput: samples/s of the generator's step loop on this CPU, demo and
paper presets, next to the FLOP bound (3 x forward FLOPs per sample: forward + backward).

    python -m bench.train [--presets demo paper] [--quick]

The loop is the training loop's own step without Ray or data loading: uint8 images
-> to_model_images (channels_last) -> generator_loss -> backward -> AdamW -> EMA update,
threads = cores. One warm-up step is timed apart. Ray Train adds the data pipeline and
(with several workers) DDP all-reduce on top of this; with one worker per machine the
step dominates.
"""
from __future__ import annotations

import time

from bench import common

BATCH = {"tiny": 16, "demo": 64, "paper": 16}      # paper: 16 keeps a step to seconds on 2 cores
QUICK_BATCH = {"tiny": 4, "demo": 16, "paper": 4}


def step_rate(preset: str, batch: int, steps: int) -> tuple[float, float]:
    """(samples/s over `steps` steps, warm-up step seconds)."""
    import torch

    from headrot.model.unet import PRESETS as UNETS
    from headrot.model.unet import UNet
    from headrot.train.steps import EMA, generator_loss, step_generator, to_model_images

    config = UNETS[preset]
    torch.manual_seed(0)
    model = UNet(config).to(memory_format=torch.channels_last).train()
    ema = EMA(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    u8 = torch.randint(0, 256, (batch, config.image_size, config.image_size, 3), dtype=torch.uint8)

    def one(step: int) -> None:
        images = to_model_images(u8)
        loss = generator_loss(model, images, step_generator(0, 0, step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update(model, step)

    warm, _ = common.timed(lambda: one(0))
    start = time.perf_counter()
    for step in range(1, steps + 1):
        one(step)
    return steps * batch / (time.perf_counter() - start), warm


def run(presets=("demo", "paper"), quick: bool = False, steps: int | None = None) -> dict:
    threads = common.set_threads()
    flops_per_s = common.matmul_flops(1.0 if quick else 2.0)
    out = {"matmul_gflop_per_s": flops_per_s / 1e9, "torch_threads": threads, "quick": quick,
           "flops_per_sample": "3 x forward (forward + backward: 2x)"}
    for preset in presets:
        batch = (QUICK_BATCH if quick else BATCH)[preset]
        n_steps = steps or (2 if quick else (8 if preset == "demo" else 3))
        samples_per_s, warm = step_rate(preset, batch, n_steps)
        flops = 3 * common.model_flops(preset)
        bound = common.flop_bound(flops_per_s, flops)
        out[preset] = {
            "batch": batch, "steps": n_steps, "warmup_s": warm,
            "samples_per_s": samples_per_s,
            "samples_per_s_per_core": samples_per_s / common.cores(),
            "gflop_per_sample": flops / 1e9,
            "flop_bound_samples_per_s": bound,
            "of_flop_bound": samples_per_s / bound,
        }
    return out


def main(argv=None) -> dict:
    p = common.parser(__doc__, n=0, quick_n=0)
    p.add_argument("--presets", nargs="+", default=list(common.PRESETS), choices=("tiny", *common.PRESETS))
    p.add_argument("--steps", type=int, default=None, help="timed steps per preset")
    args = p.parse_args(argv)
    return common.write_result("train", run(tuple(args.presets), args.quick, args.steps), args.results)


if __name__ == "__main__":
    main()
