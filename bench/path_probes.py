"""Where do the breaks come from? Paths the render stage does not take, measured like its own.

    python -m bench.path_probes oracle NAME [--root runs/demo] [--k 4] [--slerp]
    python -m bench.path_probes warp NAME [--root runs/demo] [--k 4] [--gain 1] [--radius 1.35]

Both render the root's test faces (the ones its rotated table holds) at its deltas, write them
beside the root's default-method and no_move renders into runs/probes/NAME/part-00000.parquet,
measure all with the evaluate stage's `measure` and judge, print bench.latent's yardstick per
method, and save a contact sheet of the faces the eye labelled (bench/results/eye-breaks.json)
as runs/probes/NAME/sheet.png.

- `oracle` (synthetic data only: it needs the ground truth): `oracle-points` is the generator's
  reconstruction of the true turned head (the embed stage's inversion of the ground truth at each
  target, decoded): can the generator draw the turned head at all? `oracle-line` walks the
  straight line (or great circle, --slerp) at step k of the sampler's path from the source's
  latent to the inversion of its ground truth at -30 or +30, a third of the way per 10 degrees:
  is the path between two good latents clean?
- `warp` (rotate-and-clean, as Rotate-and-Render): the sampler's path point at step k of the
  source is warped as the texture of a sphere turned by delta x gain (centred on the crop, at eye
  height, radius `radius` x the frontal eye distance from the landmarks), renormalised to its
  norm, and the remaining steps decode it.

What they found is in bench/NOTES.md ("The generator can draw the turned heads; no path to them
on this model is clean").
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# What a probe's renders are shown and measured beside: the demo's default (a root made before
# 2026-12-01 lacks it: run `make demo` again).
PRIMARY = "yaw-cal-colour"


def root_rows(root: str):
    """The root's rendered rows of the default method and no_move (the template of every probe row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from headrot import tables

    wanted = pa.array([PRIMARY, "no_move"])
    return pa.concat_tables([t.filter(pc.is_in(t.column("method"), value_set=wanted)) for t in
                             (tables.read_parquet(str(f)) for f in sorted(Path(root, "rotated").glob("part-*.parquet")))])


def latents_of(root: str, ids: set[str], columns=("landmarks", "yaw")) -> dict[str, dict]:
    import pyarrow.parquet as pq

    out = {}
    for f in sorted(Path(root, "latents").glob("part-*.parquet")):
        t = pq.read_table(f, columns=["image_id", *columns, "latent"])
        lat = t.column("latent").combine_chunks().to_numpy_ndarray()
        for row, z in zip(t.drop(["latent"]).to_pylist(), lat):
            if row["image_id"] in ids:
                out[row["image_id"]] = {**row, "latent": z}
    return out


def oracle(net, size: int, root: str, sources: list[str], deltas: list[int], k: int, slerp: bool) -> dict[str, dict]:
    """{method: {(source, delta): uint8 image}} for oracle-points and oracle-line."""
    import pyarrow.parquet as pq
    import torch

    from headrot.evaluate.truth import GroundTruth
    from headrot.model.embedding import embed
    from headrot.model.sampler import advance, reverse_diffusion
    from headrot.report.grid import to_uint8

    truth = GroundTruth(pq.read_table(f"{root}/data/truth.parquet"), size)
    order = sorted(sources)
    lat = latents_of(root, set(order))
    z = torch.from_numpy(np.stack([lat[s]["latent"] for s in order])).float()

    def inverted(delta):
        x = torch.from_numpy(np.stack([truth.render(s, delta) for s in order])).permute(0, 3, 1, 2).float() / 127.5 - 1
        return embed(x, "inversion", net, schedule=net.schedule).latents

    points, line = {}, {}
    with torch.no_grad():
        start = advance(net, z, 10, k)
        ends = {end: advance(net, inverted(end), 10, k) for end in (-max(deltas), max(deltas))}
        for d in deltas:
            points[d] = to_uint8(reverse_diffusion(net, inverted(d), 10, net.schedule))
            end = ends[max(deltas) if d > 0 else -max(deltas)]
            a = abs(d) / max(deltas)
            line[d] = to_uint8(reverse_diffusion(net, between(start, end, a, slerp), 10, net.schedule, start_step=k))
    return {"oracle-points": {(s, d): points[d][i] for d in deltas for i, s in enumerate(order)},
            f"oracle-{'slerp' if slerp else 'line'}-k{k}": {(s, d): line[d][i] for d in deltas for i, s in enumerate(order)}}


def between(a, b, t: float, slerp: bool):
    """The point a fraction t from a to b: on the straight line, or on the great circle (the
    usual interpolation of DDIM latents), each row on its own."""
    import torch

    if t in (0.0, 1.0) or not slerp:
        return a + t * (b - a)
    fa, fb = a.flatten(1), b.flatten(1)
    cos = ((fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1))).clamp(-1, 1)
    theta = torch.acos(cos).reshape(-1, *([1] * (a.ndim - 1)))
    return (torch.sin((1 - t) * theta) * a + torch.sin(t * theta) * b) / torch.sin(theta).clamp(min=1e-6)


