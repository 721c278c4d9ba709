"""Stage 4, evaluate: rotated/ (+ the data root) -> report/report.json and report/report.html.

A thin driver over pure functions (the shape of stages/fit.py):

    every rotated file the render stage made (checked against its _SUCCESS)
    -> one Ray task per file: headrot.evaluate.measure.measure -> a per-render metrics table
       (no image leaves a task; the judge's cached file and the spec go to every task)
    -> the driver concatenates the small tables: headrot.evaluate.aggregate -> the report dict
    -> headrot.report draws the figures and the page; only the cases sheet's few renders are
       read back.

What is measured (headrot.evaluate.measure): pose error by an estimator independent of the
latent space (headrot.labels.pose, fitted once on fresh synthetic identities and cached in
report/yaw_estimator.npz); PSNR / SSIM against the ground-truth render; identity top-1 among
every identity of the evaluated set in the same pose and light; the delta-0 reconstruction
against the preprocessed source. Real data (no truth.parquet): reconstruction PSNR/SSIM, and
pose error from mediapipe when it is installed (else a note says it was skipped and how to
install it). The report.json schema is in headrot.evaluate's docstring.

Holds the run root's lock and records itself in run.json (stages.evaluate) like every stage.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from headrot import runs, storage, tables
from headrot.config import to_mapping
from headrot.evaluate import aggregate as A
from headrot.evaluate.measure import MeasureSpec, decode_renders, measure, read_sources
from headrot.labels.pose import (MEDIAPIPE_HINT, PoseConfig, check_independent, load_or_fit,
                                 mediapipe_available)
from headrot.layout import RunLayout
from headrot.lock import locked
from headrot.report.page import FIT_FIGURES
from headrot.stages.protocol import Stage, run_stage

log = logging.getLogger(__name__)

STAGE = "evaluate"
# A measure task's CPU share: fractional, so the tasks never starve Ray's readers (2-core machines).
TASK_CPUS = 0.5
# report/metrics.parquet: one row per render, these columns (float32 on disk).
METRICS_FILE = [("source_id", pa.string()), ("method", pa.string()), ("delta", pa.int16()),
                ("light", pa.string()), ("target_yaw_true", pa.float32()), ("estimated_yaw", pa.float32()),
                ("pose_error_deg", pa.float32()), ("truth_pose_error_deg", pa.float32()),
                ("psnr_db", pa.float32()), ("ssim", pa.float32()),
                ("identity_top1", pa.float32()), ("novel_colour_share", pa.float32()),
                ("colour_psnr_db", pa.float32())]


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
        return self.rotated or RunLayout(self.root).rotated


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


def _fingerprint(config: EvaluateConfig, data_uri: str) -> str:
    rotated_marker = storage.completion(config.rotated_dir()) or {}
    return runs.fingerprint({"rotated": rotated_marker.get("fingerprint"), "data": runs.redact_uri(data_uri),
                             "config": to_mapping(config)})


def _render_size(files: list[str]) -> int:
    """S of the S x S renders, from the first render (every task checks its own against it)."""
    first = tables.read_parquet(files[0], columns=["image"]).slice(0, 1)
    return int(decode_renders(first, files[0]).shape[1])


def _read_truth_columns(data_uri: str) -> pa.Table:
    import io

    import pyarrow.parquet as pq

    data = storage.read_bytes(storage.join(data_uri, "truth.parquet"))
    return pq.read_table(io.BytesIO(data), columns=["image_id", "identity", "seed"])


# ---------------------------------------------------------------------------
# The judge: fitted (or loaded) once here, its file passed to the tasks


def _synthetic_judge(config, data_uri, source_ids, size, report_dir) -> tuple[MeasureSpec, dict, list[str]]:
    truth = _read_truth_columns(data_uri)
    identity_of = dict(zip(truth.column("image_id").to_pylist(), truth.column("identity").to_pylist()))
    missing = [s for s in source_ids if s not in identity_of]
    if missing:
        raise ValueError(f"{len(missing)} rendered sources (e.g. {missing[0]}) are not in "
                         f"{runs.redact_uri(data_uri)}/truth.parquet: wrong --data?")
    data_seeds, seed, notes = set(truth.column("seed").to_pylist()), config.pose_seed, []
    while seed in data_seeds:
        seed += 1
    if seed != config.pose_seed:
        notes.append(f"pose estimator seed moved to {seed}: the data was written with seed {config.pose_seed}")
    pose_cfg = PoseConfig(size=size, seed=seed, n_identities=config.pose_identities,
                          per_identity=config.pose_per_identity, n_heldout=config.pose_heldout,
                          epochs=config.pose_epochs)
    # The judge must be none of the method's own estimators (labeller, calibration's reader,
    # the steering networks).
    check_independent(pose_cfg, labeller_of(config.root), labeller_of(config.root, "reader"),
                      *steerers_of(config.root))
    cache = storage.join(report_dir, "yaw_estimator.npz")
    estimator, cached = load_or_fit(cache, pose_cfg)
    ids_in_set = tuple(sorted({int(identity_of[s]) for s in source_ids}))
    spec = MeasureSpec(data=data_uri, size=size, synthetic=True, estimator=cache, pose=pose_cfg,
                       gallery_max=config.gallery_max, identities=ids_in_set)
    pose = {"kind": "cnn", **estimator.metrics, "mae_deg_sources": None, "cached": cached,
            "seed": seed, "image_size": size,
            "note": "tiny CNN on synthetic renders of identities not in the data "
                    f"(seed {seed}); held-out MAE on new identities; mae_deg_sources: on the "
                    "evaluated source images against truth.parquet",
            "gallery_max": config.gallery_max, "gallery_identities": min(len(ids_in_set), config.gallery_max)}
    return spec, pose, notes


def _real_judge(data_uri: str, size: int) -> tuple[MeasureSpec, dict, list[str]]:
    notes = []
    if mediapipe_available():
        pose = {"kind": "mediapipe", "mae_deg_heldout": None, "cached": False, "face_found_fraction": None,
                "note": "mediapipe face mesh -> 5 CelebA points -> headrot.labels.yaw; pose error = "
                        "|yaw(render) - yaw(source) - delta| (no ground truth on real data)"}
    else:
        pose = {"kind": "skipped", "mae_deg_heldout": None, "cached": False,
                "note": f"skipped: mediapipe not installed ({MEDIAPIPE_HINT})"}
        notes.append(f"pose error on real data skipped: mediapipe not installed ({MEDIAPIPE_HINT})")
    notes.append("real data (no truth.parquet): no ground truth, so PSNR/SSIM only for the reconstruction")
    spec = MeasureSpec(data=data_uri, size=size, synthetic=False, mediapipe=pose["kind"] == "mediapipe")
    return spec, pose, notes


def labeller_of(root: str, which: str = "labeller") -> dict | None:
    from headrot.stages.samples import labeller_key

    return labeller_key(root, which)


def steerers_of(root: str) -> list[dict]:
    from headrot.stages.samples import steerer_keys

    return steerer_keys(root)


# ---------------------------------------------------------------------------
# Measuring: one Ray task per rotated file


def measure_all(files: list[str], spec: MeasureSpec, total_rows: int) -> tuple[pa.Table, int]:
    """(the metrics of every render in file order, ground-truth renders made); progress in the log."""
    import ray

    from headrot.stages.sharding import Progress

    task = ray.remote(num_cpus=TASK_CPUS)(measure)
    spec_ref = ray.put(spec)
    refs = {task.remote(i, uri, spec_ref): i for i, uri in enumerate(files)}
    progress = Progress(STAGE, len(files), total_rows)
    parts: dict[int, pa.Table] = {}
    made = 0
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        table, renders = ray.get(ready[0])
        parts[refs[ready[0]]] = table
        made += renders
        progress.update(1, table.num_rows)
    return A.merge([parts[i] for i in range(len(files))]), made


def _latents_psnr(root: str) -> tuple[float | None, int]:
    """The embed stage's mean recon PSNR over the rows it measured (embed.reconstruct_every), and
    how many rows that is ((None, 0) when the root has no embed stage)."""
    latents_dir = RunLayout(root).latents
    if storage.completion(latents_dir) is None:  # no embed stage in this root: the report goes on
        return None, 0
    # A mean over fewer rows than the embed stage made would be silently wrong: checked like any read.
    files = runs.stage_files(latents_dir, STAGE, "embed", rows_key="written")
    try:
        t = tables.read_parquet_files(files, columns=["recon_psnr"])
    except (ValueError, KeyError, pa.ArrowInvalid):  # no files, or latents of another layout
        return None, 0
    v = t.column("recon_psnr").to_numpy(zero_copy_only=False).astype(np.float64)
    v = v[np.isfinite(v)]
    return (round(float(v.mean()), 3) if len(v) else None), len(v)


def trajectory_fit_of(root: str) -> dict[str, Any]:
    """The fit's R^2, noise share and R^2 without noise per light class and side (and of the
    global lines), and its fallbacks, from its _SUCCESS."""
    done = storage.completion(RunLayout(root).trajectories) or {}
    keys = [f"{f}_{scope}" for f in FIT_FIGURES for scope in ("by_light", "global")] + ["fallbacks"]
    return {k: done.get(k, {}) for k in keys}


def trajectory_figure_of(root: str) -> bytes | None:
    """report/trajectories.png from the fit stage's table (None when the run has none)."""
    from headrot.report.trajectory_fit import trajectory_figure

    uri = RunLayout(root).trajectories_table
    return trajectory_figure(tables.read_parquet(uri)) if storage.exists(uri) else None


