"""The latent-quality benchmark: does a generator's latent space turn heads, and keep them?

    python -m bench.latent [--generator CKPT] [--root runs/latent] [--methods m1,m2 | --grid]
                           [--limit 32] [--results DIR]

Runs the demo job (configs/demo.yaml: the same synthetic data, embedding, samples, fit and
render settings) with the given generator checkpoint (default: the shipped demo model) into
its own run root, then reads the evaluation's per-render table (report/metrics.parquet) and
gives, per method:

    slope        least squares (through 0) of the achieved yaw change on the intended delta,
                 both read by the evaluation's judge (target 1.0 +- 0.1)
    iqr_at_20    the per-face spread (IQR) of the achieved change at -20 and at +20, averaged (target <= 5)
    pose_error   median |judged yaw - true target yaw| over deltas in [-30, 30] (target <= 5)
    psnr_gain    mean PSNR vs ground truth minus no_move's, at |delta| >= 10 (target > 0 at every
                 such delta: `beats_no_move`)
    identity     identity top-1 over all deltas (target >= 0.9)
    colour_faults  the share of renders at |delta| >= 20 with over 3% of their pixels in colours
                 their source lacks (the evaluation's colour faults; ground-truth turns: none)
and, per generator, `sample_fd`: the Frechet distance between the judge's convolutional features
(256-d, before its head) of 600 of the generator's samples and of the data set's 1,200 images
(what FID does with Inception features, at the scale of a 32x32 synthetic set; lower is closer),
beside `sample_fd_floor`, the same distance between two halves of the data (what no generator beats).

`--grid` renders every variant of the ablation (direction source x ortho x norm x calibration)
beside the baselines: at --limit 16 its render took 24 min on 2 cores shared with a demo run
(plus the embed, samples and evaluate of a new root, ~8 min). A rerun with the same arguments
reuses the complete stages of its root. Writes bench/results/<name>.json (default latent.json,
the shipped model; a candidate: --name latent-<candidate>).
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from bench import common
from headrot.evaluate.aggregate import fault_rate

ROOT = Path(__file__).resolve().parent.parent
BASELINES = ["headrot", "no_move", "light_agnostic", "single_direction", "centroid_path"]
# The local moves follow the mean reading of the labeller and three more networks of its kind (other
# seeds): one network's gradient paints what that network alone reads as a turn (white patches,
# smears; +0.3 to +0.6 dB at every delta, bench/NOTES.md). The demo renders no local method since
# 2026-12-02 and trains none of them; a benchmark that renders one trains these, as the demo did.
STEER_SEEDS = [2000201, 2000301, 2000401]
# The generator's samples the samples-* methods' lines are fitted on (the demo's count until 2026-12-02).
GRID_SAMPLES = 2000


def grid_methods() -> list[str]:
    """Every <source>[-ortho][-norm][-cal] of the render stage, then the baselines."""
    out = []
    for source in ("local", "samples", "embeddings"):
        for flags in itertools.product((False, True), repeat=3):
            name = "-".join([source, *[f for f, on in zip(("ortho", "norm", "cal"), flags) if on]])
            if name != "embeddings":          # that one is `headrot`
                out.append(name)
    return out + BASELINES


def yardstick(metrics, method: str) -> dict:
    """The benchmark's figures for one method from the evaluation's per-render table (pandas)."""
    mine = metrics[metrics.method == method]
    base = metrics[metrics.method == "no_move"]
    zero = mine[mine.delta == 0].set_index("source_id").estimated_yaw
    achieved = mine.estimated_yaw.values - zero.reindex(mine.source_id).values
    d = mine.delta.values.astype(float)
    ok = np.isfinite(achieved) & (d != 0)
    slope = float((achieved[ok] * d[ok]).sum() / (d[ok] ** 2).sum()) if ok.any() else None
    # The spread over faces at each of -20 and +20 (not pooled: the two signs differ by 40), averaged.
    spreads = [float(np.subtract(*np.percentile(achieved[ok & (d == x)], [75, 25])))
               for x in (-20.0, 20.0) if (ok & (d == x)).any()]
    iqr20 = float(np.mean(spreads)) if spreads else None
    far = [x for x in sorted(set(mine.delta)) if abs(x) >= 10]
    gains = {int(x): round(float(mine[mine.delta == x].psnr_db.mean() - base[base.delta == x].psnr_db.mean()), 3)
             for x in far if len(base)}
    return {
        "slope": None if slope is None else round(slope, 3),
        "iqr_at_20_deg": None if iqr20 is None else round(iqr20, 2),
        "pose_error_deg_median": round(float(mine[mine.delta.abs() <= 30].pose_error_deg.median()), 2),
        "psnr_gain_db_by_delta": gains,
        "beats_no_move": bool(gains) and all(g > 0 for g in gains.values()),
        "identity_top1": round(float(mine.identity_top1.mean()), 4),
        "psnr_db_far": round(float(mine[mine.delta.abs() >= 10].psnr_db.mean()), 2),
        **({"colour_fault_rate_far": fault_rate(mine[mine.delta.abs() >= 20].novel_colour_share, digits=3)}
           if "novel_colour_share" in mine else {}),
        # The colours against the ground truth region by region: what judges a render mapped onto its
        # source's colours (colour_map transport), which the novel-colour count cannot.
        **({"colour_psnr_db_far": round(float(mine[mine.delta.abs() >= 20].colour_psnr_db.mean()), 2)}
           if "colour_psnr_db" in mine and mine.colour_psnr_db.notna().any() else {}),
    }


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets [N, D]."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(s_a @ s_b, disp=False)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * np.real(root)))


def generator_samples(generator: str, n: int = 600) -> np.ndarray:
    """uint8 [n,S,S,3]: n samples of an (unconditional) generator checkpoint, 10 DDIM steps."""
    import torch

    from headrot.model.checkpoint import load_model
    from headrot.model.sampler import reverse_diffusion
    from headrot.report.grid import to_uint8

    model, config, _ = load_model(generator, "generator")
    noise = sample_noise(n, config.image_size)
    with torch.inference_mode():
        return np.concatenate([to_uint8(reverse_diffusion(model, noise[s:s + 100], steps=10))
                               for s in range(0, n, 100)])


def labelled_yaws(root: str, n: int) -> np.ndarray:
    """n yaws drawn (seeded) from the root's labelled ones (its latents; NaN labels never): what a
    yaw-conditioned generator's FD samples are drawn under, the data's own spread."""
    import pyarrow.parquet as pq

    yaws = np.concatenate([pq.read_table(f, columns=["yaw"]).column("yaw").to_numpy()
                           for f in sorted(Path(root, "latents").glob("part-*.parquet"))])
    return np.random.default_rng(0).choice(yaws[np.isfinite(yaws)], n).astype(np.float32)


def yaw_generator_samples(generator: str, root: str, n: int = 600) -> np.ndarray:
    """uint8 [n,S,S,3]: a yaw-conditioned generator checkpoint's samples from the FD noise, each
    under a yaw of the root's labels (`labelled_yaws`)."""
    import torch

    from headrot.model.checkpoint import load_model
    from headrot.model.conditioning import at_yaw
    from headrot.model.sampler import reverse_diffusion
    from headrot.report.grid import to_uint8

    model, config, _ = load_model(generator, "generator")
    noise, yaws = sample_noise(n, config.image_size), labelled_yaws(root, n)
    with torch.inference_mode():
        return np.concatenate([to_uint8(reverse_diffusion(at_yaw(model, yaws[s:s + 100]), noise[s:s + 100], steps=10))
                               for s in range(0, n, 100)])


