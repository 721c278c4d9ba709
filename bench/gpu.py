"""One prepared run on a lent GPU (issue 15, item 4): a synthetic set at the network's size, the
`paper` network trained for the minutes a lease allows, and the render and embed stages' rates.

    # here, once (needs Ray for the fit): the render benchmark's inputs, without a generator
    python -m bench.gpu prepare-render --root gpu-inputs/render-paper --preset paper --sources 512
    # on the device (no Ray there: everything below runs in one process)
    python -m bench.gpu run --out $OUT --render-root gpu-inputs/render-paper --budget 330
    # the CPU rehearsal of the same script
    python -m bench.gpu prepare-render --root /tmp/r16 --preset tiny --sources 32
    python -m bench.gpu run --preset tiny --images 600 --budget 90 --render-root /tmp/r16 --out /tmp/gpu-tiny
    # here, after: the model from its parts (fp16, loads as float32)
    python -m bench.gpu join OUT/model.pt PARTS...

`run` phases, each timed; gpu.json is rewritten after each, so a run stopped by its limit
still says how far it got:
1. card: device, torch, the bf16 matmul rate of an 8192^3 product (the MFU denominator
   measured here; MFU against the card's spec peak is given beside it).
2. data: `--images` faces of `headrot.synth` (10 per identity, the demo's layout), each
   rendered, JPEG-encoded as the writer does and decoded to SxS by `decode_face`, the
   training path's crop, in one process per core but one. Held on the device as uint8.
3. eager probe: training steps of a throwaway copy of the network, without torch.compile,
   for `--probe-s` seconds: the eager rate beside the compiled one.
4. train: AdamW + EMA, bf16 autocast and channels_last on CUDA, the network under
   torch.compile (its warm-up timed apart), the noise drawn on the device, until the
   budget's training deadline. Loss every `--log-every` steps.
5. export: the EMA weights in fp16, split in parts under 15 MiB (what a lease brings back
   per file), a 64-sample grid (10 DDIM steps, the seeds the training grids use), the loss curve.
6. render and embed: the stages' own plain loops (bench.render / bench.embed) with the
   trained network on the device: images/s and the model's share of the chip's FLOP/s.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# Dense bf16 peak of the cards this may meet (vendor spec sheets, SXM boards, no sparsity).
SPEC_BF16_FLOPS = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12}
PART_BYTES = 15 * 2**20      # a lease brings back files of up to 16 MiB
IMAGES_PER_IDENTITY = 10     # the demo model's training sets (3,000 heads x 10 images)
DELTAS = (-30, -20, -10, 0, 10, 20, 30)


# ---------------------------------------------------------------------------
# Data: synthetic faces at the network's size, in parallel


def render_chunk(args: tuple[int, list[dict], int]) -> np.ndarray:
    """uint8 [len(rows), size, size, 3]: each planned face rendered at CelebA's aligned size,
    JPEG-encoded as the writer encodes it, then cropped and resized by the training path's decoder."""
    from PIL import Image

    from headrot.data.images import decode_face
    from headrot.synth.identity import sample_identity
    from headrot.synth.render import render_face
    from headrot.synth.writer import SynthConfig

    seed, rows, size = args
    config = SynthConfig()
    out = np.zeros((len(rows), size, size, 3), np.uint8)
    for i, row in enumerate(rows):
        image, _ = render_face(sample_identity(seed, row["identity"]), row["yaw"], row["light_azimuth"],
                               pitch=row["pitch"], roll=row["roll"], width=config.width, height=config.height)
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=config.jpeg_quality)
        out[i] = decode_face(buf.getvalue(), size)
    return out


def start_synth(n: int, size: int, seed: int, processes: int):
    """(pool, async result) rendering the first n faces of the plan; spawned workers, so the
    parent may initialise CUDA while they run (a forked child of a CUDA process is unusable)."""
    from headrot.synth.writer import SynthConfig, plan

    rows = plan(SynthConfig(n=n, seed=seed, images_per_identity=IMAGES_PER_IDENTITY))
    chunks = [(seed, rows[i:i + 250], size) for i in range(0, len(rows), 250)]
    pool = multiprocessing.get_context("spawn").Pool(processes)
    return pool, pool.map_async(render_chunk, chunks)


# ---------------------------------------------------------------------------
# Training


