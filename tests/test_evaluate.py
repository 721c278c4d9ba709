"""headrot evaluate on a hand-built run (no models): an oracle whose renders ARE the ground
truth, and no_move whose renders are the sources, on a tiny synthetic dataset."""
from __future__ import annotations

import io
import json
import re
import shutil

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from headrot import runs, storage, tables
from headrot.data.images import decode_face
from headrot.labels.pose import PoseConfig, YawEstimator
from headrot.stages.evaluate import EvaluateConfig, run_evaluate
from headrot.synth.writer import read_truth, rerender, write_synthetic_celeba

S = 32
DELTAS = (-30, -10, 0, 10, 30)
N_SOURCES = 6
# A small estimator: fits in seconds; the assertions allow for its measured error.
POSE = dict(pose_identities=120, pose_per_identity=6, pose_heldout=20, pose_epochs=15)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _write_rotated(root, rows) -> None:
    pngs = [_png(r.pop("image")) for r in rows]
    table = pa.table({
        "source_id": pa.array([r["source_id"] for r in rows], pa.string()),
        "delta": pa.array([r["delta"] for r in rows], pa.int16()),
        "target_yaw": pa.array([r["target_yaw"] for r in rows], pa.float32()),
        "method": pa.array([r["method"] for r in rows], pa.string()),
        "trajectory_key": pa.array(["none"] * len(rows), pa.string()),
        "fallback": pa.array(["none"] * len(rows), pa.string()),
        "partition": pa.array([r["partition"] for r in rows], pa.int8()),
        "identity": pa.array([r["identity"] for r in rows], pa.int32()),
        "yaw": pa.array([r["yaw"] for r in rows], pa.float32()),
        "light": pa.array([r["light"] for r in rows], pa.string()),
        "image": pa.StructArray.from_arrays(
            [pa.array(pngs, pa.binary()), pa.array([f"r{i}.png" for i in range(len(rows))], pa.string())],
            names=["bytes", "path"]),
    })
    out = storage.join(root, "rotated")
    tables.write_parquet(storage.join(out, "part-00000.parquet"), table)
    # What the render stage records: readers check the rows they see against it (runs.stage_files).
    storage.mark_complete(out, {"fingerprint": "test", "renders": table.num_rows, "shards": 1})


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory, ray_cluster):
    base = tmp_path_factory.mktemp("evaluate")
    data, root = str(base / "data"), str(base / "run")
    write_synthetic_celeba(data, n=40, seed=3, images_per_identity=4)  # 10 identities
    truth = read_truth(data).to_pylist()
    # Sources with room to turn 30 degrees either way inside the estimator's range.
    picked = [r for r in truth if abs(r["yaw"]) <= 35][:N_SOURCES]
    rows = []
    for r in picked:
        source = decode_face(storage.read_bytes(storage.join(data, "img_align_celeba", r["image_id"])), S)
        for d in DELTAS:
            truth_img = decode_face(_png(rerender(r, yaw_deg=r["yaw"] + d)), S)
            for method, image in (("oracle", truth_img), ("no_move", source)):
                rows.append({"source_id": r["image_id"], "delta": d, "target_yaw": r["yaw"] + d,
                             "method": method, "partition": r["partition"], "identity": r["identity"],
                             "yaw": r["yaw"], "light": r["light"], "image": image})
    _write_rotated(root, rows)
    runs.claim_stage(root, "embed", "test", {"data": data, "out": root}, storage.join(root, "latents"))  # --data defaults from run.json
    report = run_evaluate(EvaluateConfig(root=root, **POSE))
    return {"data": data, "root": root, "report": report, "picked": picked, "base": base}


def test_oracle_is_perfect(synthetic_run):
    report = synthetic_run["report"]
    assert report["kind"] == "synthetic"
    oracle = report["methods"]["oracle"]
    assert sorted(int(d) for d in oracle) == sorted(DELTAS)
    for d, v in oracle.items():
        assert v["n"] == N_SOURCES
        assert v["psnr_db"] == 100.0 and v["colour_psnr_db"] == 100.0, d
        assert v["ssim"] == pytest.approx(1.0)
        assert v["identity_top1"] == 1.0
    s = report["summary"]
    assert s["method"] == "oracle" and s["psnr_db_mean"] == 100.0 and s["identity_top1"] == 1.0
    assert report["targets"]["identity"]["met"] is True
    assert report["targets"]["beats_no_move"]["met"] is True
    assert report["targets"]["light_conditioning"]["met"] is None  # light_agnostic not rendered
    # no_move is the source itself: the embedding is perfect too.
    assert report["embedding"]["psnr_db"] == 100.0 and report["embedding"]["method"] == "no_move"


