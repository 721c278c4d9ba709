"""Smoke tests of the benchmarks at tiny sizes: JSON with the expected keys, finite positive rates,
and BENCHMARKS.md built from them. The figures themselves are not checked (shared machines)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_model_and_train_benchmarks_write_results(tmp_path):
    from bench import all as bench_all
    from bench import common, model, train

    result = common.write_result("model", model.run(("tiny",), quick=True), tmp_path)
    tiny = result["tiny"]
    for key in ("forward_image_calls_per_s", "render_images_per_s", "embed_images_per_s",
                "render_flop_bound", "embed_flop_bound", "render_of_flop_bound"):
        assert _positive(tiny[key]), (key, tiny[key])
    # Inversion with the default (5, 2) iterations at 10 steps: 5 fixed-point calls, 9 steps of
    # 1 + 2 calls, then 10 calls to decode the reconstruction.
    assert tiny["embed_calls_per_image"] == 5 + 9 * 3 + 10
    assert _positive(result["matmul_gflop_per_s"]) and result["machine"]["cores"] >= 1

    result = common.write_result("train", train.run(("tiny",), quick=True, steps=1), tmp_path)
    for key in ("samples_per_s", "flop_bound_samples_per_s", "of_flop_bound"):
        assert _positive(result["tiny"][key]), key
    assert json.loads((tmp_path / "train.json").read_text())["benchmark"] == "train"

    text = bench_all.report(tmp_path)
    assert "## Model on this CPU" in text and "## Training step" in text and "Scaling projection" in text


def test_fit_benchmark_against_pyarrow_read(ray_cluster, tmp_path):
    from bench import common, fit

    result = common.write_result("fit", fit.run(300, "demo", n_files=2, quick=True, workdir=str(tmp_path)), tmp_path)
    for key in ("ray_rows_per_s", "ray_mb_per_s", "read_mb_per_s", "plain_fit_mb_per_s", "ratio"):
        assert _positive(result[key]), (key, result[key])
    assert result["rows"] == 300 and result["files"] == 2


def test_latent_yardstick_on_a_hand_built_metrics_table():
    """bench.latent's figures from a per-render table whose answers are worked out by hand:
    method 'half' turns every head by half the delta, 'spread' by the delta +- 4 (IQR 8 at 20)."""
    import pandas as pd

    from bench.latent import grid_methods, yardstick

    rows = []
    for src in range(4):
        for d in (-20, -10, 0, 10, 20):
            for method, achieved, psnr in (("half", d / 2, 15.0), ("spread", d + (4 if src % 2 else -4) * (d != 0), 17.0),
                                           ("no_move", 0.0, 16.0)):
                rows.append({"source_id": f"s{src}", "method": method, "delta": d, "estimated_yaw": 5.0 + achieved,
                             "pose_error_deg": abs(achieved - d), "psnr_db": psnr, "identity_top1": 1.0})
    metrics = pd.DataFrame(rows)
    half = yardstick(metrics, "half")
    assert half["slope"] == 0.5 and half["iqr_at_20_deg"] == 0
    assert half["psnr_gain_db_by_delta"] == {-20: -1.0, -10: -1.0, 10: -1.0, 20: -1.0} and not half["beats_no_move"]
    spread = yardstick(metrics, "spread")
    assert spread["slope"] == 1.0 and spread["iqr_at_20_deg"] == 8.0 and spread["beats_no_move"]
    assert spread["pose_error_deg_median"] == 4.0
    grid = grid_methods()
    assert len(grid) == 23 + 5 and "local-ortho-norm-cal" in grid and "embeddings" not in grid


def test_latent_rows_name_the_yaw_file_they_measured(tmp_path):
    """The generator table's first row describes the yaw generator from the export record inside
    the file (probe, weights, step, command), not from a sentence typed after the run."""
    from dataclasses import replace

    from bench.latent import yaw_generator_provenance
    from headrot.model.checkpoint import save_model
    from headrot.model.unet import PRESETS, UNet

    config = replace(PRESETS["tiny"], yaw_harmonics=2)
    record = {"probe": "far80-b", "weights": "net", "step": 22835,
              "made_by": "python -m bench.yaw_conditioned export far80-b --weights net"}
    save_model(str(tmp_path / "yaw.pt"), "generator", UNet(config), config, extra={"yaw_conditioned": record})
    said = yaw_generator_provenance(str(tmp_path / "yaw.pt"))
    assert "far80-b's net weights" in said and "22,835 steps" in said and record["made_by"] in said
    save_model(str(tmp_path / "bare.pt"), "generator", UNet(config), config)
    assert "no export record" in yaw_generator_provenance(str(tmp_path / "bare.pt"))


def test_average_checkpoints_is_the_mean_of_the_weights_and_refuses_another_network(tmp_path):
    import torch

    from bench.average_checkpoints import average_checkpoints
    from headrot.model.checkpoint import load_model, save_model
    from headrot.model.unet import PRESETS, UNet, UNetConfig

    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = UNet(PRESETS["tiny"])
        for p in net.parameters():  # the zero-initialised output conv too, so every weight differs
            p.data.normal_()
        paths.append(str(tmp_path / f"g{seed}.pt"))
        save_model(paths[-1], "generator", net, PRESETS["tiny"])
    average_checkpoints(str(tmp_path / "mean.pt"), paths)
    a, b, mean = (load_model(p, "generator")[0].state_dict() for p in paths + [str(tmp_path / "mean.pt")])
    for k in mean:
        assert torch.allclose(mean[k], (a[k] + b[k]) / 2, atol=1e-6), k
    assert not all(torch.equal(mean[k], a[k]) for k in mean)  # it is not the first input passed through

    other = UNetConfig(image_size=16, widths=(8, 16), block_depth=1, embedding_dims=8, norm_groups=4)
    save_model(str(tmp_path / "other.pt"), "generator", UNet(other), other)
    with pytest.raises(ValueError, match="another network"):
        average_checkpoints(str(tmp_path / "x.pt"), [paths[0], str(tmp_path / "other.pt")])


def test_quality_screen_of_a_candidate_writes_to_its_own_folder(tmp_path):
    """`bench.quality --results DIR --refine-n 0`: a candidate's screen lands in DIR (the shipped
    model's quality.json stays), with an inversion PSNR and no refine figure it did not measure."""
    import torch

    from bench import quality
    from bench.common import RESULTS
    from headrot.model.checkpoint import save_model
    from headrot.model.unet import PRESETS, UNet

    torch.manual_seed(0)
    save_model(str(tmp_path / "g.pt"), "generator", UNet(PRESETS["tiny"]), PRESETS["tiny"])
    shipped = (RESULTS / "quality.json").read_bytes()
    out = tmp_path / "screen"
    result = quality.main(["--generator", str(tmp_path / "g.pt"), "--n", "4", "--refine-n", "0",
                           "--results", str(out)])
    assert math.isfinite(result["inversion"]["psnr_db_mean"]) and "refine" not in result
    assert json.loads((out / "quality.json").read_text())["n"] == 4
    assert (out / "demo_samples.png").exists() and (out / "demo_inversion.png").exists()
    assert (RESULTS / "quality.json").read_bytes() == shipped