class Trainer:
    """The training loop's step (headrot.train.steps) on one device, without Ray Train."""

    def __init__(self, config, device, lr: float, p2_gamma: float, ema_decay: float, seed: int, compile: bool):
        import torch

        from headrot.model.unet import UNet
        from headrot.train.steps import EMA

        torch.manual_seed(seed)
        self.device, self.p2_gamma = device, p2_gamma
        self.cuda = device.type == "cuda"
        self.net = UNet(config).to(device=device, memory_format=torch.channels_last).train()
        self.ema = EMA(self.net, ema_decay).to(device)
        # The Keras example's optimizer settings (TrainConfig's defaults).
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=1e-4,
                                           fused=self.cuda)
        # compile wraps the same parameters: the EMA and the export read self.net.
        self.model = torch.compile(self.net, dynamic=False) if compile else self.net
        # One device-side stream for the whole run (no resume here): a CUDA generator keeps the
        # noise draw off the host.
        self.noise = torch.Generator(device=device).manual_seed(seed)
        self.step = 0

    def train_step(self, images_u8, update_ema: bool = True) -> "torch.Tensor":
        import torch

        from headrot.train.steps import generator_loss, to_model_images

        images = to_model_images(images_u8, self.device)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.cuda):
            loss = generator_loss(self.model, images, self.noise, p2_gamma=self.p2_gamma)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if update_ema:
            self.ema.update(self.net, self.step)
        self.step += 1
        return loss.detach()


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batches(data, batch: int, generator):
    """Endless shuffled batches (drop_last) of a uint8 tensor on the device."""
    import torch

    n = data.shape[0]
    while True:
        order = torch.randperm(n, generator=generator, device="cpu").to(data.device)
        for s in range(0, n - batch + 1, batch):
            yield data[order[s:s + batch]]


def eager_probe(trainer: Trainer, images_u8, seconds: float) -> dict:
    """Steady samples/s of eager steps on a throwaway copy (the run's weights are not touched).
    Its steps skip the EMA update that the training steps make, so the compiled rate's gain over
    this one is, if anything, understated."""
    import copy

    import torch

    probe = copy.copy(trainer)
    probe.net = copy.deepcopy(trainer.net)
    probe.model = probe.net
    probe.optimizer = torch.optim.AdamW(probe.net.parameters(), lr=1e-4, fused=trainer.cuda)
    probe.noise = torch.Generator(device=trainer.device).manual_seed(1)
    probe.train_step(images_u8, update_ema=False)  # warm-up: cuDNN picks, allocator
    sync(trainer.device)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or steps < 3:
        probe.train_step(images_u8, update_ema=False)
        steps += 1
        if steps % 5 == 0:
            sync(trainer.device)
    sync(trainer.device)
    seconds = time.perf_counter() - start
    return {"steps": steps, "seconds": seconds, "samples_per_s": steps * images_u8.shape[0] / seconds}


# ---------------------------------------------------------------------------
# Export


