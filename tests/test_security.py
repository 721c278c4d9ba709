"""Hostile input and secrets: configs, ids and paths, checkpoints, credentials.

Covered elsewhere (and checked there, not repeated here):
- decompression bombs: tests/test_images.py::test_bad_files (bomb-huge, bomb-48MP);
- unsafe ids such as ../../x.jpg in the CelebA text files: tests/test_celeba_text.py
  (test_bad_rows_are_rejected_with_reason, test_read_index_rejects_and_keeps_accounting);
- pickle payloads in checkpoints: tests/test_checkpoint.py::test_pickle_payload_refused_and_not_run;
- credentials in Ray job metadata (runtime_env, metadata) on the `ray job submit` path:
  tests/test_job_submit.py::test_ray_job_submit_writes_to_s3.
"""
from __future__ import annotations

import dataclasses
import json
import os
import posixpath
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrot import rejects, runs, storage
from headrot.config import from_mapping
from headrot.pipeline import PipelineConfig
from headrot.stages.embed import EmbedConfig
from headrot.stages.fit import FitConfig
from headrot.stages.render import RenderConfig
from headrot.synth.writer import SynthConfig
from headrot.train.config import TrainConfig
from tests.test_reliability import jobs  # noqa: F401  (fixture)

CONFIGS = [EmbedConfig, FitConfig, RenderConfig, PipelineConfig, TrainConfig, SynthConfig]

# ---------------------------------------------------------------------------
# Config loader: arbitrary mappings never raise anything but ValueError

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20),
    st.binary(max_size=8), st.sampled_from(["1", "true", "0,1", "inversion", "float16", "a,b", "-3", "1e400"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)


@st.composite
def mappings(draw):
    cls = draw(st.sampled_from(CONFIGS))
    names = [f.name for f in dataclasses.fields(cls)]
    # YAML keys need not be strings: `1: x`, `null: x`, `true: x` are mappings too.
    keys = st.one_of(st.sampled_from(names), st.text(max_size=12), st.integers(), st.none(), st.booleans())
    data = draw(st.dictionaries(keys, values, max_size=len(names) + 2))
    return cls, data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mappings())
def test_config_loader_raises_only_value_error(case):
    cls, data = case
    try:
        config = from_mapping(cls, data, "fuzz")
    except ValueError as exc:
        assert str(exc).startswith("fuzz")
        return
    # Accepted: every key was a field, and the result is a real config of that class.
    assert isinstance(config, cls)
    assert set(data) <= {f.name for f in dataclasses.fields(cls)}


def test_config_checks_name_the_file_too():
    # The fuzz above found it: a value of the right type refused by the config's own checks
    # (__post_init__) came out without the file's name.
    with pytest.raises(ValueError, match=r"^demo\.yaml: train: ema_decay"):
        from_mapping(TrainConfig, {"ema_decay": 1.0}, "demo.yaml")


@settings(max_examples=200, deadline=None)
@given(key=st.text(min_size=1, max_size=20), value=values)
def test_unknown_keys_are_errors(key, value):
    for cls in CONFIGS:
        if key in {f.name for f in dataclasses.fields(cls)}:
            continue
        required = {f.name: "x" for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        with pytest.raises(ValueError, match="unknown key"):
            from_mapping(cls, {**required, key: value}, "fuzz")


def test_wrong_types_are_errors():
    for data in ({"data": "d", "out": "o", "shard_size": "many"}, {"data": "d", "out": "o", "steps": True},
                 {"data": "d", "out": "o", "method": "magic"}, {"data": 3, "out": "o"},
                 {"data": "d", "out": "o", "partitions": {"a": 1}}):
        with pytest.raises(ValueError):
            from_mapping(EmbedConfig, data, "t")


# ---------------------------------------------------------------------------
# Paths: nothing is ever written outside the run root


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(st.text(max_size=12), min_size=1, max_size=3))
def test_join_never_leaves_the_root(parts):
    root = "/runs/r"
    try:
        uri = storage.join(root, *parts)
    except ValueError:
        return
    assert uri.startswith(root + "/")
    assert posixpath.normpath(uri).startswith(root + "/")
    assert ".." not in uri.split("/") and "\\" not in uri and "\0" not in uri


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=30))
def test_output_keys_come_from_checked_ids(name):
    """Ids from input files become file names (rejected/<stage>-<shard>, render image paths)
    only through safe_name: an unsafe one is refused, a safe one stays one component."""
    try:
        safe = storage.safe_name(name)
    except ValueError:
        with pytest.raises(ValueError, match="unsafe"):
            rejects.rejected_uri("/runs/r", name, 0)
        return
    assert "/" not in safe and not safe.startswith(".")
    assert rejects.rejected_uri("/runs/r", safe, 0).startswith("/runs/r/rejected/")