def test_no_move_pose_error_is_the_delta(synthetic_run):
    report = synthetic_run["report"]
    pose = report["pose_estimator"]
    mae = pose["mae_deg_heldout"]
    assert pose["kind"] == "cnn" and 0 < mae < 8, pose
    tol = mae + 4.0
    for d, v in report["methods"]["no_move"].items():
        assert abs(v["pose_error_deg_median"] - abs(int(d))) <= tol, (d, v, mae)
        assert v["identity_top1"] == 1.0 if int(d) == 0 else True
    # The oracle sits at the target yaw: its error is the estimator's own.
    for d, v in report["methods"]["oracle"].items():
        assert v["pose_error_deg_median"] <= tol, (d, v)
    # Per light class: every render counted once per method.
    assert sum(v["n"] for v in report["per_light"]["oracle"].values()) == N_SOURCES * len(DELTAS)


def test_pose_by_target_yaw_puts_the_judges_floor_beside_each_method(synthetic_run):
    """The oracle's renders are the ground truths: in every |target yaw| band its pose error is the
    judge's own error on them; the bands hold every turned render once."""
    from headrot.evaluate.aggregate import TARGET_BANDS, band_label

    bands = synthetic_run["report"]["pose_by_target_yaw"]
    assert set(bands) == {"oracle", "no_move"}
    for band, v in bands["oracle"].items():
        assert band in {band_label(k) for k in range(len(TARGET_BANDS))}
        assert v["pose_error_deg_median"] == v["judge_on_truth_deg_median"], band
    turned = N_SOURCES * sum(1 for d in DELTAS if d)
    assert sum(v["n"] for v in bands["oracle"].values()) == turned
    # no_move stays at the source's yaw: off by |delta| wherever its target is, far above the floor
    assert all(v["pose_error_deg_median"] > v["judge_on_truth_deg_median"] + 5 for v in bands["no_move"].values())
    rdir = storage.join(synthetic_run["root"], "report")
    assert storage.exists(storage.join(rdir, "pose_error_vs_target_yaw.png"))


def test_report_files_are_self_contained(synthetic_run):
    rdir = storage.join(synthetic_run["root"], "report")
    page = storage.read_bytes(storage.join(rdir, "report.html")).decode()
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert len(srcs) >= 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<script" not in page and "<link" not in page and "url(" not in page
    on_disk = json.loads(storage.read_bytes(storage.join(rdir, "report.json")))
    assert on_disk["summary"] == synthetic_run["report"]["summary"]
    for key in ("summary", "methods", "per_light", "embedding", "pose_estimator", "targets"):
        assert key in on_disk
    for name in ("pose_error_vs_delta.png", "psnr_vs_delta.png", "cases_oracle.png", "metrics.parquet"):
        assert storage.exists(storage.join(rdir, name)), name
    metrics = tables.read_parquet(storage.join(rdir, "metrics.parquet"))
    assert metrics.num_rows == 2 * N_SOURCES * len(DELTAS)


def test_pose_estimator_cache_is_reused(synthetic_run):
    uri = storage.join(synthetic_run["root"], "report", "yaw_estimator.npz")
    with np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False) as npz:  # no pickle inside
        assert "meta" in npz.files
    cfg = PoseConfig(size=S, seed=synthetic_run["report"]["pose_estimator"]["seed"],
                     n_identities=POSE["pose_identities"], per_identity=POSE["pose_per_identity"],
                     n_heldout=POSE["pose_heldout"], epochs=POSE["pose_epochs"])
    est = YawEstimator.load(uri, cfg)
    assert est is not None and est.metrics["mae_deg_heldout"] == synthetic_run["report"]["pose_estimator"]["mae_deg_heldout"]
    assert YawEstimator.load(uri, PoseConfig(size=S, epochs=1)) is None  # other settings: refit
    # Antisymmetric: a mirrored face reads the opposite yaw.
    face = decode_face(storage.read_bytes(storage.join(synthetic_run["data"], "img_align_celeba",
                                                       synthetic_run["picked"][0]["image_id"])), S)
    y, y_flip = est.predict(np.stack([face, face[:, ::-1]]))
    assert y == pytest.approx(-y_flip, abs=1e-4)


