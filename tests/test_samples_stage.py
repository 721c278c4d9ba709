"""The samples stage and the sample-direction methods on Ray: a tiny random generator, end to end.

samples (labeller + actor pool) -> fit with sources embeddings,samples -> render the ablation
variants, calibration included. The generator is random, so nothing here is about quality:
these tests check the wiring, the exactly-once files, resuming and the new table columns."""
from __future__ import annotations

import numpy as np
import pytest

from headrot import local_directions as L
from headrot import storage, tables
from headrot.stages.fit import FitConfig, run_fit
from headrot.stages.render import RenderConfig, calls_per_render, parse_variant, run_render
from headrot.stages.samples import NUISANCES, SamplesConfig, run_samples
from tests.test_render_stage import make_run, read_rotated

pytestmark = pytest.mark.slow

DELTAS = (-20, 0, 20)


def samples_config(root: str, **kw) -> SamplesConfig:
    # A labeller of 20 identities x 6 poses and 2 epochs: seconds, not quality.
    return SamplesConfig(root=root, **{"n": 120, "shard_size": 50, "steps": 2, "labeller_identities": 20,
                                       "labeller_epochs": 2, **kw})


STEER = (2_000_201,)   # one steering network beside the labeller: the local steps follow their mean


def test_samples_fit_and_calibrated_render_end_to_end(ray_cluster, tmp_path):
    root = str(tmp_path / "run")
    make_run(root)
    summary = run_samples(samples_config(root, steer_seeds=STEER))
    assert summary["rows"] == 120 and summary["shards"] == 3 and summary["shards_this_run"] == 3
    assert summary["labeller"]["arch"] == "maxpool4" and summary["labeller"]["light"] is True
    # Calibration's reader: the same kind of network of its own seed, cached beside the labeller.
    assert summary["reader"] == {**summary["labeller"], "seed": summary["reader"]["seed"]}
    assert summary["reader"]["seed"] != summary["labeller"]["seed"]
    assert storage.exists(storage.join(root, "checkpoints", "labeller", "reader.npz"))
    # The steering network: the labeller's kind of its own seed, cached beside it, recorded by key.
    assert summary["steerers"] == [{**summary["labeller"], "seed": STEER[0]}]
    assert len(summary["steerer_metrics"]) == 1 and summary["steerer_metrics"][0]["mae_deg_heldout"] > 0
    assert storage.exists(storage.join(root, "checkpoints", "labeller", f"steer-{STEER[0]}.npz"))
    samples = tables.read_parquet_dir(storage.join(root, "samples"))
    ids = samples.column("sample_id").to_pylist()
    assert sorted(ids) == list(range(120))                        # every sample exactly once
    assert tables.tensor_to_numpy(samples.column("nuisance")).shape == (120, len(NUISANCES))
    assert set(samples.column("light").to_pylist()) <= {"left", "center", "right"}
    # A sample's latent is its own seed's noise: the same whatever shard or batch it fell in.
    from headrot.model.sampler import noise_for_seeds

    seed = samples.column("seed").to_pylist()[7]
    z7 = tables.tensor_to_numpy(samples.column("latent"))[7]
    assert np.array_equal(z7, noise_for_seeds([seed], z7.shape).numpy()[0])

    # Resume: a lost shard is redone, the others are not; a complete stage does nothing.
    storage.filesystem(root)[0].rm(storage.join(root, "samples", "part-00001.parquet"))
    storage.filesystem(root)[0].rm(storage.join(root, "samples", storage.SUCCESS))
    again = run_samples(samples_config(root, steer_seeds=STEER))
    assert again["shards_this_run"] == 1 and again["rows"] == 120
    assert again["steerer_metrics"][0]["cached"]                  # loaded, not trained again
    assert run_samples(samples_config(root, steer_seeds=STEER)).get("skipped")

    # make_run fitted embeddings only: a new fit config needs its folder cleared (as a user would).
    storage.filesystem(root)[0].rm(storage.join(root, "trajectories"), recursive=True)
    # A random generator's samples all read near yaw 0 (|yaw| < 0.4): bins fine enough near 0
    # to give each side two populated bins, wide enough for the planted latents' +-44 degrees.
    bins = (-45, -15, -0.1, 0, 0.1, 15, 45)
    fit = run_fit(FitConfig(root=root, attributes=("Male",), min_images=10, min_bins=2, bins=bins,
                            sources=("embeddings", "samples"), lowpass=4))
    traj = tables.read_parquet(storage.join(root, "trajectories", "trajectories.parquet"))
    assert set(traj.column("source").to_pylist()) == {"embeddings", "samples", "embeddings_ortho", "samples_ortho"}
    assert set(fit["sources"]) == {"embeddings", "samples", "embeddings_ortho", "samples_ortho"}
    # Sample lines live in the low-pass subspace: constant on 4x4 blocks of the 16x16 latent.
    sample_slopes = tables.tensor_to_numpy(traj.filter(traj.column("source").to_numpy(zero_copy_only=False)
                                                       == "samples").column("slope"))
    blocks = sample_slopes.reshape(len(sample_slopes), 3, 4, 4, 4, 4)
    assert np.allclose(blocks, blocks[:, :, :, :1, :, :1], atol=1e-6)

    methods = ("no_move", "samples-norm", "samples-ortho-norm-cal", "local-ortho-norm-cal-colour")
    config = RenderConfig(root=root, deltas=DELTAS, split="all", limit=12, methods=methods, steps=2,
                          calibration_rounds=2, local_segment=10, local_lowpass=4,
                          local_correct=1.0, min_leg_psnr=6.0, local_edit_step=1)
    summary = run_render(config)
    assert summary["renders"] == 12 * len(DELTAS) * len(methods)
    # local: 2 legs a side (10, 20), 2 decodes each, a Jacobian at each leg's start (the one at z
    # shared by both sides: 3 in all), one G(z); moved one step down the 2-step path, so the
    # Jacobians and leg decodes run 1 of the 2 steps, and the step to that point is paid once.
    assert summary["decodes_per_render"] == calls_per_render(config) == {
        "no_move": 1.0, "samples-norm": 1.0, "samples-ortho-norm-cal": round((2 * 2 + 1) / 3, 3),
        "local-ortho-norm-cal-colour": round((3 * L.JACOBIAN_DECODES / 2 + 4 * 2 / 2 + 1 / 2 + 1) / 3, 3)}
    rotated = read_rotated(storage.join(root, "rotated"))
    keys = list(zip(rotated.column("source_id").to_pylist(), rotated.column("delta").to_pylist(),
                    rotated.column("method").to_pylist()))
    assert len(keys) == len(set(keys))
    for method in ("samples-ortho-norm-cal", "local-ortho-norm-cal-colour"):
        cal = rotated.filter(rotated.column("method").to_numpy(zero_copy_only=False) == method)
        delta = cal.column("delta").to_numpy()
        read = cal.column("labeller_yaw_change").to_numpy(zero_copy_only=False)
        scale = cal.column("step_scale").to_numpy(zero_copy_only=False)
        assert np.all(np.isfinite(read[delta != 0])) and np.all(read[delta == 0] == 0)
        assert np.all((scale >= 0) & (scale <= 4))
        assert set(cal.column("trajectory_key").to_pylist()) <= {"local"} or method != "local-ortho-norm-cal-colour"
    plain = rotated.filter(rotated.column("method").to_numpy(zero_copy_only=False) == "no_move")
    assert np.all(np.isnan(plain.column("labeller_yaw_change").to_numpy(zero_copy_only=False)))
    assert run_render(config).get("skipped")
    # What the local steps followed: the labeller and the steering network, by their mean reading;
    # calibration read the reader, neither of them.
    from headrot.labels.pose import MeanReading
    from headrot.stages.render import RenderShards

    actor = RenderShards(config)
    assert isinstance(actor.steer, MeanReading)
    seeds = SamplesConfig(root=root)
    assert [e.config.seed for e in actor.steer.estimators] == [seeds.labeller_seed, STEER[0]]
    assert actor.reader.config.seed == seeds.reader_seed


