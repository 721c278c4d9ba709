"""Session-wide fixtures: one local Ray for the whole run, one real S3 server.

The S3 endpoint and credentials go into the environment before Ray starts, so
Ray's workers inherit them the way a cluster node inherits its role: nothing
passes them through runtime_env (which would put them in job metadata).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.services import plan_s3_server

_S3 = None


def pytest_configure(config):
    global _S3
    base = Path(tempfile.mkdtemp(prefix="headrot-s3-"))
    _S3 = plan_s3_server(base)
    os.environ["AWS_ACCESS_KEY_ID"] = _S3.access_key
    os.environ["AWS_SECRET_ACCESS_KEY"] = _S3.secret_key
    os.environ["AWS_ENDPOINT_URL"] = _S3.endpoint
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    # No interactive progress bars in test logs.
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if _S3 is not None:
        _S3.stop()
    # Last of all: leave with pytest's own status, skipping the interpreter teardown in which
    # pyarrow can abort (SIGABRT) after every test has passed; headrot.cli.exit_process says why.
    if _EXIT_STATUS:
        from headrot.cli import exit_process

        exit_process(_EXIT_STATUS[-1])


@pytest.fixture(scope="session")
def s3_server():
    """A running SeaweedFS S3 server on 127.0.0.1 with authentication."""
    if _S3.process is None:
        _S3.start()
    return _S3


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket per test: s3://<name>."""
    name = "t-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40] + "-" + os.urandom(3).hex()
    return s3_server.make_bucket(name)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the session (ray.init takes ~8 s here). 2 CPUs like the dev machines."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}},
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def generator_ckpt(tmp_path_factory) -> str:
    """A tiny randomly initialised generator checkpoint (16x16): stages' wiring, not quality."""
    import torch

    from headrot.model.checkpoint import save_model
    from headrot.model.unet import PRESETS, UNet

    torch.manual_seed(0)
    config = PRESETS["tiny"]
    uri = str(tmp_path_factory.mktemp("ckpt") / "generator.pt")
    save_model(uri, "generator", UNet(config), config)
    return uri