def test_real_data_without_truth(synthetic_run):
    base = synthetic_run["base"]
    real = base / "real"
    shutil.copytree(synthetic_run["data"], real, ignore=shutil.ignore_patterns("truth.parquet"))
    root2 = base / "run-real"
    shutil.copytree(base / "run" / "rotated", root2 / "rotated")
    report = run_evaluate(EvaluateConfig(root=str(root2), data=str(real)))
    assert report["kind"] == "real"
    assert report["embedding"]["psnr_db"] == 100.0
    assert report["summary"]["psnr_db_mean"] is None
    try:
        import mediapipe  # noqa: F401
    except ImportError:
        assert report["pose_estimator"]["kind"] == "skipped"
        assert any("mediapipe not installed" in n for n in report["notes"])
    page = (root2 / "report" / "report.html").read_text()
    assert "mediapipe" in page
    assert (root2 / "report" / "cases_no_move.png").exists()  # reconstructions: source | G(z)


def test_achieved_yaw_of_the_oracle_follows_the_delta(synthetic_run):
    """The judge reads the oracle's renders turned by the delta (from its delta-0 render), evenly."""
    report = synthetic_run["report"]
    mae = report["pose_estimator"]["mae_deg_heldout"]
    for d, v in report["methods"]["oracle"].items():
        assert abs(v["achieved_yaw_deg_median"] - int(d)) <= mae + 4.0, (d, v)
    assert all(v["achieved_yaw_deg_median"] == 0 and v["achieved_yaw_deg_iqr"] == 0
               for v in report["methods"]["no_move"].values())


def test_the_method_must_not_be_graded_by_its_own_estimator(synthetic_run, tmp_path):
    """A run whose samples stage labelled with the judge's seed, or with its architecture, is refused."""
    from headrot.labels.pose import check_independent

    judge = PoseConfig(size=S, seed=1_000_003)
    check_independent(judge, None)                                               # no labeller: fine
    check_independent(judge, {"seed": 2_000_003, "arch": "maxpool4"})            # independent: fine
    for shared in ({"seed": 1_000_003, "arch": "maxpool4"}, {"seed": 5, "arch": "avgpool3"}):
        with pytest.raises(ValueError, match="own estimator"):
            check_independent(judge, shared)
        # Calibration's reader is one of the method's estimators too.
        with pytest.raises(ValueError, match="own estimator"):
            check_independent(judge, {"seed": 2_000_003, "arch": "maxpool4"}, shared)
    root = tmp_path / "run"
    shutil.copytree(synthetic_run["base"] / "run", root)
    shutil.rmtree(root / "report")
    seed = synthetic_run["report"]["pose_estimator"]["seed"]
    storage.mark_complete(str(root / "samples"), {"rows": 0, "labeller": {"seed": seed, "arch": "maxpool4"}})
    with pytest.raises(ValueError, match="own estimator"):
        run_evaluate(EvaluateConfig(root=str(root), **POSE))
    storage.mark_complete(str(root / "samples"), {"rows": 0, "labeller": {"seed": 7, "arch": "maxpool4"},
                                                  "reader": {"seed": seed, "arch": "maxpool4"}})
    with pytest.raises(ValueError, match="own estimator"):
        run_evaluate(EvaluateConfig(root=str(root), **POSE))
    # So is every steering network the local steps followed.
    storage.mark_complete(str(root / "samples"), {"rows": 0, "labeller": {"seed": 7, "arch": "maxpool4"},
                                                  "steerers": [{"seed": 8, "arch": "maxpool4"},
                                                               {"seed": seed, "arch": "maxpool4"}]})
    with pytest.raises(ValueError, match="own estimator"):
        run_evaluate(EvaluateConfig(root=str(root), **POSE))


# ---------------------------------------------------------------------------
# Measure per shard, aggregate over shards; the stage protocol


