"""What each Ray Train worker runs: `train_loop_per_worker(config)`.

The driver (driver.py) passes a plain dict:
    train           TrainConfig as a mapping
    model           UNetConfig of the network to train, as a mapping
    root            the run root (local path or s3:// URI)
    init_uri        optional: a model.pt a fresh run starts from (TrainConfig.init_from)
    generator_uri   embedder only: the frozen generator's model.pt
    sample_images   embedder only: uint8 [k,S,S,3] originals for the reconstruction grid

Per epoch every rank reports the same metrics (all-reduced); rank 0 attaches the
checkpoint (every `checkpoint_every` epochs and at the end) and writes the sample grid.
A checkpoint holds the model, the EMA, the optimizer state, step, epoch and the
metric history, so a resumed run continues exactly where the checkpoint was taken.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from typing import Any

import numpy as np
import torch

from headrot import storage
from headrot.config import from_mapping
from headrot.layout import RunLayout
from headrot.model.unet import UNet, UNetConfig
from headrot.train.config import TrainConfig
from headrot.report.grid import image_grid, png_bytes, to_uint8
from headrot.report.plots import loss_curve
from headrot.train.steps import EMA, embedder_step_loss, freeze, generator_loss, step_generator, to_model_images

STATE_FILE = "state.pt"      # inside each Ray Train checkpoint directory
SAMPLES_FILE = "samples.png"  # the grid of that epoch, beside the state
METRICS_FILE = "metrics.json"
CURVE_FILE = "loss_curve.png"  # beside metrics.json, redrawn every epoch


class SimulatedFailure(RuntimeError):
    """Raised by `fail_after_steps` (tests): a crash in the middle of training."""


# ---------------------------------------------------------------------------
# Checkpoint state


def loss_label(tc: TrainConfig) -> str:
    """What the loss curve's figures are: the losses of two kinds (or two weightings) do not compare."""
    if tc.kind == "embedder":
        return "loss (image-space L1 through the generator)"
    if tc.p2_gamma:
        return f"loss (P2-weighted L1 on the noise, gamma {tc.p2_gamma:g})"
    return "loss (L1 on the noise)"


def state_checksum(optimizer_state: dict) -> float:
    """One number that changes with any Adam moment or step count (tests compare it across a resume)."""
    total = 0.0
    for per_param in optimizer_state["state"].values():
        for value in per_param.values():
            if isinstance(value, torch.Tensor):
                total += float(value.double().abs().sum())
            else:
                total += float(value)
    return total