# ---------------------------------------------------------------------------
# Presenting: figures, the cases sheet, the files


def _case_images(picks: list[dict], files: list[str], spec: MeasureSpec) -> list[dict]:
    """The picked renders read back (only their files), with their sources and ground truth."""
    by_file: dict[int, list[int]] = {}
    for p in picks:
        by_file.setdefault(p["file"], []).append(p["row"])
    images = {}
    for f, rows in by_file.items():
        table = tables.read_parquet(files[f], columns=["image"]).take(pa.array(sorted(set(rows))))
        images.update({(f, r): img for r, img in zip(sorted(set(rows)), decode_renders(table, files[f]))})
    sources, _ = read_sources(spec.data, sorted({p["source_id"] for p in picks}), spec.size)
    gt = None
    if spec.synthetic:
        from headrot.evaluate.measure import truth_for
        from headrot.evaluate.truth import GroundTruth

        gt = GroundTruth(truth_for(spec.data, {p["source_id"] for p in picks}), spec.size, spec.gallery_max)
    return [{"source": sources[p["source_id"]], "render": images[(p["file"], p["row"])],
             "truth": gt.render(p["source_id"], p["delta"]) if gt else None, "label": p["label"]}
            for p in picks]


def figures_of(report: dict, metrics: pa.Table, files: list[str], spec: MeasureSpec,
               config: EvaluateConfig) -> dict[str, tuple[bytes, str]]:
    from headrot.report import page, plots
    from headrot.report.trajectory_fit import trajectory_figure

    synthetic = spec.synthetic
    figures = page.make_figures(report["methods"], report["pose_estimator"], synthetic,
                                report.get("pose_by_target_yaw"))
    uri = RunLayout(config.root).trajectories_table
    if storage.exists(uri) and (png := trajectory_figure(tables.read_parquet(uri))) is not None:
        figures["trajectories.png"] = (png, page.TRAJECTORIES_CAPTION)
    embedded = report["embedding"]["method"]
    method = report["summary"]["method"] if synthetic or not embedded else embedded
    picks = A.pick_cases(metrics, method, config.cases, synthetic)
    if picks:
        figures[f"cases_{storage.safe_name(method, 'method')}.png"] = (
            plots.cases_sheet(_case_images(picks, files, spec), with_truth=synthetic),
            page.cases_caption(method, synthetic))
    return figures


