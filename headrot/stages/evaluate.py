"""Stage 4, evaluate: rotated/ (+ the data root) -> report/report.json and report/report.html.

Reads every render of rotated/ (all methods and deltas), the sources from the data
root (preprocessed like the model's input), and, for a synthetic dataset, truth.parquet:

- pose error: |yaw of the render by an estimator independent of the latent space
  (headrot.labels.pose, fitted once on fresh synthetic identities and cached in
  report/yaw_estimator.npz) - (the source's true yaw + delta)|;
- PSNR / SSIM of each render against the ground-truth render (headrot.evaluate.truth);
- identity top-1 among every identity of the evaluated set in the same pose and light;
- embedding quality: the delta-0 reconstruction against the preprocessed source;
aggregated per method x delta and per method x light class, checked against the
project's targets. The report.json schema is in headrot.evaluate's docstring.

Real data (no truth.parquet): reconstruction PSNR/SSIM, and pose error from mediapipe
when it is installed (else a note says it was skipped and how to install it).

Runs in the driver process, no Ray: the work is a few ms per render (metrics) plus
one synthetic re-render per (source, delta, gallery identity), cached.
"""
from __future__ import annotations

import io
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from headrot import runs, storage, tables
from headrot.config import to_mapping
from headrot.evaluate import html as H
from headrot.evaluate import plots
from headrot.evaluate.metrics import psnr_batch, ssim_batch
from headrot.labels.pose import (MEDIAPIPE_HINT, PoseConfig, check_independent, load_or_fit, mediapipe_available,
                                 mediapipe_yaw)

log = logging.getLogger(__name__)

STAGE = "evaluate"
REPORT = "report"
BASELINES = ("no_move", "light_agnostic", "single_direction", "centroid_path")
LIGHTS = ("left", "center", "right")
POSE_TARGET_DEG = 5.0
POSE_TARGET_RANGE = 30
IDENTITY_TARGET = 0.90
BEAT_NO_MOVE_FROM = 10


@dataclass(frozen=True)
class EvaluateConfig:
    root: str                          # run root with rotated/
    data: str | None = None            # data root (default: run.json stages.embed.config.data)
    rotated: str | None = None         # rotated folder (default <root>/rotated)
    primary: str = "headrot"           # the method the summary and targets are about (when rendered)
    gallery_max: int = 64              # identities in an identity-retrieval gallery (own one included)
    pose_seed: int = 1_000_003         # the pose estimator's synthetic identities (must differ from the data's)
    pose_identities: int = 400         # pose estimator: training identities (x pose_per_identity renders)
    pose_per_identity: int = 6
    pose_heldout: int = 60             # held-out identities for its own error
    pose_epochs: int = 30
    cases: int = 3                     # rows each of best / median / worst in the cases sheet

    def __post_init__(self) -> None:
        if self.gallery_max < 2:
            raise ValueError("evaluate: gallery_max must be >= 2")
        if min(self.pose_identities, self.pose_per_identity, self.pose_heldout, self.pose_epochs) < 1:
            raise ValueError("evaluate: pose_* settings must be >= 1")
        if self.cases < 1:
            raise ValueError("evaluate: cases must be >= 1")

    def rotated_dir(self) -> str:
        return self.rotated or storage.join(self.root, "rotated")


# ---------------------------------------------------------------------------
# Inputs


def resolve_data(config: EvaluateConfig, run: dict) -> str:
    if config.data:
        return config.data
    data = (((run.get("stages") or {}).get("embed") or {}).get("config") or {}).get("data")
    if not data:
        raise ValueError(f"{runs.redact_uri(config.root)}/run.json records no embed stage data URI: "
                         "pass --data")
    return data


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def read_renders(rotated_dir: str) -> tuple[pa.Table, np.ndarray]:
    """The rotated table (without image bytes) and its images uint8 [N,S,S,3]."""
    # Every rotated file the render stage made, checked against its _SUCCESS (runs.stage_files).
    files = runs.stage_files(rotated_dir, STAGE, "render", rows_key="renders")
    cols = ["source_id", "delta", "target_yaw", "method", "identity", "yaw", "light", "image"]
    table = tables.read_parquet_files(files, columns=cols) if files else None
    if table is None or table.num_rows == 0:
        raise ValueError(f"{runs.redact_uri(rotated_dir)} holds no renders")
    data = table.column("image").combine_chunks().field("bytes").to_pylist()
    images = np.stack([decode_png(b) for b in data])
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"renders are {images.shape[1]}x{images.shape[2]}: expected square S x S images")
    return table.drop_columns(["image"]), images