def test_a_trailing_newline_is_not_a_safe_name():
    """A regex's `$` also matches before a final newline: the whole name must match (hypothesis found
    '0\n' passing as safe, and the file name made from it refused later)."""
    for bad in ("0\n", "x\n", "shard-1\n"):
        with pytest.raises(ValueError, match="unsafe"):
            storage.safe_name(bad)


def test_hostile_ids_write_nothing_outside_the_root(tmp_path):
    root = tmp_path / "run"
    for bad in ["../../x", "../escape", "a/../../b", "/etc/passwd", ".hidden", "x\0y"]:
        with pytest.raises(ValueError, match="unsafe"):
            rejects.write_rejected(str(root), bad, 0, [])
        with pytest.raises(ValueError, match="unsafe"):
            storage.write_bytes(storage.join(str(root), "rotated", "images", bad), b"x")
    assert sorted(p for p in tmp_path.rglob("*")) == []


# ---------------------------------------------------------------------------
# Secrets


def test_run_json_never_records_credentials_in_uris(tmp_path):
    """A URI that carries user:secret@ is recorded without it (run.json, error messages)."""
    secret = "s3cr3t-" + os.urandom(6).hex()
    root = str(tmp_path / "run")
    config = {"data": f"s3://AKIAEXAMPLE:{secret}@bucket/celeba", "nested": {"x": [f"https://u:{secret}@h/p"]}}
    runs.claim_stage(root, "embed", "f" * 16, config, storage.join(root, "latents"))
    text = (tmp_path / "run" / "run.json").read_text()
    assert secret not in text and "s3://bucket/celeba" in text
    assert runs.redact_uri(f"s3://AKIAEXAMPLE:{secret}@bucket/x") == "s3://bucket/x"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_secret_key_appears_in_no_log_output_or_metadata(s3_server, s3_bucket, tmp_path, jobs):
    """A whole stage on S3, with the credentials in the environment (as from a role) and debug
    logging on: the secret key is in no stdout/stderr line, no Ray session log of that run,
    no object the run wrote (run.json, _SUCCESS, report, Parquet data and footers)."""
    import torch

    from headrot.model.checkpoint import save_model
    from headrot.model.unet import PRESETS, UNet
    from headrot.synth.writer import write_synthetic_celeba
    from tests.test_reliability import Job

    secret = s3_server.secret_key
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == secret         # the job inherits it
    data = tmp_path / "celeba"
    write_synthetic_celeba(str(data), 16, seed=1)
    torch.manual_seed(0)
    generator = storage.join(s3_bucket, "models", "generator.pt")
    save_model(generator, "generator", UNet(PRESETS["tiny"]), PRESETS["tiny"])
    out = storage.join(s3_bucket, "run")

    job = Job(["-v", "embed", "--data", str(data), "--out", out, "--generator", generator,
               "--shard-size", "8", "--batch-size", "8", "--steps", "2"])
    jobs.append(job)
    rc = job.wait(600)
    output = job.output()
    assert rc == 0, output[-5000:]
    assert storage.completion(storage.join(out, "latents"))["written"] == 16   # it really used S3

    leaks = [f"driver output line: {line[:200]}" for line in output.splitlines() if secret in line]
    scanned = 0
    for path in Path(job.temp_dir).rglob("*"):                     # Ray's session logs and files
        if path.is_file() and not path.is_symlink():
            scanned += 1
            try:
                if secret.encode() in path.read_bytes():
                    leaks.append(f"ray session file: {path}")
            except OSError:
                pass
    assert scanned > 5, "no Ray session files found to scan"
    fs = s3_server.fs()
    objects = fs.find(s3_bucket.removeprefix("s3://"))
    assert any(o.endswith("run.json") for o in objects) and any(o.endswith(".parquet") for o in objects)
    for key in objects:                                           # data, footers, markers, report
        if secret.encode() in fs.cat(key):
            leaks.append(f"object: {key}")
    run_json = json.loads(fs.cat(f"{s3_bucket.removeprefix('s3://')}/run/run.json"))
    assert run_json["stages"]["embed"]["config"]["out"] == out
    assert not leaks, leaks
