"""A reader of a stage's output computes on exactly the rows the stage made, or refuses.

Each stage records in its _SUCCESS the rows (and files) it made, from its own accounting over
its planned shards. fit and render reading latents/, fit reading samples/ and evaluate reading
rotated/ take their files from runs.stage_files, which compares what the folder shows with that
record. The fault here is the one of issue 13: a listing that misses a file (planted: the
listing drops the last shard), on a run root on the suite's SeaweedFS server. On the writer's
side, embed's own _SUCCESS counts its planned shards by name, whatever a listing shows.
"""
from __future__ import annotations

import os

import pyarrow as pa
import pytest

from headrot import runs, storage, tables
from headrot.stages.embed import EmbedConfig, run_embed
from headrot.stages.evaluate import EvaluateConfig, run_evaluate
from headrot.stages.fit import FitConfig, run_fit
from headrot.stages.render import RenderConfig, run_render
from headrot.synth.writer import write_synthetic_celeba

N = 16
SHARD = 4          # 4 latents files, so 4 rotated files (split: all)


def hide_last_file(monkeypatch, folder: str) -> None:
    """A stale listing: storage.list_files of `folder` misses its last data file."""
    real = storage.list_files

    def stale(uri: str, suffix: str = "") -> list[str]:
        files = real(uri, suffix)
        return files[:-1] if uri.rstrip("/") == folder.rstrip("/") else files

    monkeypatch.setattr(storage, "list_files", stale)


# ---------------------------------------------------------------------------
# The check itself (a local folder, no Ray)


def _stage(tmp_path, sizes=(3, 2, 4)) -> str:
    stage = str(tmp_path / "run" / "latents")
    for i, n in enumerate(sizes):
        tables.write_parquet(storage.join(stage, f"part-{i:05d}.parquet"), pa.table({"image_id": ["x"] * n}))
    storage.mark_complete(stage, {"written": sum(sizes), "shards": len(sizes)})
    return stage


def test_stage_files_are_the_files_the_stage_made(tmp_path):
    stage = _stage(tmp_path)
    assert runs.stage_files(stage, "fit", "embed", "written") == storage.list_files(stage, ".parquet")


def test_a_reader_refuses_a_listing_that_misses_a_file(tmp_path, monkeypatch):
    stage = _stage(tmp_path)
    hide_last_file(monkeypatch, stage)
    with pytest.raises(runs.StageMismatch) as info:
        runs.stage_files(stage, "fit", "embed", "written")
    message = str(info.value)
    assert message.startswith(f"fit: {stage} holds 5 rows in 2 files as listed now")
    assert "records 9 rows ('written') in 3 files" in message
    assert "Rerun the same command" in message and "rerun `headrot embed`" in message


def test_a_reader_refuses_a_file_added_after_the_stage(tmp_path):
    stage = _stage(tmp_path)
    tables.write_parquet(storage.join(stage, "part-00009.parquet"), pa.table({"image_id": ["y"]}))
    with pytest.raises(runs.StageMismatch, match="holds 10 rows in 4 files"):
        runs.stage_files(stage, "render", "embed", "written")


def test_an_incomplete_stage_names_the_command_that_makes_it(tmp_path):
    with pytest.raises(ValueError, match=r"latents is not complete \(no _SUCCESS\): run `headrot embed` first"):
        runs.stage_files(str(tmp_path / "run" / "latents"), "fit", "embed", "written")


# ---------------------------------------------------------------------------
# The stages, on S3: each refuses a stale listing before any work


@pytest.fixture(scope="module")
def embedded(ray_cluster, s3_server, generator_ckpt, tmp_path_factory) -> dict[str, str]:
    """A real run root on S3 after embed (fit and render run inside the tests that need them)."""
    data = str(tmp_path_factory.mktemp("celeba"))
    write_synthetic_celeba(data, N, seed=7, images_per_identity=4)
    root = s3_server.make_bucket("stage-reads-" + os.urandom(3).hex()) + "/run"
    run_embed(EmbedConfig(data=data, out=root, generator=generator_ckpt, shard_size=SHARD,
                          batch_size=SHARD, steps=2))
    return {"root": root, "data": data, "generator": generator_ckpt}


def _fit(run: dict) -> dict:
    return run_fit(FitConfig(root=run["root"], attributes=(), min_images=2, min_bins=2))


def _render(run: dict) -> dict:
    return run_render(RenderConfig(root=run["root"], split="all", deltas=(0,), methods=("no_move",),
                                   steps=2, sheet_sources=1, generator=run["generator"]))