def test_steering_seeds_are_networks_of_their_own():
    assert SamplesConfig(root="r", steer_seeds=(11, 12)).steer_seeds == (11, 12)
    base = SamplesConfig(root="r")
    for bad in ((11, 11), (base.labeller_seed,), (12, base.reader_seed)):
        with pytest.raises(ValueError, match="steer_seeds"):
            SamplesConfig(root="r", steer_seeds=bad)


def test_method_names_parse_to_the_ablation_grid():
    assert parse_variant("headrot") == parse_variant("embeddings")
    v = parse_variant("samples-ortho-norm-cal")
    assert (v.source, v.ortho, v.norm, v.cal, v.lines) == ("samples", True, True, True, "samples_ortho")
    assert not v.colour and parse_variant("local-ortho-norm-cal-colour").colour
    assert parse_variant("local-colour-cal") is None         # flags in their one order
    assert parse_variant("samples-cal-norm") is None
    assert parse_variant("pixels-norm") is None
    assert parse_variant("no_move") is None
    with pytest.raises(ValueError, match="source"):
        RenderConfig(root="r", methods=("samples-cal-norm",))


def test_calibrated_methods_need_the_labeller(ray_cluster, tmp_path):
    """A -cal method on a run whose samples stage has not run fails with what to run; with the
    stage's networks alone (n 0) it renders."""
    root = str(tmp_path / "run")
    make_run(root)
    config = RenderConfig(root=root, deltas=(0, 10), split="all", limit=4, methods=("embeddings-cal",), steps=2)
    with pytest.raises(Exception, match="labeller"):
        run_render(config)
    # n 0: the samples stage trains its networks alone, and the -cal render reads the reader.
    summary = run_samples(samples_config(root, n=0))
    assert summary["rows"] == 0 and summary["shards"] == 0 and summary["yaw_sd"] is None
    assert storage.exists(storage.join(root, "checkpoints", "labeller", "reader.npz"))
    assert not storage.list_files(storage.join(root, "samples"), ".parquet")
    assert run_render(config)["renders"] == 4 * 2
    # ... and a fit that asks for the samples' lines is told there are none.
    with pytest.raises(ValueError, match="no samples"):
        run_fit(FitConfig(root=root, sources=("embeddings", "samples")))