def reconstruction_psnr(root: str, method: str, data: str) -> float | None:
    """Mean PSNR (dB) of `method`'s delta-0 renders (rotated/) against their source images: the
    embedding PSNR of a method that embeds its sources itself (yaw: the conditional inversion)."""
    import io

    import pyarrow.compute as pc
    from PIL import Image

    from headrot import storage, tables
    from headrot.data.images import decode_face

    values = []
    for f in storage.list_files(f"{root}/rotated", ".parquet"):
        t = tables.read_parquet(f)
        t = t.filter(pc.and_(pc.equal(t.column("method"), method), pc.equal(t.column("delta"), 0)))
        for source, image in zip(t.column("source_id").to_pylist(), t.column("image").to_pylist()):
            render = np.asarray(Image.open(io.BytesIO(image["bytes"])).convert("RGB"), np.float64)
            truth = decode_face(storage.read_bytes(f"{data}/img_align_celeba/{source}"), render.shape[0]).astype(np.float64)
            values.append(10 * np.log10(255.0 ** 2 / max(((render - truth) ** 2).mean(), 1e-10)))
    return round(float(np.mean(values)), 2) if values else None


def sample_noise(n: int, size: int):
    """x_T of the FD samples: seeds far from the samples stage's and the training's draws."""
    from headrot.model.sampler import noise_for_seeds

    return noise_for_seeds(list(range(7_000_000, 7_000_000 + n)), (3, size, size))