def sphere_warp(x, landmarks, yaw: float, delta: float, radius: float, crop_top: float = 20.0, width: float = 178.0):
    """x [C,S,S] warped as the texture of a sphere turned by `delta` degrees (a positive delta moves
    features towards image left, the judge's sign). Landmarks are in the aligned image's pixels
    (178 x 218; the model sees the central square, rows 20..197)."""
    import torch
    import torch.nn.functional as F

    size = x.shape[-1]
    scale = size / width
    eye_y = ((landmarks[1] + landmarks[3]) / 2 - crop_top) * scale
    eyes = math.hypot(landmarks[2] - landmarks[0], landmarks[3] - landmarks[1]) * scale
    r = radius * eyes / max(math.cos(math.radians(yaw)), 0.5)    # the frontal eye distance
    cx, cy = size / 2, eye_y
    v, u = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    px, py = (u - cx) / r, (v - cy) / r
    inside = px ** 2 + py ** 2 < 1
    pz = torch.sqrt(torch.clamp(1 - px ** 2 - py ** 2, min=0))
    d = math.radians(-delta)
    sx = px * math.cos(d) - pz * math.sin(d)                      # where each output point was
    sz = px * math.sin(d) + pz * math.cos(d)
    rim = torch.sqrt(torch.clamp(1 - py ** 2, min=1e-12))
    sx = torch.where(sz < 0, torch.sign(sx) * rim, sx)            # from the back: the rim's texture
    us = torch.where(inside, cx + r * sx, u)
    grid = torch.stack([us / size * 2 - 1, v / size * 2 - 1], -1)[None]
    return F.grid_sample(x[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)[0]


def warp(net, root: str, sources: list[str], deltas: list[int], k: int, gain: float, radius: float):
    import torch

    from headrot.model.sampler import advance, reverse_diffusion
    from headrot.report.grid import to_uint8

    order = sorted(sources)
    lat = latents_of(root, set(order))
    z = torch.from_numpy(np.stack([lat[s]["latent"] for s in order])).float()
    out = {}
    with torch.no_grad():
        at_k = advance(net, z, 10, k) if k else z
        for d in deltas:
            moved = torch.stack([sphere_warp(x, lat[s]["landmarks"], lat[s]["yaw"], d * gain, radius)
                                 for x, s in zip(at_k, order)])
            moved = moved * (at_k.flatten(1).norm(dim=1) / moved.flatten(1).norm(dim=1)).reshape(-1, 1, 1, 1)
            images = to_uint8(reverse_diffusion(net, moved, 10, net.schedule, start_step=k))
            out.update({(s, d): images[i] for i, s in enumerate(order)})
    return {f"warp-k{k}-gain{gain:g}": out}


def root_sources(root: str) -> tuple[list[str], list[int]]:
    """The root's rendered test faces and its deltas (its no_move rows)."""
    base = [r for r in root_rows(root).to_pylist() if r["method"] == "no_move"]
    return sorted({r["source_id"] for r in base}), sorted({int(r["delta"]) for r in base})


def yaw_faces(root: str):
    """The shipped yaw generator (eval mode, 2 torch threads) and the root's rendered test faces as
    the yaw probes draw them: (net, config, sources, deltas, images uint8 [N,S,S,3], their labelled
    yaws float32 [N], images as a float tensor [N,3,S,S] in [-1, 1])."""
    import torch

    from headrot.data.images import decode_face
    from headrot.model.checkpoint import load_model

    torch.set_num_threads(2)
    net, config, _ = load_model(str(ROOT / "headrot" / "assets" / "demo_generator_yaw.pt"), "generator")
    net.eval()
    sources, deltas = root_sources(root)
    labelled = latents_of(root, set(sources), columns=("yaw",))
    images = np.stack([decode_face((Path(root) / "data" / "img_align_celeba" / s).read_bytes(), config.image_size)
                       for s in sources])
    yaw = torch.tensor([labelled[s]["yaw"] for s in sources], dtype=torch.float32)
    return net, config, sources, deltas, images, yaw, torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def print_by_delta(out: Path, report: dict[str, dict], methods: list[str]) -> None:
    """One JSON line per method: `measured`'s yardstick, and its mean PSNR and colour PSNR per delta
    (from out/metrics.parquet)."""
    import pandas as pd

    metrics = pd.read_parquet(out / "metrics.parquet")
    for method in [*methods, PRIMARY, "no_move"]:
        mine = metrics[metrics.method == method].groupby("delta")
        print(json.dumps({"method": method, **report[method],
                          "psnr_db_by_delta": mine.psnr_db.mean().round(2).tolist(),
                          "colour_psnr_db_by_delta": mine.colour_psnr_db.mean().round(2).tolist()}))


def measured(root: str, made: dict[str, dict], out: Path, image_size: int) -> dict[str, dict]:
    """Renders {method: {(source, delta): uint8 image}} of the root's test faces, measured as the
    evaluate stage measures its own: written beside the root's default and no_move rows to
    out/part-00000.parquet, read by its judge (out/metrics.parquet), bench.latent's yardstick per
    method returned (with `pose_by_target_yaw`, {band: [median pose error, the judge's on the
    truths]}, as the evaluate stage breaks it down), and a contact sheet of the eye-labelled faces
    (out/sheet.png: each method's row of deltas, then the default's)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from bench.latent import yardstick
    from headrot.config import from_mapping, load_yaml
    from headrot.evaluate.aggregate import by_target_yaw, columns
    from headrot.evaluate.measure import measure
    from headrot.layout import RunLayout
    from headrot.report.grid import image_grid, png_bytes
    from headrot.stages import evaluate as E

    template = root_rows(root)
    base = [r for r in template.to_pylist() if r["method"] == "no_move"]
    sources, deltas = root_sources(root)
    rows = [{**r, "method": method, "image": {"bytes": png_bytes(Image.fromarray(images[r["source_id"], int(r["delta"])])),
                                              "path": None}}
            for method, images in made.items() for r in base]
    uri = out / "part-00000.parquet"
    pq.write_table(pa.concat_tables([pa.Table.from_pylist(rows, schema=template.schema), template]), uri)
    evaluate = from_mapping(E.EvaluateConfig, {**(load_yaml(ROOT / "configs" / "demo.yaml").get("evaluate") or {}),
                                               "root": root, "data": f"{root}/data"}, "bench.path_probes")
    spec, _, _ = E._synthetic_judge(evaluate, f"{root}/data", sources, image_size, RunLayout(root).report)
    table = measure(0, str(uri), spec)[0]
    metrics = table.to_pandas()
    metrics.to_parquet(out / "metrics.parquet")
    # the evaluate stage's breakdown by |target yaw|: where the turn is far, the judge's floor beside it
    bands = by_target_yaw(columns(table))
    report = {}
    for method in [*made, PRIMARY, "no_move"]:
        moved = metrics[(metrics.method == method) & (metrics.delta != 0)]
        report[method] = {"pose_error_deg_median_nonzero": round(float(moved.pose_error_deg.median()), 3),
                          **yardstick(metrics, method),
                          "pose_by_target_yaw": {band: [f["pose_error_deg_median"], f["judge_on_truth_deg_median"]]
                                                 for band, f in bands.get(method, {}).items()}}
    labelled = json.loads((ROOT / "bench" / "results" / "eye-breaks.json").read_text())["faces"]
    shown = [s for s in sources if s[:6] in set(labelled)]
    originals = {(r["source_id"], int(r["delta"])): r["image"]["bytes"] for r in template.to_pylist() if r["method"] == PRIMARY}
    cells = []
    for s in shown:
        for images in made.values():
            cells += [images[s, d] for d in deltas]
        cells += [np.asarray(Image.open(io.BytesIO(originals[s, d])).convert("RGB")) for d in deltas]
    labels = [f"{m} {d:+d}" if d == deltas[0] else f"{d:+d}" for m in [*made, "default"] for d in deltas]
    image_grid(np.stack(cells), nrow=len(deltas) * (len(made) + 1), upscale=3, row_labels=shown,
               col_labels=labels).save(out / "sheet.png")
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("probe", choices=["oracle", "warp"])
    ap.add_argument("name")
    ap.add_argument("--root", default="runs/demo")
    ap.add_argument("--k", type=int, default=4, help="the step of the sampler's path that is moved")
    ap.add_argument("--slerp", action="store_true", help="oracle: the great circle, not the straight line")
    ap.add_argument("--gain", type=float, default=1.0, help="warp: the sphere turns by delta x gain")
    ap.add_argument("--radius", type=float, default=1.35, help="warp: sphere radius / frontal eye distance")
    args = ap.parse_args()

    import torch

    from headrot.layout import RunLayout
    from headrot.model.checkpoint import load_model

    torch.set_num_threads(2)
    out = ROOT / "runs" / "probes" / args.name
    out.mkdir(parents=True, exist_ok=True)
    sources, deltas = root_sources(args.root)
    # The root's own generator (a candidate's bench.latent root has its candidate there).
    net, config, _ = load_model(RunLayout(args.root).model("generator"), "generator")
    made = (oracle(net, config.image_size, args.root, sources, deltas, args.k, args.slerp) if args.probe == "oracle"
            else warp(net, args.root, sources, deltas, args.k, args.gain, args.radius))
    report = measured(args.root, made, out, config.image_size)
    print(json.dumps({"probe": args.probe, "name": args.name, "k": args.k, "methods": report}, indent=1, default=str))


if __name__ == "__main__":
    main()