def _root_metrics(n_sources: int, error_of, psnr_of) -> "object":
    """A per-render table for method `m` and no_move: error_of(src, d) degrees off, psnr_of(src, d) dB."""
    import pandas as pd

    rows = []
    for src in range(n_sources):
        for d in (-20, -10, 0, 10, 20):
            err = error_of(src, d) if d else 0.0
            rows.append({"source_id": f"s{src}", "method": "m", "delta": d, "estimated_yaw": d - err,
                         "pose_error_deg": abs(err), "psnr_db": psnr_of(src, d), "identity_top1": 1.0})
            rows.append({"source_id": f"s{src}", "method": "no_move", "delta": d, "estimated_yaw": 0.0,
                         "pose_error_deg": abs(d), "psnr_db": 15.0, "identity_top1": 1.0})
    return pd.DataFrame(rows)


def test_compare_roots_pairs_the_faces():
    """bench.compare_roots: a candidate 2 degrees closer on every face is better in every draw,
    however much the faces differ among themselves; one whose faces turn alike is better on the IQR
    at 20; a root against itself differs by nothing; roots of other faces are refused."""
    import pandas as pd

    from bench.compare_roots import compare

    base = _root_metrics(12, lambda s, d: 3.0 + s, lambda s, d: 16.0 + 0.1 * s)
    closer = _root_metrics(12, lambda s, d: 1.0 + s, lambda s, d: 15.5 + 0.1 * s)
    row = compare(base, closer, method="m", n=200)
    pose, gain = row["pose_error_diff_deg"], row["worst_psnr_gain_diff_db"]
    assert pose["observed"] == -2.0 and pose["interval_90"] == [-2.0, -2.0] and pose["p_candidate_better"] == 1.0
    assert gain["observed"] == -0.5 and gain["p_candidate_better"] == 0.0
    # Shifted errors spread the same: the IQR of the achieved turn is unchanged.
    assert row["iqr_at_20_diff_deg"]["observed"] == 0.0
    alike = compare(base, _root_metrics(12, lambda s, d: 3.0 + s / 2, lambda s, d: 16.0), method="m", n=200)
    assert alike["iqr_at_20_diff_deg"]["observed"] == -2.75 and alike["iqr_at_20_diff_deg"]["p_candidate_better"] > 0.95
    same = compare(base, base, method="m", n=50)["pose_error_diff_deg"]
    assert same["interval_90"] == [0.0, 0.0] and same["p_candidate_better"] == 0.0
    with pytest.raises(ValueError, match="different faces"):
        compare(base, _root_metrics(11, lambda s, d: 1.0, lambda s, d: 16.0), method="m", n=5)
    # Two methods of one root: the base's method renamed, the same answer as two roots.
    both = pd.concat([base, closer[closer.method == "m"].assign(method="k")], ignore_index=True)
    within = compare(both, both, method="k", base_method="m", n=200)
    assert within["pose_error_diff_deg"] == pose and within["base_method"] == "m"


