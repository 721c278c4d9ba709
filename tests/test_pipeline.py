"""`headrot run` end to end on a small synthetic set; a second run does no work."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from headrot import storage
from headrot.model.checkpoint import save_model
from headrot.model.unet import PRESETS, UNet
from headrot.pipeline import PipelineConfig, run_pipeline

pytestmark = pytest.mark.slow


def test_run_end_to_end_then_nothing_to_do(ray_cluster, tmp_path):
    torch.manual_seed(0)
    generator = str(tmp_path / "generator.pt")
    save_model(generator, "generator", UNet(PRESETS["tiny"]), PRESETS["tiny"])
    config = PipelineConfig(
        out=str(tmp_path / "run"),
        synth={"n": 120, "seed": 5, "images_per_identity": 6},
        generator=generator,
        embed={"steps": 2, "shard_size": 32},
        fit={"min_images": 5, "min_bins": 2},
        render={"limit": 6, "steps": 2, "deltas": [-20, 0, 20],
                "methods": ["headrot", "no_move", "light_agnostic", "single_direction"]},
        # A small pose estimator and gallery: the test checks the wiring, not the figures.
        evaluate={"pose_identities": 40, "pose_per_identity": 4, "pose_heldout": 20,
                  "pose_epochs": 4, "gallery_max": 8},
    )
    first = run_pipeline(config)
    assert {"embed", "fit", "render", "evaluate"} <= set(first["did_work"])
    report = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    assert set(report["methods"]) == {"headrot", "no_move", "light_agnostic", "single_direction"}
    assert (tmp_path / "run" / "report" / "report.html").exists()
    assert (tmp_path / "run" / "report" / "trajectories.png").stat().st_size > 0   # drawn from the fit's table
    assert any(f.endswith("trajectories.png") for f in report["files"]["figures"])
    fit = storage.completion(str(tmp_path / "run" / "trajectories"))
    assert report["trajectories"]["r2_by_light"] == fit["r2_by_light"] and fit["r2_by_light"]
    assert report["trajectories"]["noise_share_by_light"] == fit["noise_share_by_light"]
    assert fit["noise_share_by_light"].keys() == fit["r2_by_light"].keys()
    assert report["trajectories"]["r2_reliable_global"] == fit["r2_reliable_global"]
    assert fit["r2_reliable_global"].keys() == fit["r2_global"].keys()
    assert "Trajectory fit" in (tmp_path / "run" / "report" / "report.html").read_text()
    rotated = pq.read_table(str(tmp_path / "run" / "rotated"))
    pairs = list(zip(rotated.column("source_id").to_pylist(), rotated.column("delta").to_pylist(),
                     rotated.column("method").to_pylist()))
    assert len(pairs) == len(set(pairs)) == 6 * 3 * 4
    for stage in ("latents", "trajectories", "rotated"):
        assert storage.completion(str(tmp_path / "run" / stage)) is not None, stage

    second = run_pipeline(config)
    assert second["did_work"] == []
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    assert {"embed", "fit"} <= set(run_json["stages"])



@pytest.mark.parametrize("name", ["demo.yaml", "celeba.yaml"])
def test_shipped_pipeline_configs_validate(name):
    """configs/*.yaml are documentation users copy: every key must still be a real one."""
    from pathlib import Path

    from headrot.config import from_mapping, load_yaml
    from headrot.pipeline import stage_configs

    path = Path(__file__).resolve().parents[1] / "configs" / name
    config = from_mapping(PipelineConfig, load_yaml(path), str(path))
    built = stage_configs(config, config.data or "runs/x/data", "runs/x/generator.pt")
    assert {"train", "embed", "fit", "render"} <= set(built)


TRAINING_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("demo-generator*.yaml"))


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda p: p.name)
def test_shipped_training_configs_validate_and_build_their_network(path):
    """The training configs say how each model was made: each must still load and build its network."""
    from headrot.train.config import load_config

    config = load_config(str(path))
    assert config.kind == "generator"
    net = UNet(config.model_config())
    assert sum(p.numel() for p in net.parameters()) > 0


def test_the_training_configs_are_found():
    assert {p.name for p in TRAINING_CONFIGS} >= {"demo-generator.yaml", "demo-generator-v3.yaml"}


def test_the_yaw_methods_get_the_shipped_yaw_generator_on_the_demo_and_an_error_elsewhere(tmp_path):
    """Checked before any stage runs: the synthetic demo copies demo_generator_yaw.pt into the run
    root; a run on the user's data without render.yaw_generator stops with what to give."""
    from headrot.layout import RunLayout
    from headrot.pipeline import resolve_yaw_generator, stage_configs

    demo = PipelineConfig(out=str(tmp_path / "demo"), render={"methods": ["yaw-cal-colour", "no_move"]})
    resolve_yaw_generator(demo, stage_configs(demo, "d", "g.pt")["render"])
    copied = Path(RunLayout(demo.out).model("generator_yaw"))
    shipped = Path(__file__).resolve().parents[1] / "headrot" / "assets" / "demo_generator_yaw.pt"
    assert copied.read_bytes() == shipped.read_bytes()
    user = PipelineConfig(out=str(tmp_path / "user"), data=str(tmp_path / "celeba"),
                          render={"methods": ["yaw-cal-colour"]})
    with pytest.raises(ValueError, match="need a yaw-conditioned generator.*render.yaw_generator"):
        resolve_yaw_generator(user, stage_configs(user, user.data, "g.pt")["render"])
    plain = PipelineConfig(out=str(tmp_path / "plain"), data=str(tmp_path / "celeba"), render={"methods": ["headrot"]})
    resolve_yaw_generator(plain, stage_configs(plain, plain.data, "g.pt")["render"])
    assert not (tmp_path / "plain").exists()