def export_parts(out: Path, net, config, limit: int = PART_BYTES) -> list[dict]:
    """The EMA weights in fp16, split by tensor into files of at most `limit` bytes of weights
    (a file is a plain dict of tensors and strings: weights_only loads it)."""
    import torch

    state = {k: v.detach().to("cpu", torch.float16) for k, v in net.state_dict().items()}
    parts: list[dict[str, Any]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if parts[-1] and size + nbytes > limit:
            parts.append({})
            size = 0
        parts[-1][name] = tensor
        size += nbytes
    written = []
    for i, part in enumerate(parts):
        path = out / f"model.part{i}.pt"
        torch.save({"format": "headrot-gpu-parts-1", "part": i, "of": len(parts),
                    "model_config": dataclasses.asdict(config), "state_dict": part}, path)
        written.append({"file": path.name, "bytes": path.stat().st_size, "tensors": len(part)})
    return written


def join_parts(model_uri: str, part_paths: list[str]) -> str:
    """A headrot generator checkpoint (fp16 weights; load_model gives float32) from `export_parts`' files."""
    import torch

    from headrot.config import from_mapping
    from headrot.model.checkpoint import save_model
    from headrot.model.unet import UNet, UNetConfig

    parts = [torch.load(p, map_location="cpu", weights_only=True) for p in part_paths]
    parts.sort(key=lambda p: p["part"])
    if [p["part"] for p in parts] != list(range(parts[0]["of"])):
        raise ValueError(f"parts {[p['part'] for p in parts]} of {parts[0]['of']}: give every model.partN.pt of one run")
    config = from_mapping(UNetConfig, parts[0]["model_config"], where=part_paths[0])
    state = {k: v for p in parts for k, v in p["state_dict"].items()}
    net = UNet(config).half()
    net.load_state_dict(state)
    save_model(model_uri, "generator", net, config, extra={"trained_on": "bench.gpu"})
    return model_uri


# ---------------------------------------------------------------------------
# Render and embed on the device


def render_rate(render_root: str, model_uri: str, batch: int, limit: int | None) -> dict:
    """bench.render's plain loop over a copy of a prepared root, with the trained generator."""
    from bench import render as bench_render
    from headrot.layout import RunLayout
    from headrot.stages.render import RenderConfig

    work = tempfile.mkdtemp(prefix="gpu-render-")
    root = os.path.join(work, "root")
    shutil.copytree(render_root, root)
    target = RunLayout(root).model("generator")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy(model_uri, target)
    config = RenderConfig(root=root, deltas=DELTAS, split="all", limit=limit, batch_size=batch, steps=10,
                          out=os.path.join(root, "rotated"), sheet_sources=2)
    bench_render.plain_loop(dataclasses.replace(config, limit=2, deltas=(0,), out=os.path.join(root, "warm")), 8)
    result = bench_render.plain_loop(config, 8)
    shutil.rmtree(work, ignore_errors=True)
    return result


def embed_rate(data: str, model_uri: str, batch: int, n: int) -> dict:
    """bench.embed's plain loop (inversion, 10 steps) over n written faces, with the trained generator."""
    from bench import embed as bench_embed
    from headrot.stages.embed import EmbedConfig

    work = tempfile.mkdtemp(prefix="gpu-embed-")
    shard = max(batch, min(1024, n))
    config = EmbedConfig(data=data, out=os.path.join(work, "warm"), method="inversion", generator=model_uri,
                         limit=min(n, 64), shard_size=shard, batch_size=batch)
    bench_embed.plain_loop(config, 8)
    config = EmbedConfig(data=data, out=os.path.join(work, "run"), method="inversion", generator=model_uri,
                         limit=n, shard_size=shard, batch_size=batch)
    result = bench_embed.plain_loop(config, 8)
    shutil.rmtree(work, ignore_errors=True)
    return result


# ---------------------------------------------------------------------------
# The run


class Report:
    """gpu.json, rewritten after every phase."""

    def __init__(self, path: Path):
        self.path, self.data = path, {}
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.data["elapsed_s"] = round(self.elapsed(), 2)
        self.path.write_text(json.dumps(self.data, indent=2, default=float))
        print(f"[{self.elapsed():7.1f} s] {key}: {json.dumps(value, default=float)[:400]}", flush=True)


def card(device) -> dict:
    import torch

    from headrot.model.flops import measure_matmul_flops

    info: dict[str, Any] = {"torch": torch.__version__, "device": str(device), "cpus": os.cpu_count()}
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        info["name"] = name
        info["memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        info["bf16_matmul_flops"] = measure_matmul_flops(1.0, torch.bfloat16, device, size=8192)
        info["spec_bf16_flops"] = next((v for k, v in SPEC_BF16_FLOPS.items() if k in name), None)
    else:
        info["name"] = "cpu"
        info["bf16_matmul_flops"] = measure_matmul_flops(0.5, torch.float32, device, size=512)
        info["spec_bf16_flops"] = None
    return info


def mfu(flops_per_s: float, card_info: dict) -> dict:
    out = {"model_flops_per_s": flops_per_s,
           "of_measured_matmul": flops_per_s / card_info["bf16_matmul_flops"]}
    if card_info.get("spec_bf16_flops"):
        out["of_spec_peak"] = flops_per_s / card_info["spec_bf16_flops"]
    return out


def run(args: argparse.Namespace) -> dict:
    import torch

    from headrot.model.flops import count_flops
    from headrot.model.sampler import noise_for_seeds, reverse_diffusion
    from headrot.model.unet import PRESETS
    from headrot.report.grid import image_grid, png_bytes, to_uint8
    from headrot.report.plots import loss_curve

    if args.batch > args.images:
        raise SystemExit(f"bench.gpu: --batch {args.batch} is more than --images {args.images}: no whole batch to train on")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out / "gpu.json")
    config = PRESETS[args.preset]
    size = config.image_size
    deadline = args.budget - args.reserve  # training stops here; export and the rates follow

    # 2 (started first: the workers render while the card is measured and the network compiles)
    processes = max(1, (os.cpu_count() or 2) - 1)
    synth_start = time.perf_counter()
    pool, pending = start_synth(args.images, size, args.seed, processes)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels once
    else:
        torch.set_num_threads(1)  # the other core renders faces
    info = card(device)
    flops = count_flops(config)
    report.put("card", info)
    report.put("settings", {**vars(args), "forward_flops_per_image": flops,
                            "train_flops_per_sample": 3 * flops, "synth_processes": processes})

    # 3: on random images of the right shape while the faces render
    trainer = Trainer(config, device, args.lr, args.p2_gamma, args.ema_decay, args.seed, args.compile)
    random_u8 = torch.randint(0, 256, (args.batch, size, size, 3), dtype=torch.uint8, device=device)
    probe = eager_probe(trainer, random_u8, args.probe_s)
    probe["mfu"] = mfu(probe["samples_per_s"] * 3 * flops, info)
    report.put("eager", probe)

    t = time.perf_counter()
    if args.compile:  # warm-up: forward + backward compiled once, no optimizer step on the weights
        from headrot.train.steps import generator_loss, to_model_images

        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = generator_loss(trainer.model, to_model_images(random_u8, device),
                                  torch.Generator(device=device).manual_seed(2), p2_gamma=args.p2_gamma)
        loss.backward()
        trainer.optimizer.zero_grad(set_to_none=True)
        sync(device)
    report.put("compile", {"enabled": args.compile, "warmup_s": time.perf_counter() - t})

    faces = np.concatenate(pending.get())
    pool.close()
    pool.join()
    report.put("data", {"images": len(faces), "identities": math.ceil(len(faces) / IMAGES_PER_IDENTITY),
                        "size": size, "processes": processes, "seconds": time.perf_counter() - synth_start,
                        "images_per_s": len(faces) / (time.perf_counter() - synth_start)})
    (out / "data.png").write_bytes(png_bytes(image_grid(faces[:32], nrow=8, upscale=max(1, 64 // size))))
    data = torch.from_numpy(faces).to(device)

    # 4
    history: list[dict] = []
    shuffle = torch.Generator().manual_seed(args.seed)
    stream = batches(data, args.batch, shuffle)
    losses = []
    sync(device)
    train_start = time.perf_counter()
    steady_start, steady_steps = None, 0
    while report.elapsed() < deadline:
        losses.append(trainer.train_step(next(stream)))
        if trainer.step == args.settle_steps:  # the compiled graph's first calls are not steady
            sync(device)
            steady_start, steady_steps = time.perf_counter(), trainer.step
        if trainer.step % args.log_every == 0:
            loss = float(torch.stack(losses).mean())
            losses = []
            history.append({"epoch": trainer.step * args.batch / len(faces), "step": trainer.step, "loss": loss,
                            "elapsed_s": report.elapsed()})
            if trainer.step % (args.log_every * 10) == 0:
                print(f"step {trainer.step} loss {loss:.4f} at {report.elapsed():.0f} s", flush=True)
    sync(device)
    end = time.perf_counter()
    steady = None
    if steady_start is not None and trainer.step > steady_steps:
        steady = (trainer.step - steady_steps) * args.batch / (end - steady_start)
    train = {"steps": trainer.step, "samples": trainer.step * args.batch, "seconds": end - train_start,
             "epochs": trainer.step * args.batch / len(faces), "samples_per_s_all": trainer.step * args.batch / (end - train_start),
             "samples_per_s_steady": steady, "final_loss": history[-1]["loss"] if history else None,
             "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}
    if steady:
        train["mfu"] = mfu(steady * 3 * flops, info)
    report.put("train", train)
    report.put("history", history)

    # 5
    ema = trainer.ema.module.eval()
    parts = export_parts(out, ema, config)
    model_uri = str(Path(tempfile.mkdtemp(prefix="gpu-model-")) / "model.pt")
    join_parts(model_uri, [str(out / p["file"]) for p in parts])
    with torch.inference_mode():
        noise = noise_for_seeds(list(range(args.seed, args.seed + 64)), (3, size, size), device=device)
        samples = reverse_diffusion(ema, noise, steps=10)
    (out / "samples.png").write_bytes(png_bytes(image_grid(to_uint8(samples), nrow=8, upscale=max(1, 64 // size))))
    if history:
        (out / "loss_curve.png").write_bytes(loss_curve(
            history, f"{args.preset} network on {len(faces):,} synthetic faces ({info['name']})",
            f"loss (P2-weighted L1 on the noise, gamma {args.p2_gamma:g})" if args.p2_gamma else "loss (L1 on the noise)"))
    report.put("export", {"parts": parts})

    # 6
    from bench import common

    if args.render_root:
        r = render_rate(args.render_root, model_uri, args.render_batch, args.render_limit)
        calls = common.calls_per_image("render", 10)
        r["calls_per_image"] = calls
        r["model_only_images_per_s"] = r["renders"] / r["model_s"]
        r["mfu_model_only"] = mfu(r["model_only_images_per_s"] * calls * flops, info)
        report.put("render", r)
    data_dir = tempfile.mkdtemp(prefix="gpu-faces-")
    from headrot.synth.writer import write_synthetic_celeba

    write_synthetic_celeba(data_dir, args.embed_images, seed=args.seed + 1)
    e = embed_rate(data_dir, model_uri, args.embed_batch, args.embed_images)
    calls = common.calls_per_image("inversion", 10)
    e["calls_per_image"] = calls
    e["model_only_images_per_s"] = e["images"] / e["model_s"]
    e["mfu_model_only"] = mfu(e["model_only_images_per_s"] * calls * flops, info)
    report.put("embed", e)
    report.put("done", True)
    return report.data


# ---------------------------------------------------------------------------
# CLI


def prepare_render(root: str, preset: str, sources: int) -> None:
    """bench.render's inputs (latents in the embed schema, the fit's trajectories) without the
    generator: the device writes its trained one there."""
    from bench import common
    from bench.render import prepare
    from headrot.layout import RunLayout

    common.ray_init()
    prepare(root, sources, preset, n_files=2)
    os.remove(RunLayout(root).model("generator"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="the device script")
    r.add_argument("--out", required=True)
    r.add_argument("--preset", default="paper")
    r.add_argument("--images", type=int, default=48_000, help="synthetic faces to train on (10 per identity)")
    r.add_argument("--budget", type=float, default=330.0, help="seconds for the whole run")
    r.add_argument("--reserve", type=float, default=75.0, help="seconds kept after training: export, render, embed")
    r.add_argument("--batch", type=int, default=256)
    r.add_argument("--lr", type=float, default=1e-3)
    r.add_argument("--p2-gamma", type=float, default=2.0, help="the shipped demo model's weighting")
    r.add_argument("--ema-decay", type=float, default=0.999)
    r.add_argument("--seed", type=int, default=3)
    r.add_argument("--no-compile", dest="compile", action="store_false")
    r.add_argument("--probe-s", type=float, default=8.0)
    r.add_argument("--settle-steps", type=int, default=20)
    r.add_argument("--log-every", type=int, default=25)
    r.add_argument("--render-root", default=None)
    r.add_argument("--render-batch", type=int, default=512)
    r.add_argument("--render-limit", type=int, default=None)
    r.add_argument("--embed-images", type=int, default=512)
    r.add_argument("--embed-batch", type=int, default=256)
    pr = sub.add_parser("prepare-render", help="the render benchmark's inputs, here (Ray)")
    pr.add_argument("--root", required=True)
    pr.add_argument("--preset", default="paper")
    pr.add_argument("--sources", type=int, default=512)
    j = sub.add_parser("join", help="a generator checkpoint from the parts a run brought back")
    j.add_argument("model")
    j.add_argument("parts", nargs="+")
    args = p.parse_args(argv)
    if args.command == "run":
        run(args)
    elif args.command == "prepare-render":
        prepare_render(args.root, args.preset, args.sources)
    else:
        print(join_parts(args.model, args.parts))


if __name__ == "__main__":
    main()