def write_report(config: EvaluateConfig, report: dict, figures: dict, metrics: pa.Table) -> None:
    """The figures, metrics.parquet, report.html and report.json (run_stage writes _SUCCESS after)."""
    from headrot.report.page import render_html

    report_dir = RunLayout(config.root).report
    for name, (png, _) in figures.items():
        storage.write_bytes(storage.join(report_dir, name), png)
    tables.write_parquet(storage.join(report_dir, "metrics.parquet"), pa.table(
        {name: metrics.column(name).cast(kind) for name, kind in METRICS_FILE}))
    page = render_html(report, figures, runs.read_run_json(config.root), report_dir)
    storage.write_bytes(storage.join(report_dir, "report.html"), page.encode())
    storage.write_json(storage.join(report_dir, "report.json"), report)


def _report(config, measured: dict, data_uri: str, figures: list[str], started: float) -> dict[str, Any]:
    """report.json: the aggregate's keys, then where it came from (schema: headrot.evaluate)."""
    root, rotated_dir, report_dir = config.root, config.rotated_dir(), RunLayout(config.root).report
    path = lambda name: runs.redact_uri(storage.join(report_dir, name))  # noqa: E731
    head = [k for k in measured if k not in ("pose_estimator", "targets", "notes")]
    return {**{k: measured[k] for k in head}, "trajectories": trajectory_fit_of(root),
            **{k: measured[k] for k in ("pose_estimator", "targets", "notes")},
            "inputs": {"root": runs.redact_uri(root), "data": runs.redact_uri(data_uri),
                       "rotated": runs.redact_uri(rotated_dir),
                       "rotated_fingerprint": (storage.completion(rotated_dir) or {}).get("fingerprint")},
            "config": {k: (runs.redact_uri(v) if isinstance(v, str) else v) for k, v in to_mapping(config).items()},
            "versions": runs.versions(), "seconds": round(time.time() - started, 1),
            "files": {"html": path("report.html"), "json": path("report.json"), "metrics": path("metrics.parquet"),
                      "figures": [path(f) for f in figures]}}


