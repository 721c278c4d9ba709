"""The shipped yaw generator's training as the pipeline sees it: each judged file's demo figures
against its step.

    python -m bench.pipeline_curve ROOT ROOT ... [--method yaw-cal-colour] [--to docs/figures/yaw-generator-pipeline.png]

Each ROOT is a demo root (or a copy of one) that rendered and evaluated one checkpoint of the yaw
generator: `headrot render --config configs/demo.yaml --root R --data R/data --methods
yaw-cal-colour,no_move` with the file in R/checkpoints/generator_yaw/model.pt, then `headrot
evaluate --root R` (README, Models). The file's own record (`extra.yaw_conditioned`: probe, step,
weights, written by `bench.yaw_conditioned export`) places the point; the render stage's recorded
config says how it was drawn (pivotal tuning and colour guidance on or off), since both move
every figure. The probe judge's curve (`bench.yaw_conditioned curve`,
docs/figures/yaw-generator-curve.png) covers the steps before the files were judged in the pipeline.
"""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from bench.latent import yardstick

PRIMARY = "yaw-cal-colour"
FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "yaw-generator-pipeline.png"


def point(root: str, method: str = PRIMARY) -> dict:
    """One root's checkpoint (probe, step, weights), how it was drawn and the yardstick of `method`."""
    import pandas as pd
    import torch

    from headrot import storage

    root = root.rstrip("/")
    config = json.loads(storage.read_bytes(f"{root}/run.json"))["stages"]["render"]["config"]
    generator = config.get("yaw_generator") or f"{root}/checkpoints/generator_yaw/model.pt"
    extra = torch.load(io.BytesIO(storage.read_bytes(generator)), map_location="cpu",
                       weights_only=True).get("extra", {}).get("yaw_conditioned")
    if not extra or "step" not in extra:
        raise ValueError(f"{generator}: the file records no training step (extra.yaw_conditioned); "
                         "export it with `python -m bench.yaw_conditioned export`")
    metrics = pd.read_parquet(f"{root}/report/metrics.parquet")
    return {"root": root, "probe": extra.get("probe"), "step": int(extra["step"]),
            "weights": extra.get("weights", "net"), "pivotal_steps": int(config.get("pivotal_steps") or 0),
            # render.colour_guidance_steps, 2 by default (absent from roots older than the option)
            "colour_guidance_steps": int(config.get("colour_guidance_steps", 2)),
            "sources": int(metrics[metrics.method == method].source_id.nunique()), **yardstick(metrics, method)}


def draw(points: list[dict], to: Path, method: str = PRIMARY) -> None:
    """Pose, worst PSNR gain over no_move and colour PSNR at +-20/30 against the step; filled markers
    for files drawn untuned, hollow for tuned copies, red where the colour guidance was off."""
    from headrot.report.plots import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    panels = ((lambda p: p["pose_error_deg_median"], "median pose error (deg)"),
              (lambda p: min(p["psnr_gain_db_by_delta"].values()), "worst PSNR gain over no_move (dB)"),
              (lambda p: p.get("colour_psnr_db_far"), "colour PSNR at +-20/30 (dB)"))
    styles = {"net": ("o", "C0"), "ema": ("s", "C1")}     # marker and colour by the weights exported

    def kind(p: dict) -> tuple:
        return p["weights"], p["pivotal_steps"] > 0, p["colour_guidance_steps"] > 0

    for ax, (value, label) in zip(axes, panels):
        for weights, tuned, guided in sorted({kind(p) for p in points}):
            mine = sorted((p for p in points if kind(p) == (weights, tuned, guided)), key=lambda p: p["step"])
            marker, colour = styles.get(weights, ("^", "C2"))
            ax.plot([p["step"] for p in mine], [value(p) for p in mine], ls="-" if tuned else "--",
                    marker=marker, color=colour if guided else "C3", mfc="none" if tuned else None,
                    label=f"{weights} weights, {'tuned per face' if tuned else 'untuned'}"
                          f"{'' if guided else ', colour guidance off'}")
        ax.set_xlabel("training steps of the file")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"The yaw generator's checkpoints in the demo pipeline ({method}, "
                 f"{points[0]['sources']} test faces each)", fontsize=10)
    fig.tight_layout()
    to.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(to, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="+", help="evaluated demo roots, one checkpoint each")
    ap.add_argument("--method", default=PRIMARY)
    ap.add_argument("--to", default=str(FIGURE), help="the PNG written")
    args = ap.parse_args(argv)
    points = [point(r, args.method) for r in args.roots]
    draw(points, Path(args.to), args.method)
    for p in sorted(points, key=lambda p: (p["step"], p["pivotal_steps"])):
        print(json.dumps({k: p.get(k) for k in ("root", "probe", "step", "weights", "pivotal_steps",
                                                "colour_guidance_steps", "pose_error_deg_median", "psnr_gain_db_by_delta",
                                                "colour_psnr_db_far", "iqr_at_20_deg")}))
    return points


if __name__ == "__main__":
    main()