def test_mediapipe_yaw_is_an_optional_extra_with_a_clear_error():
    from headrot.labels.pose import mediapipe_available

    if mediapipe_available():
        assert SamplesConfig(root="r", yaw_from="mediapipe").yaw_from == "mediapipe"
    else:
        with pytest.raises(ValueError, match="mediapipe<=0.10.21"):
            SamplesConfig(root="r", yaw_from="mediapipe")


def test_samples_n_is_zero_or_enough_for_a_direction():
    assert SamplesConfig(root="r", n=0).n == 0
    with pytest.raises(ValueError, match="n must be >= 10"):
        SamplesConfig(root="r", n=5)


def test_pipeline_runs_the_samples_stage_for_its_networks_or_its_lines():
    from headrot.pipeline import PipelineConfig, needs_samples_stage, stage_configs

    def stages(methods, sources, n=0):
        config = PipelineConfig(out="r", samples={"n": n}, fit={"sources": sources},
                                render={"methods": methods}, skip_evaluate=True)
        return stage_configs(config, "d", "g")

    assert needs_samples_stage(stages(["yaw-cal-colour", "headrot"], ["embeddings"]))       # -cal: the reader
    assert needs_samples_stage(stages(["local-norm"], ["embeddings"]))                      # local: the labeller
    assert not needs_samples_stage(stages(["headrot", "no_move"], ["embeddings"]))
    lines = lambda methods: RenderConfig(root="r", methods=tuple(methods)).needs_sample_lines()  # noqa: E731
    assert lines(["samples-norm"]) and lines(["embeddings-ortho"]) and not lines(["local-ortho-norm-cal-colour"])
    assert not lines(["headrot", "yaw-cal-colour"])
    assert needs_samples_stage(stages(["samples-norm"], ["embeddings", "samples"], n=100))
    with pytest.raises(ValueError, match="n is 0"):
        stages(["samples-norm"], ["embeddings", "samples"])