# ---------------------------------------------------------------------------
# The stage


@locked(lambda config: config.root, STAGE)  # one writer per run root (headrot/lock.py)
def run_evaluate(config: EvaluateConfig) -> dict[str, Any]:
    """Measure the run's renders and write report/report.json + report/report.html; returns the report."""
    layout = RunLayout(config.root)
    data_uri = resolve_data(config, runs.read_run_json(config.root))
    # Every rotated file the render stage made, checked against its _SUCCESS (runs.stage_files).
    files = runs.stage_files(config.rotated_dir(), STAGE, "render", rows_key="renders")
    if not files:
        raise ValueError(f"{runs.redact_uri(config.rotated_dir())} holds no renders")
    # report/ also holds the other stages' figures, and an evaluation rewrites every file it
    # writes: a record of other inputs is replaced, not refused as the shard-writing stages must.
    stage = Stage(STAGE, config.root, layout.report, _fingerprint(config, data_uri), to_mapping(config),
                  "renders", "renders", replace=True)
    report: dict[str, Any] = {}

    def work() -> dict[str, Any]:
        report.update(_evaluate(config, data_uri, files))
        return {"renders": report["summary"]["n_renders"], "summary": report["summary"]}

    run_stage(stage, work)
    return report or {**storage.read_json(layout.report_file("report.json")), "skipped": True}


def _evaluate(config: EvaluateConfig, data_uri: str, files: list[str]) -> dict[str, Any]:
    """The work: the judge, a measure task per file, the aggregate, the figures and files; the report."""
    started = time.time()
    report_dir = RunLayout(config.root).report
    source_col = tables.read_parquet_files(files, columns=["source_id"]).column("source_id")
    source_ids, size = sorted(set(source_col.to_pylist())), _render_size(files)
    log.info("evaluate: %d renders of %d sources in %d files, size %d", len(source_col), len(source_ids),
             len(files), size)
    synthetic = storage.exists(storage.join(data_uri, "truth.parquet"))
    spec, pose, notes = (_synthetic_judge(config, data_uri, source_ids, size, report_dir) if synthetic
                         else _real_judge(data_uri, size))
    del source_col, source_ids
    metrics, made = measure_all(files, spec, sum(tables.count_rows(f) for f in files))
    if synthetic:
        pose["ground_truth_renders"] = made
    if (labeller := labeller_of(config.root)):
        pose["labeller"] = {"seed": labeller.get("seed"), "arch": labeller.get("arch"),
                            "note": "the method's own pose-and-light CNN (samples stage, -cal methods); "
                                    "the judge above is another network, seed and set of identities"}
    if (reader := labeller_of(config.root, "reader")):
        pose["reader"] = {"seed": reader.get("seed"), "arch": reader.get("arch"),
                          "note": "what calibration reads (-cal and local methods): the labeller's kind "
                                  "of network with its own seed, not the one the steps follow"}
    if (steerers := steerers_of(config.root)):
        pose["steerers"] = {"seeds": [k.get("seed") for k in steerers], "arch": steerers[0].get("arch"),
                            "note": "what the local steps follow with the labeller (their mean reading): "
                                    "more of its kind, other seeds; neither the reader nor the judge"}
    recon_psnr, recon_rows = _latents_psnr(config.root)
    measured = A.aggregate(metrics, A.Context(primary=config.primary, synthetic=synthetic, pose=pose,
                                              notes=tuple(notes), latents_recon_psnr=recon_psnr,
                                              latents_recon_rows=recon_rows))
    figures = figures_of(measured, metrics, files, spec, config)
    report = _report(config, measured, data_uri, list(figures), started)
    write_report(config, report, figures, metrics)
    log.info("evaluate: %s", {k: report["summary"][k] for k in ("method", "pose_error_deg_median", "psnr_db_mean",
                                                                 "identity_top1", "targets_met", "targets_total")})
    return report