def sample_fd(root: str, report: dict, samples, data: str) -> dict[str, float | None]:
    """The Frechet distance of the judge's features between `samples` (uint8 [N,S,S,3], or a
    function that draws them, called only when the root has a judge) and the images of `data`
    (preprocessed like the model's input), and between two halves of the data."""
    import torch

    from headrot import storage
    from headrot.data.images import decode_face
    from headrot.labels.pose import PoseConfig, YawEstimator, to_model
    from headrot.stages.evaluate import EvaluateConfig

    pe, ec = report["pose_estimator"], EvaluateConfig(root=root)
    judge = YawEstimator.load(f"{root}/report/yaw_estimator.npz", PoseConfig(
        size=pe["image_size"], seed=pe["seed"], n_identities=ec.pose_identities, per_identity=ec.pose_per_identity,
        n_heldout=ec.pose_heldout, epochs=ec.pose_epochs))
    if judge is None:
        return {"sample_fd": None, "sample_fd_floor": None}
    samples = samples() if callable(samples) else samples
    size = samples.shape[1]
    with torch.inference_mode():
        files = storage.list_files(storage.join(data, "img_align_celeba"), ".jpg")
        real = np.stack([decode_face(storage.read_bytes(f), size) for f in files])
        # The conv features, flattened (256-d): the 64-d layer after them has dead ReLU units.
        features = judge.net[:-3]
        a, b = (features(to_model(x)).numpy().astype(np.float64) for x in (samples, real))
    return {"sample_fd": round(frechet_distance(a, b), 4),
            "sample_fd_floor": round(frechet_distance(b[::2], b[1::2]), 4)}


