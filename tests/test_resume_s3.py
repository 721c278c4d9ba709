"""Resume on object storage (issue 13): a job killed mid-stage on an s3:// root, rerun once, finishes.

The first rerun of a killed `headrot run` on S3 used to fail at the end of embed: its listing
of latents/ came from s3fs's listings cache, taken before the shards the rerun wrote from Ray's
worker processes (rows in != written). These tests run the real thing against the SeaweedFS
server the suite starts: the job's process group is SIGKILLed mid-embed or mid-render (the
helpers of test_reliability.py), the same command runs once more and must complete, with every
row exactly once and a report that counts every render.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headrot import storage, tables
from tests.test_reliability import ROOT, Job, dataset, jobs, wait_for  # noqa: F401 - fixtures

N = 40                   # images (the `dataset` fixture of test_reliability)
SHARD = 8                # rows per latents shard -> 5 shards, so 5 render shards (split: all)
DELTAS = (-20, 0, 20)
METHODS = ("headrot", "no_move")
# The tiniest whole job: 2 DDIM steps, every source rendered, a token pose estimator (the test
# is about rows and resumption, not figures).
CONFIG = {
    "embed": {"steps": 2, "shard_size": SHARD, "batch_size": SHARD},
    "fit": {"attributes": [], "min_images": 5, "min_bins": 2},
    "render": {"split": "all", "steps": 2, "deltas": list(DELTAS), "methods": list(METHODS),
               "sheet_sources": 2},
    "evaluate": {"pose_identities": 8, "pose_per_identity": 2, "pose_heldout": 4, "pose_epochs": 1,
                 "gallery_max": 2, "cases": 1},
}


def s3_names(s3_server, uri: str) -> list[str]:
    """File names (not folders such as latents/_mean_faces/) directly under an s3:// folder, as a
    brand-new, uncached client sees them now."""
    fs = s3_server.fs()
    path = uri.split("://", 1)[1]
    try:
        return sorted(e["name"].rsplit("/", 1)[-1] for e in fs.ls(path, detail=True, refresh=True)
                      if e["type"] == "file")
    except FileNotFoundError:
        return []


def s3_table(s3_server, uri: str, columns: list[str]) -> pa.Table:
    """Every Parquet file under an s3:// folder, listed and read by that fresh client (not
    through headrot's storage layer, which is what is under test)."""
    fs = s3_server.fs()
    path = uri.split("://", 1)[1]
    files = sorted(p for p in fs.ls(path, refresh=True) if p.endswith(".parquet"))
    return pa.concat_tables([pq.read_table(fs.open(p, "rb"), columns=columns) for p in files])


def run_args(tmp_path: Path, data: Path, out: str, generator: str) -> list[str]:
    config = tmp_path / "config.json"      # JSON is YAML: the CLI's --config reads it
    config.write_text(json.dumps(CONFIG))
    return ["run", "--config", str(config), "--data", str(data), "--out", out, "--generator", generator]


# ---------------------------------------------------------------------------
# The scenario: kill the whole job mid-stage, rerun the same command once


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("stage, folder", [("embed", "latents"), ("render", "rotated")])
def test_job_killed_mid_stage_on_s3_completes_on_the_first_rerun(
        s3_server, s3_bucket, dataset, generator_ckpt, tmp_path, jobs, stage, folder):  # noqa: F811
    out = storage.join(s3_bucket, "run")
    args = run_args(tmp_path, dataset, out, generator_ckpt)
    marker = tmp_path / "hung"
    # The stage's single model actor hangs on its 4th shard, after 3 shards were written
    # (their write tasks land just after the marker: wait for all 3, see test_reliability).
    job = Job(args, env={"HEADROT_FAULT": f"hang@{stage}:4:{marker}"})
    jobs.append(job)
    stage_dir = storage.join(out, folder)
    try:
        wait_for(lambda: marker.exists() and len(s3_names(s3_server, stage_dir)) >= 3,
                 420, f"the job to hang mid-{stage} with 3 shards written", job)
        job.kill()
    finally:
        job.stop()
    assert s3_names(s3_server, stage_dir) == [f"part-{i:05d}.parquet" for i in range(3)]  # no _SUCCESS

    rerun = Job(args)
    jobs.append(rerun)
    rc = rerun.wait(600)
    output = rerun.output()
    assert rc == 0, output[-6000:]
    assert f"{stage}: 5 shards, 2 to do" in output          # resumed: only the missing shards

    # Every image once in latents/, every (source, delta, method) once in rotated/ ...
    ids = s3_table(s3_server, storage.join(out, "latents"), ["image_id"]).column("image_id").to_pylist()
    assert len(ids) == len(set(ids)) == N
    rotated = s3_table(s3_server, storage.join(out, "rotated"), ["source_id", "delta", "method"])
    keys = list(zip(*(rotated.column(c).to_pylist() for c in ("source_id", "delta", "method"))))
    assert len(keys) == len(set(keys)) == N * len(DELTAS) * len(METHODS)
    assert {k[0] for k in keys} == set(ids)
    # ... and the stages' own accounting and the report agree with what is there.
    assert storage.completion(storage.join(out, "latents"))["written"] == N
    assert storage.completion(storage.join(out, "rotated"))["renders"] == len(keys)
    report = json.loads(storage.read_bytes(storage.join(out, "report", "report.json")))
    assert report["summary"]["n_renders"] == len(keys)
    assert report["summary"]["n_sources"] == N


# ---------------------------------------------------------------------------
# Listings are never stale: one process sees what another has just written


WRITER = r"""
import sys
import pyarrow as pa
from headrot import storage, tables
stage = sys.argv[1]
tables.write_parquet(storage.join(stage, "part-00001.parquet"), pa.table({"image_id": ["b", "c"]}))
storage.mark_complete(stage, {"written": 3, "shards": 2})
"""


@pytest.mark.slow
def test_a_long_lived_process_sees_what_another_process_wrote(s3_bucket):
    """This process lists a stage folder (as `pending` does before the work), another headrot
    process writes a shard and _SUCCESS (as Ray's write tasks and a rerun do), and this process's
    next listing, existence check, completion check and pyarrow view all see them."""
    stage = storage.join(s3_bucket, "run", "latents")
    first = storage.join(stage, "part-00000.parquet")
    tables.write_parquet(first, pa.table({"image_id": ["a"]}))
    assert storage.list_files(stage, ".parquet") == [first]
    second = storage.join(stage, "part-00001.parquet")
    assert not storage.exists(second) and storage.completion(stage) is None

    subprocess.run([sys.executable, "-c", WRITER, stage], cwd=ROOT, check=True, timeout=120)

    assert storage.list_files(stage, ".parquet") == [first, second]
    assert storage.exists(second)
    assert storage.completion(stage) == {"written": 3, "shards": 2}
    assert tables.read_parquet_dir(stage).num_rows == 3
    fs, path = storage.arrow_filesystem(second)
    assert fs.get_file_info(path).size > 0