def load_state(checkpoint_dir: str) -> dict[str, Any]:
    """The training state in a checkpoint directory (weights_only: plain tensors and containers)."""
    return torch.load(os.path.join(checkpoint_dir, STATE_FILE), map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------
# The loop


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    tc = from_mapping(TrainConfig, config["train"], "train")
    mc = from_mapping(UNetConfig, config["model"], "model")
    root = config["root"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()

    # Torch's intra-op threads = this worker's CPU share (Ray sets OMP_NUM_THREADS
    # only for whole CPUs); 0.5 CPU still needs one thread.
    torch.set_num_threads(max(1, int(tc.cpus_per_worker)))
    device = ray.train.torch.get_device()

    # Same initial weights on every rank (DDP also broadcasts rank 0's at wrap time).
    torch.manual_seed(tc.seed)
    net = UNet(mc).to(memory_format=torch.channels_last)
    ema = EMA(net, tc.ema_decay, warmup=tc.ema_warmup)

    generator = None
    if tc.kind == "embedder":
        from headrot.model.checkpoint import load_model

        generator, _, _ = load_model(config["generator_uri"], "generator")
        generator = freeze(generator).to(device=device, memory_format=torch.channels_last)

    # 1. resume: Ray Train hands back the latest reported checkpoint (after a
    #    worker failure within this fit, or from the run snapshot of an earlier fit).
    state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = load_state(d)
        net.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
    elif config.get("init_uri"):
        # Warm start (a fresh run only: a checkpoint, above, always wins): model and EMA both
        # begin at the exported weights, so the EMA averages onward from them.
        from headrot.model.checkpoint import load_model

        warm, _, _ = load_model(config["init_uri"], tc.kind)
        net.load_state_dict(warm.state_dict())
        ema.load_state_dict(warm.state_dict())
    ema.to(device)

    # 2. DDP (gloo on CPU, nccl on GPU) and the optimizer on the wrapped parameters.
    model = ray.train.torch.prepare_model(net)
    unwrapped = model.module if hasattr(model, "module") else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    step, epoch, history, restores = 0, 0, [], []
    restored: dict[str, Any] = {}
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        step, epoch, history = int(state["step"]), int(state["epoch"]), list(state["history"])
        # Each resume is recorded (and kept in later checkpoints): where it restarted
        # and a checksum of the optimizer state it restored.
        restored = {"restored_step": step, "restored_epoch": epoch,
                    "restored_optimizer_checksum": state_checksum(optimizer.state_dict())}
        restores = list(state.get("restores", [])) + [dict(restored)]

    kind_dir = RunLayout(root).checkpoint_dir(tc.kind)
    samples_uri = storage.join(kind_dir, "samples")
    shard = ray.train.get_dataset_shard("train")

    def reached_max() -> bool:
        return tc.max_steps is not None and step >= tc.max_steps

    # 3. epochs
    while epoch < tc.epochs and not reached_max():
        model.train()
        loss_sum, steps_done, samples = 0.0, 0, 0
        start = time.perf_counter()
        batches = shard.iter_torch_batches(
            batch_size=tc.batch_size,
            drop_last=True,  # equal batch counts on every rank: DDP all-reduces each step
            local_shuffle_buffer_size=tc.shuffle_buffer or None,
        )
        for batch in batches:
            images = to_model_images(batch["image"], device)
            if tc.kind == "generator":
                loss = generator_loss(model, images, step_generator(tc.seed, rank, step), p2_gamma=tc.p2_gamma)
            else:
                loss = embedder_step_loss(model, generator, images, steps=tc.embed_steps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ema.update(unwrapped, step)
            step += 1
            steps_done += 1
            samples += images.shape[0]
            loss_sum += float(loss.detach())
            if tc.fail_after_steps is not None and state is None and step >= tc.fail_after_steps:
                raise SimulatedFailure(f"simulated failure after {step} steps (fail_after_steps)")
            if reached_max():
                break
        elapsed = time.perf_counter() - start
        epoch += 1

        # 4. metrics over all ranks
        totals = torch.tensor([loss_sum, steps_done, samples], dtype=torch.float64, device=device)
        longest = torch.tensor([elapsed], dtype=torch.float64, device=device)
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
            torch.distributed.all_reduce(longest, op=torch.distributed.ReduceOp.MAX)
        loss_sum_all, steps_all, samples_all = (float(v) for v in totals.cpu())
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "step": step,
            "loss": loss_sum_all / steps_all if steps_all else math.nan,
            "samples": int(samples_all),
            "samples_per_s": samples_all / float(longest) if float(longest) > 0 else 0.0,
            "epoch_seconds": float(longest),
            "world_size": world,
        }
        history.append(dict(metrics))
        metrics.update(restored)
        restored = {}

        last = epoch >= tc.epochs or reached_max()
        save = last or epoch % tc.checkpoint_every == 0

        # 5. rank 0: sample grid, checkpoint
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            continue
        grid_png = None
        if tc.sample_grid:
            grid_png = png_bytes(_sample_grid(tc, mc, ema.module, generator, config.get("sample_images"), device))
            storage.write_bytes(storage.join(samples_uri, f"epoch_{epoch:03d}.png"), grid_png)
        storage.write_json(storage.join(kind_dir, METRICS_FILE), history)
        storage.write_bytes(storage.join(kind_dir, CURVE_FILE),
                            loss_curve(history, f"{tc.kind}: training loss", loss_label(tc)))
        if not save:
            ray.train.report(metrics, checkpoint=None)
            continue
        with tempfile.TemporaryDirectory(prefix="headrot-ckpt-") as d:
            torch.save(
                {
                    "model": _cpu(unwrapped.state_dict()),
                    "ema": _cpu(ema.state_dict()),
                    "optimizer": optimizer.state_dict(),
                    "step": step,
                    "epoch": epoch,
                    "history": history,
                    "restores": restores,
                    "model_config": dict(config["model"]),
                },
                os.path.join(d, STATE_FILE),
            )
            if grid_png is not None:
                with open(os.path.join(d, SAMPLES_FILE), "wb") as f:
                    f.write(grid_png)
            with open(os.path.join(d, METRICS_FILE), "w") as f:
                json.dump(history, f, indent=2)
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(d),
                # step grows strictly, so names never collide, even across resumes
                checkpoint_dir_name=f"checkpoint_epoch{epoch:04d}_step{step:08d}",
            )


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


# ---------------------------------------------------------------------------
# Sample grids


@torch.no_grad()
def _sample_grid(tc: TrainConfig, mc: UNetConfig, ema_net, generator, sample_images, device):
    """Generator: DDIM samples of the EMA weights from fixed seeds (comparable across epochs).
    Embedder: originals (top row) above their reconstructions G(E(x)) (bottom row)."""
    size = mc.image_size
    upscale = max(1, 64 // size)  # about 64 px per cell, whatever the model size
    if tc.kind == "generator":
        from headrot.model.sampler import noise_for_seeds, reverse_diffusion

        seeds = range(tc.seed, tc.seed + tc.sample_count)
        noise = noise_for_seeds(list(seeds), (3, size, size), device=device)
        images = reverse_diffusion(ema_net, noise, steps=tc.sample_steps)
        return image_grid(to_uint8(images), nrow=int(math.ceil(math.sqrt(tc.sample_count))), upscale=upscale)
    from headrot.model.sampler import reverse_diffusion

    originals = np.asarray(sample_images, dtype=np.uint8)[: min(8, tc.sample_count)]
    x = to_model_images(torch.from_numpy(originals), device)
    recon = reverse_diffusion(generator, ema_net(x), steps=tc.embed_steps)
    both = np.concatenate([originals, to_uint8(recon)])
    return image_grid(both, nrow=len(originals), upscale=upscale, row_labels=["original", "recon"])