def _evaluate(run: dict) -> dict:
    return run_evaluate(EvaluateConfig(root=run["root"], data=run["data"], pose_identities=8,
                                       pose_per_identity=2, pose_heldout=4, pose_epochs=1, gallery_max=2))


READERS = {
    # reader: (what it must have run first, the folder it reads, the key of that folder's row count)
    "fit": ((), "latents", "written"),
    "render": ((_fit,), "latents", "written"),
    "evaluate": ((_fit, _render), "rotated", "renders"),
}


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("reader", list(READERS))
def test_stage_refuses_a_listing_that_hides_a_shard(embedded, reader, monkeypatch):
    before, folder, rows_key = READERS[reader]
    for stage in before:                       # idempotent: the first test to need one runs it
        stage(embedded)
    stage_dir = storage.join(embedded["root"], folder)
    recorded = storage.completion(stage_dir)
    files = storage.list_files(stage_dir, ".parquet")
    assert len(files) == recorded["shards"] == N // SHARD and recorded[rows_key] > 0
    hidden = tables.count_rows(files[-1])
    run_json = storage.read_bytes(storage.join(embedded["root"], runs.RUN_JSON))

    hide_last_file(monkeypatch, stage_dir)
    run = {"fit": _fit, "render": _render, "evaluate": _evaluate}[reader]
    with pytest.raises(runs.StageMismatch) as info:
        run(embedded)
    message = str(info.value)
    assert message.startswith(f"{reader}: {stage_dir} holds {recorded[rows_key] - hidden} rows in "
                              f"{len(files) - 1} files as listed now")
    assert f"records {recorded[rows_key]} rows ('{rows_key}') in {len(files)} files" in message
    # Refused before any work: the run's record is as it was, nothing was claimed or written.
    assert storage.read_bytes(storage.join(embedded["root"], runs.RUN_JSON)) == run_json
    if reader == "evaluate":
        assert storage.completion(storage.join(embedded["root"], "report")) is None

    monkeypatch.undo()                         # the true listing: the same call reads every row
    if reader == "fit":
        assert run(embedded)["rows_read"] == recorded["written"]
    elif reader == "render":                   # one delta, one method: one render per latent
        assert run(embedded)["renders"] == recorded["written"]
    # (evaluate's own complete run is in test_resume_s3: it costs a pose estimator)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fit_refuses_a_listing_that_hides_a_samples_shard(ray_cluster, tmp_path, monkeypatch):
    """fit's second input, the samples stage's output, goes through the same check."""
    from headrot.stages.samples import SamplesConfig, run_samples
    from tests.test_render_stage import make_run

    root = str(tmp_path / "run")
    make_run(root)                             # planted latents, a fit, a tiny generator
    run_samples(SamplesConfig(root=root, n=24, shard_size=10, steps=2, labeller_identities=8,
                              labeller_epochs=1))
    # A fit with samples is a new fit config: its folder is cleared first (as a user would).
    storage.filesystem(root)[0].rm(storage.join(root, "trajectories"), recursive=True)
    samples_dir = storage.join(root, "samples")
    hide_last_file(monkeypatch, samples_dir)   # part-00002: the last 4 samples
    with pytest.raises(runs.StageMismatch) as info:
        run_fit(FitConfig(root=root, attributes=("Male",), sources=("embeddings", "samples")))
    assert str(info.value).startswith(f"fit: {samples_dir} holds 20 rows in 2 files as listed now")
    assert "records 24 rows ('rows') in 3 files" in str(info.value)


# ---------------------------------------------------------------------------
# The writer's side: embed's _SUCCESS comes from its plan, not from a listing


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_embed_counts_its_planned_shards_not_what_a_listing_shows(ray_cluster, generator_ckpt, tmp_path,
                                                                  monkeypatch):
    """Issue 13 failed here: the totals came from a listing that missed the shards just written
    ("rows in 40 != written 24"). Now every planned shard is read back by name: a listing that
    shows none of them changes nothing."""
    data, out = str(tmp_path / "celeba"), str(tmp_path / "run")
    write_synthetic_celeba(data, 8, seed=7, images_per_identity=4)
    latents = storage.join(out, "latents")
    real = storage.list_files
    monkeypatch.setattr(storage, "list_files",
                        lambda uri, suffix="": [] if uri.rstrip("/") == latents else real(uri, suffix))
    summary = run_embed(EmbedConfig(data=data, out=out, generator=generator_ckpt, shard_size=SHARD,
                                    batch_size=SHARD, steps=2))
    assert summary["written"] == 8 and summary["rejected"] == 0 and summary["shards"] == 2
    assert storage.completion(latents)["written"] == 8