def _split_rotated(src_root, dst_root, groups) -> list[str]:
    """Copy the run's one rotated file into len(groups) files (groups: row indices each), with a
    _SUCCESS like the render stage's; returns the new files."""
    table = tables.read_parquet(storage.join(str(src_root), "rotated", "part-00000.parquet"))
    out = storage.join(str(dst_root), "rotated")
    files = []
    for i, rows in enumerate(groups):
        files.append(storage.join(out, f"part-{i:05d}.parquet"))
        tables.write_parquet(files[-1], table.take(pa.array(rows)))
    storage.mark_complete(out, {"fingerprint": "split", "renders": table.num_rows, "shards": len(groups)})
    return files


def _content(report: dict) -> dict:
    """What must not depend on how the renders were sharded: all but where and when."""
    out = {k: v for k, v in report.items() if k not in ("inputs", "seconds", "files", "versions", "skipped")}
    out["config"] = {k: v for k, v in out["config"].items() if k != "root"}
    out["pose_estimator"] = {k: v for k, v in out["pose_estimator"].items() if k != "cached"}
    return out


def test_renders_split_into_shards_give_the_same_report(synthetic_run, tmp_path):
    """The render stage's shape (each source's renders in one shard), three shards: one Ray task
    each, and the same report.json content as the unsplit run, figures and metrics included."""
    run = tmp_path / "split"
    sids = tables.read_parquet(storage.join(synthetic_run["root"], "rotated", "part-00000.parquet"),
                               columns=["source_id"]).column("source_id").to_pylist()
    order = sorted(set(sids))
    groups = [[i for i, s in enumerate(sids) if order.index(s) % 3 == k] for k in range(3)]
    _split_rotated(synthetic_run["base"] / "run", run, groups)
    shutil.copytree(synthetic_run["base"] / "run" / "report", run / "report",
                    ignore=shutil.ignore_patterns("*.png", "*.html", "*.json", "_SUCCESS", "metrics.parquet"))
    shutil.copy(synthetic_run["base"] / "run" / runs.RUN_JSON, run / runs.RUN_JSON)
    report = run_evaluate(EvaluateConfig(root=str(run), **POSE))
    assert report["pose_estimator"]["cached"] is True          # the driver loaded the judge once
    assert _content(report) == _content(synthetic_run["report"])
    one, three = (tables.read_parquet(str(r / "report" / "metrics.parquet"))
                  for r in (synthetic_run["base"] / "run", run))
    key = lambda t: sorted(zip(*(t.column(c).to_pylist() for c in t.column_names)), key=str)  # noqa: E731
    assert key(one) == key(three)
    assert (run / "report" / "cases_oracle.png").exists() and (run / "report" / "psnr_vs_delta.png").exists()


def test_aggregate_of_any_split_is_the_aggregate_of_the_whole(synthetic_run, tmp_path):
    """measure on rows dealt round-robin into 4 files (a source's renders in several shards),
    without Ray: the merged metrics aggregate to exactly the unsplit report's numbers."""
    from headrot.evaluate import aggregate as A
    from headrot.evaluate.measure import MeasureSpec, measure

    n = 2 * N_SOURCES * len(DELTAS)
    files = _split_rotated(synthetic_run["base"] / "run", tmp_path, [list(range(k, n, 4)) for k in range(4)])
    whole = storage.join(synthetic_run["root"], "rotated", "part-00000.parquet")
    pose = synthetic_run["report"]["pose_estimator"]
    spec = MeasureSpec(data=synthetic_run["data"], size=S, synthetic=True,
                       estimator=storage.join(synthetic_run["root"], "report", "yaw_estimator.npz"),
                       pose=PoseConfig(size=S, seed=pose["seed"], n_identities=POSE["pose_identities"],
                                       per_identity=POSE["pose_per_identity"], n_heldout=POSE["pose_heldout"],
                                       epochs=POSE["pose_epochs"]),
                       identities=tuple(sorted({r["identity"] for r in read_truth(synthetic_run["data"]).to_pylist()
                                                if r["image_id"] in {p["image_id"] for p in synthetic_run["picked"]}})))
    parts = [measure(i, f, spec) for i, f in enumerate(files)]
    unsplit, _ = measure(0, whole, spec)
    split = A.merge([t for t, _ in parts])
    assert [t.num_rows for t, _ in parts] == [15, 15, 15, 15] and split.num_rows == unsplit.num_rows
    assert split.column("file").to_pylist()[:16] == [0] * 15 + [1]   # where each row's image is
    ctx = A.Context(primary="headrot", synthetic=True, pose={"kind": "cnn", "mae_deg_sources": None})
    got, want = A.aggregate(split, ctx), A.aggregate(unsplit, ctx)
    assert got == want
    assert got["methods"] == synthetic_run["report"]["methods"]
    assert got["summary"] == {**synthetic_run["report"]["summary"], "pose_estimator_mae_deg": None}
    assert got["pose_estimator"]["mae_deg_sources"] == pose["mae_deg_sources"]
    # The cases are picked from the rows alone: the same renders, found in their shards.
    picks = A.pick_cases(split, "oracle", 2, True)
    assert [p["kind"] for p in picks] == ["best"] * 2 + ["median"] * 2 + ["worst"] * 2
    assert [p["label"] for p in picks] == [p["label"] for p in A.pick_cases(unsplit, "oracle", 2, True)]