def test_gpu_script_rehearses_on_the_cpu(ray_cluster, tmp_path):
    # The device run's script end to end at the tiny preset, as it is rehearsed before a lease:
    # faces rendered by a spawned pool, a probe, training to the deadline, the fp16 parts, the
    # render and embed loops with the trained network, and its section of BENCHMARKS.md.
    import torch

    from bench import all as bench_all
    from bench import gpu
    from headrot.model.checkpoint import load_model

    render_root = str(tmp_path / "render-inputs")
    gpu.prepare_render(render_root, "tiny", 16)
    out = tmp_path / "out"
    gpu.main(["run", "--out", str(out), "--preset", "tiny", "--images", "60", "--batch", "16", "--budget", "14", "--reserve", "4",
              "--no-compile", "--probe-s", "0.5", "--log-every", "5", "--render-root", render_root,
              "--render-batch", "32", "--embed-images", "12", "--embed-batch", "4"])
    report = json.loads((out / "gpu.json").read_text())
    assert report["done"] is True and report["data"]["images"] == 60
    assert report["train"]["steps"] > 10 and _positive(report["train"]["samples_per_s_steady"])
    losses = [h["loss"] for h in report["history"]]
    assert losses[-1] < losses[0]  # it learned something in its seconds
    assert report["render"]["renders"] == 16 * 7 and report["embed"]["written"] == 12
    for name in ("samples.png", "loss_curve.png", "data.png", "model.part0.pt"):
        assert (out / name).stat().st_size > 0, name

    # the parts (fp16) join into a checkpoint that loads as float32, equal to the parts' weights
    parts = sorted(str(p) for p in out.glob("model.part*.pt"))
    model, config, _ = load_model(gpu.join_parts(str(tmp_path / "model.pt"), parts), "generator")
    assert config.image_size == 16 and next(model.parameters()).dtype == torch.float32
    saved = {k: v for p in parts for k, v in torch.load(p, weights_only=True)["state_dict"].items()}
    assert all(torch.equal(model.state_dict()[k], v.float()) for k, v in saved.items())

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "gpu.json").write_text(json.dumps({**report, "date": "test"}))
    assert "## On a GPU: the tiny network (cpu, test)" in bench_all.report(tmp_path / "results")