def yaw_generator_provenance(checkpoint: str) -> str:
    """What the root's yaw-conditioned generator is, from the record `bench.yaw_conditioned export`
    writes into the file (probe, step, command), so the table's row names the file it measured."""
    from headrot.model.checkpoint import load_model

    _, _, extra = load_model(checkpoint, "generator")
    made = extra.get("yaw_conditioned") or {}
    if not made:
        return f"the yaw-conditioned generator {checkpoint} (no export record)"
    return (f"its yaw-conditioned fine-tune ({made.get('probe')}'s {made.get('weights')} weights, "
            f"{made.get('step'):,} steps; `{made.get('made_by')}`)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--generator", default=None, help="generator checkpoint (default: the shipped demo model)")
    ap.add_argument("--root", default="runs/latent")
    ap.add_argument("--methods", default=None, help="comma-separated render methods (default: the demo's)")
    ap.add_argument("--grid", action="store_true", help="every variant of the ablation and the baselines")
    ap.add_argument("--limit", type=int, default=None, help="sources (default: the demo's)")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--name", default="latent", help="results file name (default latent: the shipped model)")
    args = ap.parse_args()

    import pandas as pd

    from headrot.cli import exit_process
    from headrot.commands._common import init_ray
    from headrot.config import from_mapping, load_yaml
    from headrot.pipeline import PipelineConfig, run_pipeline
    from headrot.stages.render import RenderConfig

    config = load_yaml(ROOT / "configs" / "demo.yaml")
    config["out"] = args.root
    if args.generator:
        config["generator"] = args.generator
    render = dict(config.get("render", {}))
    if args.grid:
        render["methods"] = grid_methods()
    elif args.methods:
        render["methods"] = [m for m in args.methods.split(",") if m]
    if args.limit:
        render["limit"] = args.limit
    config["render"] = render
    if any(m.split("-")[0] == "local" for m in render["methods"]):
        config["samples"] = {**config.get("samples", {}), "steer_seeds": STEER_SEEDS}
    if RenderConfig(root=args.root, methods=tuple(render["methods"])).needs_sample_lines():
        # the samples-* lines, and every -ortho step's nuisances, come from the generator's own
        # samples, which the demo does not draw
        config["samples"] = {**config.get("samples", {}), "n": GRID_SAMPLES}
        config["fit"] = {**config.get("fit", {}), "sources": ["embeddings", "samples"]}
    started = time.time()
    # As `headrot run` does: a root whose embed stage is already complete starts no Ray Data
    # pipeline before the render stage sizes its actor pool from the cluster's resources.
    init_ray()
    summary = run_pipeline(from_mapping(PipelineConfig, config, "bench.latent"))
    metrics = pd.read_parquet(f"{args.root}/report/metrics.parquet")
    report = json.loads(Path(f"{args.root}/report/report.json").read_text())
    rows = {m: yardstick(metrics, m) for m in render["methods"]}
    generator = args.generator or str(ROOT / "headrot" / "assets" / "demo_generator.pt")
    data = config.get("data") or f"{args.root}/data"
    primary = (config.get("evaluate") or {}).get("primary")
    # A yaw primary draws with the yaw-conditioned generator: its samples (under the data's yaws)
    # and its own inversion are the row's sample FD and embedding PSNR; the plain one's beside them.
    yaw_primary = primary is not None and primary.split("-")[0] == "yaw"
    yaw_generator = f"{args.root}/checkpoints/generator_yaw/model.pt"
    fd = sample_fd(args.root, report, (lambda: yaw_generator_samples(yaw_generator, args.root)) if yaw_primary
                   else (lambda: generator_samples(generator)), data)
    result = {
        "generator": (args.generator or "headrot/assets/demo_generator.pt (shipped)")
        + (" + " + yaw_generator_provenance(yaw_generator) if yaw_primary else ""),
        "root": args.root,
        "sources": report["summary"]["n_sources"],
        "judge": {k: report["pose_estimator"].get(k) for k in ("kind", "seed", "mae_deg_heldout", "model")},
        "labeller": report["pose_estimator"].get("labeller"),
        "reader": report["pose_estimator"].get("reader"),
        "steerers": report["pose_estimator"].get("steerers"),
        "primary": primary,
        "methods": rows,
        **fd,
        **({"sample_fd_plain_generator": sample_fd(args.root, report, lambda: generator_samples(generator),
                                                   data)["sample_fd"]} if yaw_primary else {}),
        "embedding_psnr_db": reconstruction_psnr(args.root, primary, data) if yaw_primary
        else report["summary"].get("embedding_psnr_db"),
        **({"embedding_psnr_db_plain_generator": report["summary"].get("embedding_psnr_db")} if yaw_primary else {}),
        "decodes_per_render": (summary.get("render") or {}).get("decodes_per_render"),
        "seconds": round(time.time() - started, 1),
        "command": "python -m bench.latent " + " ".join(
            x for x in (f"--generator {args.generator}" if args.generator else "", f"--root {args.root}",
                        "--grid" if args.grid else (f"--methods {args.methods}" if args.methods else ""),
                        f"--limit {args.limit}" if args.limit else "",
                        f"--name {args.name}" if args.name != "latent" else "") if x),
    }
    common.write_result(args.name, result, Path(args.results))  # prints it too
    exit_process(0)


if __name__ == "__main__":
    main()