def test_evaluate_is_recorded_in_run_json(synthetic_run):
    run = runs.read_run_json(synthetic_run["root"])
    recorded = run["stages"]["evaluate"]
    assert recorded["fingerprint"] == storage.completion(storage.join(synthetic_run["root"], "report"))["fingerprint"]
    assert recorded["config"]["gallery_max"] == 64 and "versions" in recorded
    assert "embed" in run["stages"]                                  # the other stages' records kept


def test_evaluate_refuses_a_root_another_process_holds(synthetic_run, tmp_path):
    import os
    import signal

    from headrot import lock as runlock
    from tests.test_reliability import _holder

    root = tmp_path / "run"
    shutil.copytree(synthetic_run["base"] / "run", root)
    shutil.rmtree(root / "report")
    before = (root / runs.RUN_JSON).read_bytes()
    holder = _holder(str(root))
    try:
        with pytest.raises(runlock.LockHeld) as info:
            run_evaluate(EvaluateConfig(root=str(root), **POSE))
        assert str(root) in str(info.value) and f"pid {holder.pid}" in str(info.value)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
    assert not (root / "report").exists()                            # refused before any work
    assert (root / runs.RUN_JSON).read_bytes() == before


def test_true_turns_have_no_colour_faults(synthetic_run):
    """The renderer's own turns keep their source's colours: no render of the oracle (or of
    no_move, the source itself) counts as a colour fault."""
    report = synthetic_run["report"]
    for method in ("oracle", "no_move"):
        for d, v in report["methods"][method].items():
            assert v["colour_fault_rate"] == 0.0 and v["novel_colour_share"] < 0.01, (method, d, v)
    assert report["summary"]["colour_fault_rate"] == 0.0


def test_a_recoloured_render_is_a_colour_fault_without_any_ground_truth(synthetic_run, tmp_path):
    """measure on real-data settings (no truth, no judge): a render whose hair and skin changed colour
    has most of its pixels in colours its source lacks; the source drawn again has none; aggregate
    counts the one as a fault and not the other."""
    from headrot.evaluate.aggregate import Context, aggregate
    from headrot.evaluate.measure import MeasureSpec, measure

    r = synthetic_run["picked"][0]
    source = decode_face(storage.read_bytes(storage.join(synthetic_run["data"], "img_align_celeba", r["image_id"])), S)
    rows = [{"source_id": r["image_id"], "delta": 10, "target_yaw": r["yaw"] + 10, "method": m,
             "partition": r["partition"], "identity": r["identity"], "yaw": r["yaw"], "light": r["light"],
             "image": image} for m, image in (("same", source.copy()), ("recoloured", source[..., ::-1].copy()))]
    _write_rotated(str(tmp_path), rows)
    table, _ = measure(0, storage.join(str(tmp_path), "rotated", "part-00000.parquet"),
                       MeasureSpec(data=synthetic_run["data"], size=S, synthetic=False))
    share = dict(zip(table.column("method").to_pylist(), table.column("novel_colour_share").to_pylist()))
    assert share["same"] == 0.0 and share["recoloured"] > 0.3
    methods = aggregate(table, Context(primary="recoloured", synthetic=False, pose={}))["methods"]
    assert methods["recoloured"]["10"]["colour_fault_rate"] == 1.0 and methods["same"]["10"]["colour_fault_rate"] == 0.0