def read_sources(data_uri: str, ids: list[str], size: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """Each source preprocessed like the model's input; plus notes for those that could not be read."""
    from headrot.data.images import ImageError, decode_face

    out, notes = {}, []
    for sid in ids:
        uri = storage.join(data_uri, "img_align_celeba", storage.safe_name(sid, "image id"))
        try:
            out[sid] = decode_face(storage.read_bytes(uri), size)
        except (ImageError, OSError) as exc:
            notes.append(f"source {sid}: {getattr(exc, 'reason', exc)}")
    return out, notes


# ---------------------------------------------------------------------------
# Aggregation


def _stat(values: np.ndarray, fn, digits: int = 3) -> float | None:
    v = values[np.isfinite(values)]
    return round(float(fn(v)), digits) if len(v) else None


def aggregate(m: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, Any]:
    return {
        "n": int(mask.sum()),
        "pose_error_deg_median": _stat(m["pose_error"][mask], np.median),
        "pose_error_deg_mean": _stat(m["pose_error"][mask], np.mean),
        "psnr_db": _stat(m["psnr"][mask], np.mean),
        "ssim": _stat(m["ssim"][mask], np.mean, 4),
        "identity_top1": _stat(m["top1"][mask], np.mean, 4),
        # The yaw change the judge reads against the same method's delta-0 render, and its spread
        # over faces (IQR): how evenly a method turns different heads.
        "achieved_yaw_deg_median": _stat(m["achieved"][mask], np.median),
        "achieved_yaw_deg_iqr": _stat(m["achieved"][mask], lambda v: np.subtract(*np.percentile(v, [75, 25]))),
    }


def achieved_yaw(est_yaw: np.ndarray, sid: np.ndarray, meth: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Estimated yaw of each render minus that of the same (source, method) at delta 0 (NaN without one)."""
    zero = {(s, m): y for s, m, d, y in zip(sid.tolist(), meth.tolist(), delta.tolist(), est_yaw) if d == 0}
    return np.array([y - zero.get((s, m), np.nan) for s, m, y in zip(sid.tolist(), meth.tolist(), est_yaw)])


def pick_primary(config: EvaluateConfig, methods: list[str]) -> str:
    if config.primary in methods:
        return config.primary
    own = [m for m in methods if m not in BASELINES]
    return own[0] if own else methods[0]


def _target(description, value, threshold, met, detail="") -> dict[str, Any]:
    return {"description": description, "value": value, "threshold": threshold,
            "met": None if met is None else bool(met), "detail": detail}


def evaluate_targets(primary: str, m: dict[str, np.ndarray], methods_report: dict, per_light: dict,
                     synthetic: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(targets, light_difference)."""
    meth, delta = m["method"], m["delta"]
    targets: dict[str, Any] = {}
    sel = (meth == primary) & (np.abs(delta) <= POSE_TARGET_RANGE)
    value = _stat(m["pose_error"][sel], np.median)
    targets["pose_error"] = _target(
        f"{primary}: median pose error <= {POSE_TARGET_DEG:g} deg over deltas in "
        f"[-{POSE_TARGET_RANGE}, {POSE_TARGET_RANGE}]", value, POSE_TARGET_DEG,
        None if value is None else value <= POSE_TARGET_DEG,
        "" if value is not None else "no pose measurement (see pose_estimator)")

    if not synthetic:
        reason = "needs ground truth (synthetic data)"
        targets["beats_no_move"] = _target("PSNR vs ground truth above no_move at every |delta| >= 10",
                                           None, None, None, reason)
        targets["light_conditioning"] = _target("light-conditioned at least as good as light_agnostic",
                                                None, None, None, reason)
        targets["identity"] = _target(f"identity top-1 >= {IDENTITY_TARGET:.0%}", None, IDENTITY_TARGET, None, reason)
        return targets, {}

    if "no_move" in methods_report and primary != "no_move":
        rows, ok = [], True
        for d, v in sorted(methods_report[primary].items(), key=lambda kv: int(kv[0])):
            base = methods_report["no_move"].get(d)
            if abs(int(d)) < BEAT_NO_MOVE_FROM or base is None or v["psnr_db"] is None:
                continue
            gain = v["psnr_db"] - base["psnr_db"]
            ok &= gain > 0
            rows.append((int(d), round(gain, 3)))
        worst = min((g for _, g in rows), default=None)
        targets["beats_no_move"] = _target(
            f"{primary}: PSNR vs ground truth above no_move at every |delta| >= {BEAT_NO_MOVE_FROM}",
            worst, 0.0, ok if rows else None,
            "PSNR gain over no_move by delta: " + ", ".join(f"{d:+d}: {g:+.2f} dB" for d, g in rows)
            if rows else f"no delta with |delta| >= {BEAT_NO_MOVE_FROM} rendered by both")
    else:
        targets["beats_no_move"] = _target("PSNR vs ground truth above no_move at every |delta| >= 10",
                                           None, 0.0, None, "no_move was not rendered (render --methods ...,no_move)")

    light_diff: dict[str, Any] = {}
    # The paper's claim (light-conditioned lines beat light-agnostic ones) is about its own method:
    # checked on `headrot` whatever the primary method is.
    paper = "headrot" if "headrot" in methods_report else primary
    if "light_agnostic" in methods_report and paper != "light_agnostic":
        far = np.abs(delta) >= BEAT_NO_MOVE_FROM
        a = _stat(m["psnr"][(meth == paper) & far], np.mean)
        b = _stat(m["psnr"][(meth == "light_agnostic") & far], np.mean)
        for light in LIGHTS:
            pa_, pb = per_light.get(paper, {}).get(light), per_light.get("light_agnostic", {}).get(light)
            if pa_ and pb and pa_["n"] and pb["n"]:
                light_diff[light] = {
                    "psnr_db": None if None in (pa_["psnr_db"], pb["psnr_db"]) else round(pa_["psnr_db"] - pb["psnr_db"], 3),
                    "pose_error_deg_median": None if None in (pa_["pose_error_deg_median"], pb["pose_error_deg_median"])
                    else round(pa_["pose_error_deg_median"] - pb["pose_error_deg_median"], 3),
                    "identity_top1": None if None in (pa_["identity_top1"], pb["identity_top1"])
                    else round(pa_["identity_top1"] - pb["identity_top1"], 4),
                }
        diff = None if None in (a, b) else round(a - b, 3)
        targets["light_conditioning"] = _target(
            f"{paper} (light-conditioned) PSNR at |delta| >= {BEAT_NO_MOVE_FROM} at least light_agnostic's",
            diff, 0.0, None if diff is None else diff >= 0,
            "PSNR difference by light: " + ", ".join(f"{k}: {v['psnr_db']:+.2f} dB" for k, v in light_diff.items()
                                                      if v["psnr_db"] is not None))
    else:
        targets["light_conditioning"] = _target("light-conditioned at least as good as light_agnostic", None, 0.0,
                                                None, "light_agnostic was not rendered")
    value = _stat(m["top1"][meth == primary], np.mean, 4)
    targets["identity"] = _target(f"{primary}: identity top-1 >= {IDENTITY_TARGET:.0%}", value, IDENTITY_TARGET,
                                  None if value is None else value >= IDENTITY_TARGET)
    return targets, light_diff


# ---------------------------------------------------------------------------
# The stage


def run_evaluate(config: EvaluateConfig) -> dict[str, Any]:
    """Measure the run's renders and write report/report.json + report/report.html; returns the report."""
    started = time.time()
    root = config.root
    run = runs.read_run_json(root)
    data_uri = resolve_data(config, run)
    rotated_dir = config.rotated_dir()
    report_dir = storage.join(root, REPORT)
    notes: list[str] = []
    # Complete with the same inputs (renders, data, config): nothing to do.
    rotated_marker = storage.completion(rotated_dir) or {}
    digest = runs.fingerprint({"rotated": rotated_marker.get("fingerprint"), "data": runs.redact_uri(data_uri),
                               "config": to_mapping(config)})
    done = storage.completion(report_dir)
    if done is not None and done.get("fingerprint") == digest:
        log.info("evaluate: %s is complete; nothing to do", runs.redact_uri(report_dir))
        return {**storage.read_json(storage.join(report_dir, "report.json")), "skipped": True}

    from headrot.stages.render import labeller_key

    labeller = labeller_key(root)
    table, images = read_renders(rotated_dir)
    n, size = len(images), images.shape[1]
    sid = np.array(table.column("source_id").to_pylist(), dtype=object)
    delta = table.column("delta").to_numpy().astype(np.int64)
    meth = np.array(table.column("method").to_pylist(), dtype=object)
    light = np.array([x or "unknown" for x in table.column("light").to_pylist()], dtype=object)
    method_names = sorted(set(meth.tolist()))
    primary = pick_primary(config, method_names)
    source_ids = sorted(set(sid.tolist()))
    log.info("evaluate: %d renders of %d sources, methods %s, size %d", n, len(source_ids), method_names, size)

    sources, src_notes = read_sources(data_uri, source_ids, size)
    notes += src_notes[:20] + ([f"... and {len(src_notes) - 20} more unreadable sources"] if len(src_notes) > 20 else [])
    synthetic = storage.exists(storage.join(data_uri, "truth.parquet"))
    m = {"method": meth, "delta": delta, "light": light,
         "pose_error": np.full(n, np.nan), "est_yaw": np.full(n, np.nan), "target_yaw_true": np.full(n, np.nan),
         "psnr": np.full(n, np.nan), "ssim": np.full(n, np.nan), "top1": np.full(n, np.nan),
         "achieved": np.full(n, np.nan)}
    gt_images: dict[tuple[str, int], np.ndarray] = {}
    pose_info: dict[str, Any]

    if synthetic:
        from headrot.evaluate.truth import GroundTruth
        from headrot.synth.writer import read_truth

        truth = read_truth(data_uri)
        data_seeds = set(truth.column("seed").to_pylist())
        seed = config.pose_seed
        while seed in data_seeds:
            seed += 1
        if seed != config.pose_seed:
            notes.append(f"pose estimator seed moved to {seed}: the data was written with seed {config.pose_seed}")
        gt = GroundTruth(truth, size, config.gallery_max)
        missing = [s for s in source_ids if s not in gt]
        if missing:
            raise ValueError(f"{len(missing)} rendered sources (e.g. {missing[0]}) are not in "
                             f"{runs.redact_uri(data_uri)}/truth.parquet: wrong --data?")
        # Light class per render: the true one (the labels may come from a classifier).
        light = np.array([gt.light(s) for s in sid], dtype=object)
        m["light"] = light
        pose_cfg = PoseConfig(size=size, seed=seed, n_identities=config.pose_identities,
                              per_identity=config.pose_per_identity, n_heldout=config.pose_heldout,
                              epochs=config.pose_epochs)
        check_independent(pose_cfg, labeller)  # the judge must not be the method's own labeller
        estimator, cached = load_or_fit(storage.join(report_dir, "yaw_estimator.npz"), pose_cfg)
        m["est_yaw"] = estimator.predict(images)
        true_yaw = np.array([gt.true_yaw(s) for s in sid])
        m["target_yaw_true"] = true_yaw + delta
        m["pose_error"] = np.abs(m["est_yaw"] - m["target_yaw_true"])
        ids_in_set = sorted({int(gt.source(s)["identity"]) for s in source_ids})
        groups: dict[tuple[str, int], list[int]] = defaultdict(list)
        for i, key in enumerate(zip(sid.tolist(), delta.tolist())):
            groups[key].append(i)
        t0 = time.time()
        for (s, d), idx in groups.items():
            idx = np.asarray(idx)
            truth_img = gt.render(s, d)
            gt_images[(s, d)] = truth_img
            ref = np.broadcast_to(truth_img, images[idx].shape)
            m["psnr"][idx] = psnr_batch(images[idx], ref)
            m["ssim"][idx] = ssim_batch(images[idx], ref)
            m["top1"][idx] = gt.identity_top1(s, d, images[idx], ids_in_set)
        log.info("evaluate: %d ground-truth renders in %.1f s", gt.renders, time.time() - t0)
        src_list = [s for s in source_ids if s in sources]
        src_err = None
        if src_list:
            est_src = estimator.predict(np.stack([sources[s] for s in src_list]))
            src_err = round(float(np.mean(np.abs(est_src - np.array([gt.true_yaw(s) for s in src_list])))), 3)
        pose_info = {"kind": "cnn", **estimator.metrics, "mae_deg_sources": src_err, "cached": cached,
                     "seed": seed, "image_size": size,
                     "note": "tiny CNN on synthetic renders of identities not in the data "
                             f"(seed {seed}); held-out MAE on new identities; mae_deg_sources: on the "
                             "evaluated source images against truth.parquet",
                     "gallery_max": config.gallery_max, "gallery_identities": min(len(ids_in_set), config.gallery_max),
                     "ground_truth_renders": gt.renders}
    else:
        if mediapipe_available():
            src_list = [s for s in source_ids if s in sources]
            src_yaw = dict(zip(src_list, mediapipe_yaw(np.stack([sources[s] for s in src_list])))) if src_list else {}
            m["est_yaw"] = mediapipe_yaw(images)
            base = np.array([src_yaw.get(s, np.nan) for s in sid])
            m["pose_error"] = np.abs(m["est_yaw"] - base - delta)
            found = float(np.isfinite(m["est_yaw"]).mean())
            pose_info = {"kind": "mediapipe", "mae_deg_heldout": None, "cached": False,
                         "face_found_fraction": round(found, 4),
                         "note": "mediapipe face mesh -> 5 CelebA points -> headrot.labels.yaw; pose error = "
                                 "|yaw(render) - yaw(source) - delta| (no ground truth on real data)"}
        else:
            pose_info = {"kind": "skipped", "mae_deg_heldout": None, "cached": False,
                         "note": f"skipped: mediapipe not installed ({MEDIAPIPE_HINT})"}
            notes.append(f"pose error on real data skipped: mediapipe not installed ({MEDIAPIPE_HINT})")
        notes.append("real data (no truth.parquet): no ground truth, so PSNR/SSIM only for the reconstruction")

    m["achieved"] = achieved_yaw(m["est_yaw"], sid, meth, delta)
    if labeller:
        pose_info["labeller"] = {"seed": labeller.get("seed"), "arch": labeller.get("arch"),
                                 "note": "the method's own pose-and-light CNN (samples stage, -cal methods); "
                                         "the judge above is another network, seed and set of identities"}
    # Embedding quality: the delta-0 reconstruction against the preprocessed source.
    embedding = embedding_quality(m, sid, images, sources)
    embedding["latents_recon_psnr_db_mean"] = _latents_psnr(root)

    methods_report = {
        method: {str(d): aggregate(m, (meth == method) & (delta == d))
                 for d in sorted(set(delta[meth == method].tolist()))}
        for method in method_names}
    lights_present = [x for x in LIGHTS if x in set(m["light"].tolist())] + \
        sorted(set(m["light"].tolist()) - set(LIGHTS))
    per_light = {method: {lt: aggregate(m, (meth == method) & (m["light"] == lt))
                          for lt in lights_present if ((meth == method) & (m["light"] == lt)).any()}
                 for method in method_names}
    targets, light_diff = evaluate_targets(primary, m, methods_report, per_light, synthetic)
    sel = meth == primary
    summary = {
        "method": primary,
        "pose_error_deg_median": _stat(m["pose_error"][sel], np.median),
        "pose_error_deg_mean": _stat(m["pose_error"][sel], np.mean),
        "psnr_db_mean": _stat(m["psnr"][sel], np.mean),
        "ssim_mean": _stat(m["ssim"][sel], np.mean, 4),
        "identity_top1": _stat(m["top1"][sel], np.mean, 4),
        "n_renders": int(n), "n_sources": len(source_ids),
        "pose_estimator_mae_deg": pose_info.get("mae_deg_heldout"),
        "embedding_psnr_db": embedding["psnr_db"],
        "targets_met": sum(1 for t in targets.values() if t["met"]),
        "targets_total": len(targets),
    }

    # Files: figures, per-render metrics, report.json, report.html.
    figures = make_figures(methods_report, pose_info, synthetic)
    trajectories_png = trajectory_figure_of(root)
    if trajectories_png is not None:
        figures["trajectories.png"] = (trajectories_png, (
            "The fit's light-conditioned trajectories: top, each yaw bin's centroid along its side's "
            "fitted direction against the line (legend: R^2, in brackets R^2 without the centroids' "
            "sampling noise, faces); bottom, each centroid's distance from its line and from the side's "
            "mean, and (dashed) the sampling noise of a centroid of that many faces (RMS per latent element)."))
    case_method = primary if synthetic or not embedding["method"] else embedding["method"]
    cases_png = make_cases(case_method, m, sid, images, sources, gt_images, config.cases, synthetic)
    if cases_png is not None:
        figures[f"cases_{storage.safe_name(case_method, 'method')}.png"] = (
            cases_png, f"{case_method}: best, median and worst renders by PSNR" +
            (" vs ground truth (source | render | ground truth)" if synthetic else " (reconstruction)"))
    for name, (png, _) in figures.items():
        storage.write_bytes(storage.join(report_dir, name), png)
    metrics_uri = storage.join(report_dir, "metrics.parquet")
    tables.write_parquet(metrics_uri, pa.table({
        "source_id": pa.array(sid.tolist(), pa.string()), "method": pa.array(meth.tolist(), pa.string()),
        "delta": pa.array(delta, pa.int16()), "light": pa.array(m["light"].tolist(), pa.string()),
        "target_yaw_true": pa.array(m["target_yaw_true"], pa.float32()),
        "estimated_yaw": pa.array(m["est_yaw"], pa.float32()),
        "pose_error_deg": pa.array(m["pose_error"], pa.float32()),
        "psnr_db": pa.array(m["psnr"], pa.float32()), "ssim": pa.array(m["ssim"], pa.float32()),
        "identity_top1": pa.array(m["top1"], pa.float32()),
    }))
    html_uri, json_uri = storage.join(report_dir, "report.html"), storage.join(report_dir, "report.json")
    rotated_done = storage.completion(rotated_dir) or {}
    report = {
        "schema": 1,
        "kind": "synthetic" if synthetic else "real",
        "summary": summary,
        "methods": methods_report,
        "per_light": per_light,
        "light_difference": light_diff,
        "embedding": embedding,
        "trajectories": trajectory_fit_of(root),
        "pose_estimator": pose_info,
        "targets": targets,
        "notes": notes,
        "inputs": {"root": runs.redact_uri(root), "data": runs.redact_uri(data_uri),
                   "rotated": runs.redact_uri(rotated_dir), "rotated_fingerprint": rotated_done.get("fingerprint")},
        "config": {k: (runs.redact_uri(v) if isinstance(v, str) else v) for k, v in to_mapping(config).items()},
        "versions": runs.versions(),
        "seconds": round(time.time() - started, 1),
        "files": {"html": runs.redact_uri(html_uri), "json": runs.redact_uri(json_uri),
                  "metrics": runs.redact_uri(metrics_uri),
                  "figures": [runs.redact_uri(storage.join(report_dir, f)) for f in figures]},
    }
    page = render_html(report, figures, run, report_dir)
    storage.write_bytes(html_uri, page.encode())
    storage.write_json(json_uri, report)
    storage.mark_complete(report_dir, {"fingerprint": digest, "summary": summary})
    log.info("evaluate: %s", {k: summary[k] for k in ("method", "pose_error_deg_median", "psnr_db_mean",
                                                       "identity_top1", "targets_met", "targets_total")})
    return report


def embedding_quality(m, sid, images, sources) -> dict[str, Any]:
    """PSNR/SSIM of one delta-0 reconstruction per source against the preprocessed source:
    no_move at delta 0, else no_move at any delta (it ignores delta), else any method at delta 0."""
    meth, delta = m["method"], m["delta"]
    for method, dsel in (("no_move", delta == 0), ("no_move", np.ones_like(delta, bool)), (None, delta == 0)):
        sel = dsel & ((meth == method) if method else True)
        if sel.any():
            break
    else:
        return {"method": None, "delta": None, "n": 0, "psnr_db": None, "ssim": None}
    chosen: dict[str, int] = {}
    for i in np.flatnonzero(sel):
        if sid[i] in sources:
            chosen.setdefault(sid[i], int(i))
    if not chosen:
        return {"method": method, "delta": None, "n": 0, "psnr_db": None, "ssim": None}
    idx = np.array(list(chosen.values()))
    src = np.stack([sources[s] for s in chosen])
    p, s_ = psnr_batch(images[idx], src), ssim_batch(images[idx], src)
    return {"method": str(meth[idx[0]]), "delta": int(delta[idx[0]]), "n": len(idx),
            "psnr_db": round(float(p.mean()), 3), "ssim": round(float(s_.mean()), 4),
            "psnr_db_median": round(float(np.median(p)), 3)}


def _latents_psnr(root: str) -> float | None:
    latents_dir = storage.join(root, "latents")
    if storage.completion(latents_dir) is None:  # no embed stage in this root: the report goes on
        return None
    # A mean over fewer rows than the embed stage made would be silently wrong: checked like any read.
    files = runs.stage_files(latents_dir, STAGE, "embed", rows_key="written")
    try:
        t = tables.read_parquet_files(files, columns=["recon_psnr"])
    except (ValueError, KeyError, pa.ArrowInvalid):  # no files, or latents of another layout
        return None
    v = t.column("recon_psnr").to_numpy(zero_copy_only=False).astype(np.float64)
    v = v[np.isfinite(v)]
    return round(float(v.mean()), 3) if len(v) else None


# ---------------------------------------------------------------------------
# Figures and the page


def make_figures(methods_report, pose_info, synthetic) -> dict[str, tuple[bytes, str]]:
    figs: dict[str, tuple[bytes, str]] = {}
    mae = pose_info.get("mae_deg_heldout")
    has = lambda key: any(v.get(key) is not None for per in methods_report.values() for v in per.values())  # noqa: E731
    if has("pose_error_deg_median"):
        est = f"pose estimator held-out MAE {mae:.1f} deg" if mae is not None else f"pose by {pose_info['kind']}"
        figs["pose_error_vs_delta.png"] = (plots.metric_vs_delta(
            methods_report, "pose_error_deg_median", "median pose error (degrees)",
            f"Pose error vs delta ({est})", band=mae, band_label="estimator MAE", ideal="abs"),
            f"Median |estimated yaw - target yaw| per delta; grey band: {est}; dotted: |delta| (no rotation).")
    if synthetic and has("psnr_db"):
        figs["psnr_vs_delta.png"] = (plots.metric_vs_delta(
            methods_report, "psnr_db", "PSNR vs ground truth (dB)", "PSNR vs delta"),
            "Mean PSNR of each render against the same identity re-rendered at the target yaw, same light.")
    if synthetic and has("identity_top1"):
        figs["identity_vs_delta.png"] = (plots.metric_vs_delta(
            methods_report, "identity_top1", "identity top-1", "Identity retrieval vs delta"),
            "Fraction of renders whose nearest gallery face (same pose and light) is their own identity.")
    return figs


# The fit summary's per-line figures: {"<light>/<side>": value} (_by_light) and {side: value} (_global).
FIT_FIGURES = ("r2", "noise_share", "r2_reliable")


def trajectory_fit_of(root: str) -> dict[str, Any]:
    """The fit's R^2, noise share and R^2 without noise per light class and side (and of the
    global lines), and its fallbacks, from its _SUCCESS."""
    done = storage.completion(storage.join(root, "trajectories")) or {}
    keys = [f"{f}_{scope}" for f in FIT_FIGURES for scope in ("by_light", "global")] + ["fallbacks"]
    return {k: done.get(k, {}) for k in keys}


def trajectory_figure_of(root: str) -> bytes | None:
    """report/trajectories.png from the fit stage's table (None when the run has none)."""
    from headrot.report.trajectory_fit import trajectory_figure

    uri = storage.join(root, "trajectories", "trajectories.parquet")
    return trajectory_figure(tables.read_parquet(uri)) if storage.exists(uri) else None


def make_cases(primary, m, sid, images, sources, gt_images, k, synthetic) -> bytes | None:
    # Synthetic: the primary method's renders vs ground truth; real: its reconstruction (delta 0).
    sel = (m["method"] == primary) & (np.isfinite(m["psnr"]) if synthetic else (m["delta"] == 0))
    if synthetic and (sel & (m["delta"] != 0)).any():
        sel &= m["delta"] != 0
    idx = np.flatnonzero(sel & np.array([s in sources for s in sid]))
    if not len(idx):
        return None
    if synthetic:
        score = m["psnr"][idx]
    else:
        score = psnr_batch(images[idx], np.stack([sources[sid[i]] for i in idx]))
    order = idx[np.argsort(-score, kind="stable")]
    sc = dict(zip(idx.tolist(), score.tolist()))
    k = min(k, len(order))
    mid = max(0, len(order) // 2 - k // 2)
    picks = [("best", i) for i in order[:k]] + [("median", i) for i in order[mid:mid + k]] + \
        [("worst", i) for i in order[len(order) - k:]]
    cases = []
    for kind, i in picks:
        label = f"{kind}: {sc[i]:.1f} dB, {str(sid[i]).rsplit('.', 1)[0]} d={int(m['delta'][i]):+d}"
        if synthetic and np.isfinite(m["pose_error"][i]):
            label += f", pose err {m['pose_error'][i]:.0f} deg"
        cases.append({"source": sources[sid[i]], "render": images[i],
                      "truth": gt_images.get((sid[i], int(m["delta"][i]))), "label": label})
    return plots.cases_sheet(cases, with_truth=synthetic)


def render_html(report: dict, figures: dict[str, tuple[bytes, str]], run: dict, report_dir: str) -> str:
    s = report["summary"]
    mae = report["pose_estimator"].get("mae_deg_heldout")
    mae_txt = f"{mae:.2f}" if mae is not None else "n/a"
    sections = []
    notes = "".join(f'<div class="note">{H.esc(n)}</div>' for n in report["notes"])
    sections.append(("Summary", notes + H.table(["", "value"], [
        ("kind", report["kind"]), ("method summarised", s["method"]),
        ("median pose error (deg)", s["pose_error_deg_median"]),
        ("pose estimator held-out MAE (deg)", s["pose_estimator_mae_deg"]),
        ("mean PSNR vs ground truth (dB)", s["psnr_db_mean"]), ("mean SSIM", s["ssim_mean"]),
        ("identity top-1", s["identity_top1"]), ("embedding PSNR (dB)", s["embedding_psnr_db"]),
        ("renders / sources", f"{s['n_renders']} / {s['n_sources']}"),
        ("targets met", f"{s['targets_met']} of {s['targets_total']}")])))
    sections.append(("Targets", H.table(["target", "value", "threshold", "status", "detail"], [
        (t["description"], t["value"], t["threshold"], H.status(t["met"]), t["detail"])
        for t in report["targets"].values()], left=1)))
    pe = report["pose_estimator"]
    sections.append(("Pose estimator", f"<p>{H.esc(pe.get('note', ''))}</p>" + H.table(
        ["", "value"], [(k, v if not isinstance(v, (list, dict)) else str(v)) for k, v in sorted(pe.items())
                        if k != "note"])))
    figs = "".join(H.figure(png, cap, name) for name, (png, cap) in figures.items() if not name.startswith("cases_"))
    fit = report.get("trajectories", {})
    if fit.get("r2_by_light"):
        def figures_of(scope: str, key: str) -> list:
            return [fit.get(f"{f}_{scope}", {}).get(key) for f in FIT_FIGURES]

        figs += ("<h3>Trajectory fit: R^2 of the light-conditioned lines</h3><p>Noise share: the part of "
                 "the bin centroids' spread that their sampling noise alone gives (bins too small). R^2 without "
                 "noise: the line's R^2 on the rest, what more faces per bin would tend to; low means the "
                 "trajectory bends.</p>") + H.table(
            ["light", "side", "R^2", "noise share", "R^2 without noise"],
            [(*key.split("/", 1), *figures_of("by_light", key)) for key in sorted(fit["r2_by_light"])] +
            [("any (global)", side, *figures_of("global", side)) for side in sorted(fit.get("r2_global", {}))],
            left=2)
    sections.append(("Figures", figs or "<p>No figures (nothing measurable).</p>"))
    rows = []
    for method, per in report["methods"].items():
        for d, v in sorted(per.items(), key=lambda kv: int(kv[0])):
            rows.append((method, int(d), v["pose_error_deg_median"], v.get("achieved_yaw_deg_median"),
                         v.get("achieved_yaw_deg_iqr"), mae_txt, v["psnr_db"], v["ssim"], v["identity_top1"], v["n"]))
    sections.append(("Methods by delta", "<p>Achieved yaw: the judge's reading of each render minus its "
                     "reading of the same method's delta-0 render; IQR: its spread over faces.</p>" + H.table(
        ["method", "delta", "pose err median (deg)", "achieved yaw median (deg)", "achieved yaw IQR (deg)",
         "estimator MAE (deg)", "PSNR (dB)", "SSIM", "identity top-1", "n"], rows, left=1)))
    rows = [(method, lt, v["pose_error_deg_median"], v["psnr_db"], v["ssim"], v["identity_top1"], v["n"])
            for method, per in report["per_light"].items() for lt, v in per.items()]
    light_html = H.table(["method", "light", "pose err median (deg)", "PSNR (dB)", "SSIM", "identity top-1", "n"],
                         rows, left=2)
    if report["light_difference"]:
        light_html += "<h3>Light-conditioned minus light-agnostic</h3>" + H.table(
            ["light", "PSNR (dB)", "pose err median (deg)", "identity top-1"],
            [(lt, v["psnr_db"], v["pose_error_deg_median"], v["identity_top1"])
             for lt, v in report["light_difference"].items()])
    sections.append(("Per light class", light_html))
    e = report["embedding"]
    sections.append(("Embedding quality", "<p>The delta-0 reconstruction G(z) against the source "
                     "preprocessed like the model's input.</p>" + H.table(["", "value"], [
                         ("render used", f"{e.get('method')} at delta {e.get('delta')}"), ("n", e.get("n")),
                         ("PSNR (dB)", e.get("psnr_db")), ("SSIM", e.get("ssim")),
                         ("embed stage's mean recon PSNR (dB)", e.get("latents_recon_psnr_db_mean"))])))
    cases = "".join(H.figure(png, cap, name) for name, (png, cap) in figures.items() if name.startswith("cases_"))
    if cases:
        sections.append(("Best, median and worst cases", cases))
    earlier = []
    captions = {"mean_faces.png": "Mean face per light class and yaw bin (embed stage)"}
    for name in list(captions) + sorted(f.rsplit("/", 1)[-1] for f in storage.list_files(report_dir, ".png")
                                        if f.rsplit("/", 1)[-1].startswith("contact_sheet_")):
        uri = storage.join(report_dir, name)
        if storage.exists(uri):
            cap = captions.get(name) or \
                f"Contact sheet of method {name[len('contact_sheet_'):-4]}: rows are sources, columns deltas (render stage)"
            earlier.append(H.figure(storage.read_bytes(uri), cap, name))
    if earlier:
        sections.append(("Earlier stages", "".join(earlier)))
    stages = run.get("stages") or {}
    run_html = "".join(f"<h3>{H.esc(name)}</h3>" + H.pre_json({k: v for k, v in st.items()})
                       for name, st in stages.items())
    sections.append(("Run configuration and versions", (run_html or "<p>run.json holds no stages.</p>") +
                     "<h3>evaluate</h3>" + H.pre_json({"config": report["config"], "versions": report["versions"],
                                                       "inputs": report["inputs"]})))
    return H.page(f"headrot report: {report['inputs']['root']}", sections)