def test_gpu_parts_stay_under_the_limit_and_must_be_complete(tmp_path):
    import torch

    from bench import gpu
    from headrot.model.unet import PRESETS, UNet

    net = UNet(PRESETS["tiny"])
    written = gpu.export_parts(tmp_path, net, PRESETS["tiny"], limit=4096)
    assert len(written) > 1
    for part in written:
        weights = torch.load(tmp_path / part["file"], weights_only=True)["state_dict"]
        big = max(v.numel() * 2 for v in weights.values())
        assert sum(v.numel() * 2 for v in weights.values()) <= max(4096, big)  # a lone tensor may exceed it
    with pytest.raises(ValueError, match="every model.partN.pt"):
        gpu.join_parts(str(tmp_path / "m.pt"), [str(tmp_path / written[0]["file"])])


def test_the_yardstick_counts_colour_faults_at_twenty_degrees_and_beyond():
    """colour_fault_rate_far: renders at |delta| >= 20 over the evaluation's 3% of novel colours;
    a metrics table written before the column existed has no such figure."""
    from bench.latent import yardstick

    metrics = _root_metrics(4, lambda s, d: 1.0, lambda s, d: 16.0)
    assert "colour_fault_rate_far" not in yardstick(metrics, "m")
    # Faces 0 and 1 break at +-20 (and face 0 at 10, which does not count): 4 of 8 far renders.
    metrics["novel_colour_share"] = [0.2 if r.method == "m" and ((abs(r.delta) >= 20 and r.source_id in ("s0", "s1"))
                                                                  or (r.delta == 10 and r.source_id == "s0")) else 0.01
                                     for r in metrics.itertuples()]
    assert yardstick(metrics, "m")["colour_fault_rate_far"] == 0.5
    assert yardstick(metrics, "no_move")["colour_fault_rate_far"] == 0.0


def test_pipeline_curve_places_each_root_by_its_file(tmp_path):
    """bench.pipeline_curve: each root's point at the step its yaw file records, tuned or not as its
    render stage ran, with that root's figures; a file without the record is named in the error."""
    import torch

    from bench import pipeline_curve
    from headrot.model.checkpoint import save_model
    from headrot.model.unet import PRESETS, UNet

    torch.manual_seed(0)
    net = UNet(PRESETS["tiny"])
    roots = []
    for name, step, tuned, error in (("a", 100, 50, 3.0), ("b", 200, 0, 1.0)):
        root = tmp_path / name
        (root / "report").mkdir(parents=True)
        _root_metrics(6, lambda s, d: error, lambda s, d: 16.0).to_parquet(root / "report" / "metrics.parquet")
        (root / "run.json").write_text(json.dumps({"stages": {"render": {"config": {"pivotal_steps": tuned}}}}))
        save_model(str(root / "checkpoints" / "generator_yaw" / "model.pt"), "generator", net, PRESETS["tiny"],
                   extra={"yaw_conditioned": {"probe": f"p{name}", "step": step, "weights": "ema"}})
        roots.append(str(root))
    figure = tmp_path / "curve.png"
    points = pipeline_curve.main([*roots, "--method", "m", "--to", str(figure)])
    assert [(p["step"], p["pivotal_steps"], p["pose_error_deg_median"]) for p in points] == [(100, 50, 3.0), (200, 0, 1.0)]
    assert figure.stat().st_size > 0 and points[0]["sources"] == 6
    save_model(str(tmp_path / "a" / "checkpoints" / "generator_yaw" / "model.pt"), "generator", net, PRESETS["tiny"])
    with pytest.raises(ValueError, match="generator_yaw/model.pt: the file records no training step"):
        pipeline_curve.point(roots[0], "m")


