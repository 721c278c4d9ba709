"""What steers the local steps best? A quick A/B on a finished demo root, without re-running its stages.

    python -m bench.steer_probe NAME [--root runs/demo] [--steer SEED ...] [--labeller-alone]
                                [--smooth SIGMA [--smooth-draws M]] [--set KEY=JSON ...] [--limit N]

Renders the root's test faces with the demo's default method and no_move (configs/demo.yaml's render
settings, changed by --set, e.g. `--set local_lowpass=16`) into runs/probes/NAME, steering the local
steps by the root's own networks, by the labeller alone (--labeller-alone), or by the labeller and the
networks of the given seeds (--steer: trained here with the labeller's settings and cached in
runs/probes/steer-<seed>.npz); --smooth has them read each render through M fixed noisy copies
(SmoothGrad). Measures the renders with the evaluate stage's own `measure` and judge
(the root's report/yaw_estimator.npz) and prints bench.latent's yardstick for the method, plus the
median pose error over the nonzero deltas. `bench.compare_roots.compare` pairs two probes' metrics
(runs/probes/NAME/metrics.parquet).

One process, no Ray: the render stage's actor is built and called directly (`RenderShards(config)`),
so a probe of 32 faces takes ~1.5 minutes on 2 cores where a fresh `bench.latent` root takes 11-15.
A measuring tool (bench/NOTES.md, "Steering by four networks instead of one"): what it finds becomes a
default only after `make demo` and `bench.latent` measure it through the real stages.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.latent import yardstick

ROOT = Path(__file__).resolve().parents[1]
PRIMARY = "local-ortho-norm-cal-colour"


def render_config(root: str, out: str, changes: list[str], limit: int | None):
    from headrot.config import from_mapping, load_yaml
    from headrot.stages.render import RenderConfig

    render = dict(load_yaml(ROOT / "configs" / "demo.yaml")["render"])
    render["methods"] = [PRIMARY, "no_move"]
    if limit:
        render["limit"] = limit
    for change in changes:
        key, value = change.split("=", 1)
        render[key] = json.loads(value)
    return from_mapping(RenderConfig, {**render, "root": root, "out": out}, "bench.steer_probe")


def steering(actor, root: str, seeds: list[int], alone: bool, cache: Path):
    """What the actor's local steps follow: as the root says, the labeller alone, or with `seeds`."""
    from headrot.labels.pose import MeanReading, load_or_fit
    from headrot.stages.samples import SamplesConfig, labeller_config

    if alone:
        return actor.labeller
    if not seeds:
        return actor.steer
    base = labeller_config(SamplesConfig(root=root), actor.model_config.image_size)
    extra = [load_or_fit(str(cache / f"steer-{seed}.npz"), replace(base, seed=seed))[0] for seed in seeds]
    return MeanReading([actor.labeller, *extra])


class SmoothReading:
    """SmoothGrad steering: `inner`'s mean reading of the render plus each of `draws` fixed noise images
    (sd `sigma`, model range): its gradient is the mean of the gradients around the render, which
    averages down the patterns one point's gradient turns the reading with (bench/NOTES.md: it does
    not mend the breaks)."""

    def __init__(self, inner, sigma: float, draws: int, size: int, seed: int = 12_345):
        import torch

        self.inner, self.sigma = inner, sigma
        self.estimators = getattr(inner, "estimators", [inner])
        self.noise = torch.randn((draws, 3, size, size), generator=torch.Generator().manual_seed(seed))

    def differentiable(self, x):
        return sum(self.inner.differentiable(x + self.sigma * n.to(x.dtype)) for n in self.noise) / len(self.noise)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("--root", default="runs/demo", help="a root `make demo` (or bench.latent) completed")
    ap.add_argument("--steer", type=int, nargs="*", default=[], help="steer with the labeller and these seeds")
    ap.add_argument("--labeller-alone", action="store_true", help="steer with the labeller only")
    ap.add_argument("--smooth", type=float, default=0.0, help="SmoothGrad: noise sd (model range, 0: off)")
    ap.add_argument("--smooth-draws", type=int, default=8, help="SmoothGrad: noise draws per reading")
    ap.add_argument("--set", nargs="*", default=[], dest="changes", help="render settings, KEY=JSON")
    ap.add_argument("--limit", type=int, default=None, help="test faces (default: the demo's)")
    args = ap.parse_args()

    import pandas as pd

    from headrot import runs, tables
    from headrot.config import from_mapping, load_yaml
    from headrot.evaluate.measure import measure
    from headrot.layout import RunLayout
    from headrot.stages import evaluate as E
    from headrot.stages.render import RenderShards, plan_shards, write_shard

    started = time.time()
    probes = ROOT / "runs" / "probes"
    out = probes / args.name
    out.mkdir(parents=True, exist_ok=True)
    config = render_config(args.root, str(out), args.changes, args.limit)
    actor = RenderShards(config)
    actor.steer = steering(actor, args.root, args.steer, args.labeller_alone, probes)
    if args.smooth > 0:
        actor.steer = SmoothReading(actor.steer, args.smooth, args.smooth_draws, actor.model_config.image_size)
    files = runs.stage_files(RunLayout(args.root).latents, "render", "embed", rows_key="written")
    uris = []
    for item in plan_shards(config, files):
        row = actor({"latents_uri": np.array([item["latents_uri"]]), "take": np.array([item["take"]]),
                     "shard": np.array([item["shard"]])})
        write_shard({k: v[0] for k, v in row.items()}, str(out), str(out), "parquet")
        uris.append(str(out / f"{item['shard']}.parquet"))
    # The evaluate stage's judge, settings and independence check, on the root's cached judge.
    evaluate = from_mapping(E.EvaluateConfig, {**(load_yaml(ROOT / "configs" / "demo.yaml").get("evaluate") or {}),
                                               "root": args.root, "data": f"{args.root}/data"}, "bench.steer_probe")
    ids = sorted({s for u in uris for s in tables.read_parquet(u, columns=["source_id"]).column("source_id").to_pylist()})
    spec, _, _ = E._synthetic_judge(evaluate, f"{args.root}/data", ids, actor.model_config.image_size,
                                    RunLayout(args.root).report)
    metrics = pd.concat([measure(i, u, spec)[0].to_pandas() for i, u in enumerate(uris)], ignore_index=True)
    metrics.to_parquet(out / "metrics.parquet")
    moved = metrics[(metrics.method == PRIMARY) & (metrics.delta != 0)]
    steered_by = [e.config.seed for e in getattr(actor.steer, "estimators", [actor.steer])]
    print(json.dumps({"probe": args.name, "steering_seeds": steered_by, "smooth": args.smooth or None,
                      "render": args.changes, "sources": len(ids),
                      "pose_error_deg_median_nonzero": round(float(moved.pose_error_deg.median()), 3),
                      **yardstick(metrics, PRIMARY), "seconds": round(time.time() - started, 1)}, indent=2))


if __name__ == "__main__":
    main()