def test_inversion_gap_is_zero_for_the_networks_own_inversions(tmp_path):
    """bench.inversion_gap: pairs whose cached latents the checkpoint made itself show no gap (the
    same latents, the same draws); cached latents from elsewhere do."""
    import numpy as np
    import torch

    from bench import inversion_gap
    from bench.yaw_conditioned import ROOT, conditional
    from headrot.model.checkpoint import load_model
    from headrot.model.sampler import ddim_inversion

    base, _, _ = load_model(str(ROOT / "headrot" / "assets" / "demo_generator.pt"), "generator")
    net = conditional(base).eval()
    torch.save({"ema": net.state_dict(), "net": net.state_dict(), "step": 7}, tmp_path / "model.pt")
    rng = np.random.default_rng(0)
    size = base.config.image_size
    x_s = rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    y_s = np.asarray([-10.0, 0.0, 20.0], np.float32)
    with torch.inference_mode():
        net.yaw = torch.from_numpy(y_s)
        own = ddim_inversion(net, torch.from_numpy(x_s).permute(0, 3, 1, 2).float() / 127.5 - 1, 10, net.schedule, 5, 2)
    pairs = {"x_s": x_s, "y_s": y_s, "z_s": own.numpy(), "x_t": x_s[[0, 1, 2, 0]],
             "y_t": np.asarray([0.0, 10.0, 30.0, 5.0], np.float32), "t_src": np.asarray([0, 1, 2, 0])}
    np.savez(tmp_path / "own.npz", **pairs)
    row = inversion_gap.gap(tmp_path / "model.pt", "ema", tmp_path / "own.npz", n=4)
    assert row["step"] == 7 and row["pairs"] == 4 and row["fresh_vs_cached_rel"] < 1e-6
    assert row["cached_turn_psnr_db"] == row["fresh_turn_psnr_db"]
    np.savez(tmp_path / "other.npz", **{**pairs, "z_s": rng.standard_normal(own.shape).astype(np.float32)})
    assert inversion_gap.gap(tmp_path / "model.pt", "ema", tmp_path / "other.npz", n=4)["fresh_vs_cached_rel"] > 0.5


def test_generator_columns_of_a_copy_root_read_its_delta_zero_renders_and_faults(tmp_path):
    """bench.generator_columns: the embedding PSNR is the method's delta-0 renders against their
    sources (an exact render: the 1e-10 floor's 148 dB; one off by 16 everywhere: 24.05 dB), the
    colour faults the method's far renders with novel colours; no judge, no sample FD."""
    import io

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from bench.generator_columns import columns

    root = tmp_path / "copy"
    (root / "data" / "img_align_celeba").mkdir(parents=True)
    (root / "report").mkdir()
    (root / "rotated").mkdir()
    faces = {"a.jpg": np.full((16, 16, 3), 100, np.uint8), "b.jpg": np.full((16, 16, 3), 60, np.uint8)}
    for name, face in faces.items():
        Image.fromarray(face).save(root / "data" / "img_align_celeba" / name, quality=100)

    def png(a):
        out = io.BytesIO()
        Image.fromarray(a).save(out, format="PNG")
        return {"bytes": out.getvalue(), "path": None}

    rows = [("m", 0, "a.jpg", faces["a.jpg"]), ("m", 0, "b.jpg", faces["b.jpg"] + 16),
            ("m", 20, "a.jpg", faces["a.jpg"] + 99), ("no_move", 0, "a.jpg", faces["a.jpg"] + 99)]
    pq.write_table(pa.table({"method": [r[0] for r in rows], "delta": [r[1] for r in rows],
                             "source_id": [r[2] for r in rows], "image": [png(r[3]) for r in rows]}),
                   root / "rotated" / "part-0.parquet")
    pd.DataFrame([{"source_id": s, "method": "m", "delta": d, "estimated_yaw": float(d), "pose_error_deg": 0.0,
                   "psnr_db": 20.0, "identity_top1": 1.0, "novel_colour_share": share}
                  for s, d, share in (("a.jpg", 0, 0.0), ("a.jpg", 20, 0.2), ("b.jpg", 20, 0.0),
                                      ("b.jpg", -30, 0.0), ("a.jpg", -30, 0.5))]).to_parquet(root / "report" / "metrics.parquet")
    (root / "report" / "report.json").write_text(json.dumps({"pose_estimator": {"image_size": 16, "seed": 1}}))
    got = columns(str(root), "m")
    assert got["sample_fd"] is None
    assert got["embedding_psnr_db"] == round((10 * np.log10(255.0 ** 2 / 1e-10) + 10 * np.log10(255.0 ** 2 / 256)) / 2, 2)
    assert got["colour_fault_rate_far"] == 0.5
