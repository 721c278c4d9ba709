"""The files users take onto clusters, checked offline with the tools' own schemas.

- cluster/*.yaml: Ray's cluster-launcher schema, through the same `prepare_config`
  and `validate_config` that `ray up` runs (ray/autoscaler/_private/commands.py,
  `_bootstrap_config`); AWS node_config against boto's RunInstances model, GCP
  node_config against the GCE Instance fields it may use.
- manifests/*.yaml: the KubeRay v1.7.0 RayJob CRD (tests/schemas/), made strict.
- Every check is also shown to FAIL on a planted misspelling, so a passing test means
  the schema looked at the field, not that it ignores everything.
- jobs/: every entry point named anywhere exists and answers --help, also from a
  copy of the tree as `ray job submit --working-dir` unpacks it.
- No credentials in any of these files.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = Path(__file__).resolve().parent / "schemas"
CLUSTER_CONFIGS = sorted((ROOT / "cluster").glob("*.yaml"))
MANIFESTS = sorted((ROOT / "manifests").glob("*.yaml"))
JOB_FILES = sorted(p for p in (ROOT / "jobs").glob("*.py") if not p.name.startswith("_"))
RUNTIME_ENV = ROOT / "jobs" / "runtime_env.yaml"
CLUSTER_DOC = ROOT / "README.md"  # its "Running on a cluster" section

# jobs/<file>.py -> the `headrot` subcommand it runs
JOB_COMMAND = {"pipeline": "run"}


def _ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# ---------------------------------------------------------------------------
# Ray cluster launcher (cluster/*.yaml)


def _ray_validate(config: dict) -> None:
    """What `ray up` does before it talks to a cloud: fill defaults, then the schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def _aws_validate_node_config(node_config: dict) -> None:
    """boto's own model of EC2 RunInstances: unknown keys and wrong types at any depth.

    Ray passes node_config to ec2.create_instances, adding MinCount/MaxCount itself.
    """
    from botocore.session import get_session
    from botocore.validate import ParamValidator

    shape = get_session().get_service_model("ec2").operation_model("RunInstances").input_shape
    report = ParamValidator().validate({**node_config, "MinCount": 1, "MaxCount": 1}, shape)
    if report.has_errors():
        raise ValueError(report.generate_report())


# The GCE Instance fields (compute v1 instances.insert) a Ray node_config may use; the
# Google API client is not installed here, so this is the list from the API reference.
GCE_INSTANCE_FIELDS = {
    "machineType", "disks", "networkInterfaces", "serviceAccounts", "scheduling",
    "guestAccelerators", "metadata", "labels", "tags", "minCpuPlatform",
    "shieldedInstanceConfig", "confidentialInstanceConfig", "reservationAffinity",
    "advancedMachineFeatures", "resourcePolicies", "displayDevice", "canIpForward",
    "deletionProtection", "description", "hostname", "networkPerformanceConfig",
}
GCE_SCHEDULING_FIELDS = {
    "preemptible", "onHostMaintenance", "automaticRestart", "provisioningModel",
    "instanceTerminationAction", "nodeAffinities", "minNodeCpus", "maxRunDuration",
    "localSsdRecoveryTimeout",
}


def _gcp_validate_node_config(node_config: dict) -> None:
    unknown = set(node_config) - GCE_INSTANCE_FIELDS
    if unknown:
        raise ValueError(f"not GCE Instance fields: {sorted(unknown)}")
    scheduling = node_config.get("scheduling", {})
    if not isinstance(scheduling, dict):
        raise ValueError("scheduling must be a mapping (GCE Scheduling object)")
    unknown = set(scheduling) - GCE_SCHEDULING_FIELDS
    if unknown:
        raise ValueError(f"not GCE Scheduling fields: {sorted(unknown)}")
    if scheduling.get("preemptible") and scheduling.get("automaticRestart", False):
        raise ValueError("a preemptible VM needs automaticRestart: false")
    if (node_config.get("guestAccelerators") or node_config["machineType"].startswith(("g2-", "a2-", "a3-"))) \
            and scheduling.get("onHostMaintenance") != "TERMINATE":
        raise ValueError("GPU VMs need scheduling.onHostMaintenance: TERMINATE")


def _provider_validate(config: dict) -> None:
    check = {"aws": _aws_validate_node_config, "gcp": _gcp_validate_node_config}[config["provider"]["type"]]
    for name, node_type in config["available_node_types"].items():
        try:
            check(node_type["node_config"])
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None


@pytest.mark.parametrize("path", CLUSTER_CONFIGS, ids=_ids(CLUSTER_CONFIGS))
def test_cluster_config_passes_ray_and_provider_validation(path):
    config = _load(path)
    _ray_validate(config)
    _provider_validate(config)


def test_there_are_cluster_configs_for_aws_and_gcp():
    assert {p.stem for p in CLUSTER_CONFIGS} >= {"aws", "gcp"}


# Each planted error: (where, how to plant it). Top-level keys, node-type keys and the
# docker section are closed in Ray's schema; node_config is the provider's.
RAY_PLANTS = {
    "top-level key": lambda c: c.update(head_setup_command=c.pop("head_setup_commands")),
    "node type key": lambda c: _first_worker(c).update(min_worker=_first_worker(c).pop("min_workers")),
    "docker key": lambda c: c["docker"].update(imag=c["docker"].pop("image")),
    "resources type": lambda c: _first_worker(c)["resources"].update(GPU="one"),
    "head type not defined": lambda c: c.update(head_node_type="hed"),
}


def _first_worker(config):
    return next(v for k, v in config["available_node_types"].items() if k != config["head_node_type"])


@pytest.mark.parametrize("plant", RAY_PLANTS, ids=list(RAY_PLANTS))
@pytest.mark.parametrize("path", CLUSTER_CONFIGS, ids=_ids(CLUSTER_CONFIGS))
def test_cluster_config_with_a_planted_error_fails_ray_validation(path, plant):
    config = _load(path)
    RAY_PLANTS[plant](config)
    # The errors `ray up` stops on: schema, config values, docker config (an assert in Ray).
    with pytest.raises((jsonschema.ValidationError, ValueError, AssertionError)):
        _ray_validate(config)


def test_aws_node_config_misspelling_fails():
    config = _load(ROOT / "cluster" / "aws.yaml")
    worker = _first_worker(config)["node_config"]
    worker["IamInstanceProfil"] = worker.pop("IamInstanceProfile")
    with pytest.raises(ValueError, match="IamInstanceProfil"):
        _provider_validate(config)
    config = _load(ROOT / "cluster" / "aws.yaml")
    spot = config["available_node_types"]["gpu-a10g-spot"]["node_config"]
    spot["InstanceMarketOptions"]["MarketTyp"] = spot["InstanceMarketOptions"].pop("MarketType")
    with pytest.raises(ValueError, match="MarketTyp"):
        _provider_validate(config)


def test_gcp_node_config_misspelling_fails():
    config = _load(ROOT / "cluster" / "gcp.yaml")
    node = config["available_node_types"]["gpu-l4-preemptible"]["node_config"]
    node["scheduling"]["preemtible"] = node["scheduling"].pop("preemptible")
    with pytest.raises(ValueError, match="preemtible"):
        _provider_validate(config)
    config = _load(ROOT / "cluster" / "gcp.yaml")
    node = _first_worker(config)["node_config"]
    node["serviceAccount"] = node.pop("serviceAccounts")
    with pytest.raises(ValueError, match="serviceAccount"):
        _provider_validate(config)


def test_cluster_configs_have_the_promised_node_groups():
    aws = _load(ROOT / "cluster" / "aws.yaml")
    types = aws["available_node_types"]
    head = types[aws["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head is a CPU node"
    instance_types = {t["node_config"]["InstanceType"] for t in types.values()}
    assert {"g5.xlarge", "p4d.24xlarge"} <= instance_types
    assert any(t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"
               for t in types.values()), "a spot option"
    for name, t in types.items():
        assert "IamInstanceProfile" in t["node_config"], f"{name}: S3 access through an instance role"
        if name != aws["head_node_type"]:
            assert t.get("min_workers", 0) == 0, f"{name}: GPU workers scale from zero"

    gcp = _load(ROOT / "cluster" / "gcp.yaml")
    types = gcp["available_node_types"]
    assert types[gcp["head_node_type"]]["resources"].get("GPU", 0) == 0
    machines = " ".join(t["node_config"]["machineType"] for t in types.values())
    assert "a2-" in machines and "g2-" in machines, "A100 and L4 nodes"
    assert any(t["node_config"].get("scheduling", {}).get("preemptible") for t in types.values())
    for name, t in types.items():
        assert t["node_config"].get("serviceAccounts"), f"{name}: GCS access through a service account"


@pytest.mark.parametrize("path", CLUSTER_CONFIGS, ids=_ids(CLUSTER_CONFIGS))
def test_cluster_image_matches_the_client_ray(path):
    """A client and a cluster on different Ray releases fail in confusing ways."""
    import ray

    image = _load(path)["docker"]["image"]
    assert image.startswith(f"rayproject/ray:{ray.__version__}-"), image
    assert image.endswith(("-gpu", "-cu121", "-cu124", "-cu128")), f"{image}: a GPU image"


# ---------------------------------------------------------------------------
# KubeRay manifests (manifests/*.yaml)


def _strict(node):
    """kubeconform --strict: closed objects, and int-or-string as integer or string."""
    if isinstance(node, dict):
        if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
            node.pop("type", None)
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)
    return node


@functools.lru_cache(maxsize=1)
def _rayjob_schema() -> dict:
    (path,) = SCHEMAS.glob("ray.io_rayjobs.v*.yaml")
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))


@functools.lru_cache(maxsize=2)
def _validator(kind: str):
    """Built once: jsonschema.validate would re-check the 1.4 MB schema on every call."""
    schema = _rayjob_schema()
    if kind == "RayCluster":
        # The RayCluster spec is the RayJob's embedded rayClusterSpec.
        schema = {
            "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
            "additionalProperties": False,
            "properties": {
                "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                "metadata": schema["properties"]["metadata"],
                "spec": schema["properties"]["spec"]["properties"]["rayClusterSpec"],
            },
        }
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _validate_manifest(doc: dict) -> None:
    if doc.get("apiVersion") != "ray.io/v1":
        raise ValueError(f"apiVersion {doc.get('apiVersion')!r}: want ray.io/v1")
    if doc.get("kind") in ("RayJob", "RayCluster"):
        _validator(doc["kind"]).validate(doc)
    else:
        raise ValueError(f"kind {doc.get('kind')!r}: manifests/ holds RayJob and RayCluster only")
    if not doc.get("metadata", {}).get("name"):
        raise ValueError("metadata.name is required")


def _manifest_docs():
    return [(f"{p.relative_to(ROOT)}#{i}", doc) for p in MANIFESTS for i, doc in enumerate(_docs(p))]


def _cluster_spec(doc):
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def _containers(doc):
    spec = _cluster_spec(doc)
    groups = [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]
    for name, group in groups:
        for container in group["template"]["spec"]["containers"]:
            yield name, container


@pytest.mark.parametrize("name,doc", _manifest_docs(), ids=[n for n, _ in _manifest_docs()])
def test_manifest_passes_the_kuberay_crd(name, doc):
    _validate_manifest(doc)


def test_there_is_a_rayjob_and_a_raycluster():
    kinds = {doc["kind"] for _, doc in _manifest_docs()}
    assert kinds == {"RayJob", "RayCluster"}


MANIFEST_PLANTS = {
    "spec field": ("RayJob", lambda d: d["spec"].update(
        shutdownAfterJobFinishe=d["spec"].pop("shutdownAfterJobFinishes"))),
    "wrong type": ("RayJob", lambda d: d["spec"].update(ttlSecondsAfterFinished="one day")),
    "cluster spec field": ("RayCluster", lambda d: d["spec"].update(
        workerGroupSpec=d["spec"].pop("workerGroupSpecs"))),
    "worker group field": ("RayCluster", lambda d: d["spec"]["workerGroupSpecs"][0].update(
        maxReplica=d["spec"]["workerGroupSpecs"][0].pop("maxReplicas"))),
    "container field": ("RayJob", lambda d: _first_gpu_container(d).update(
        resource=_first_gpu_container(d).pop("resources"))),
    "secret ref field": ("RayJob", lambda d: _first_gpu_container(d)["envFrom"][0].update(
        secretRefs=_first_gpu_container(d)["envFrom"][0].pop("secretRef"))),
}


def _first_gpu_container(doc):
    return next(c for n, c in _containers(doc) if n != "head")


@pytest.mark.parametrize("plant", MANIFEST_PLANTS, ids=list(MANIFEST_PLANTS))
def test_manifest_with_a_planted_error_fails(plant):
    kind, mutate = MANIFEST_PLANTS[plant]
    doc = copy.deepcopy(next(d for _, d in _manifest_docs() if d["kind"] == kind))
    _validate_manifest(copy.deepcopy(doc))  # valid before the plant ...
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError):  # ... and not after
        _validate_manifest(doc)


@pytest.mark.parametrize("name,doc", _manifest_docs(), ids=[n for n, _ in _manifest_docs()])
def test_manifest_resources_images_and_credentials(name, doc):
    import ray

    spec = _cluster_spec(doc)
    assert spec["rayVersion"] == ray.__version__
    gpu_groups = 0
    for group, container in _containers(doc):
        assert ray.__version__ in container["image"], f"{group}: image of Ray {ray.__version__}"
        res = container["resources"]
        for key in ("cpu", "memory"):
            assert key in res["requests"] and key in res["limits"], f"{group}: {key} requests and limits"
        if "nvidia.com/gpu" in res["limits"]:
            assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"]
            gpu_groups += 1
        # Credentials from a Secret (or the pod's ServiceAccount), never inline.
        for env in container.get("env", []):
            if re.search(r"KEY|SECRET|TOKEN|PASSWORD", env["name"]):
                assert "valueFrom" in env and "value" not in env, f"{group}: {env['name']} inline"
        refs = [e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e]
        assert refs or "serviceAccountName" in _pod_spec(doc, group), f"{group}: no way to get credentials"
    assert gpu_groups >= 1, "a GPU worker group"
    if doc["kind"] == "RayJob":
        assert doc["spec"]["shutdownAfterJobFinishes"] is True
        assert doc["spec"]["ttlSecondsAfterFinished"] > 0


def _pod_spec(doc, group):
    spec = _cluster_spec(doc)
    if group == "head":
        return spec["headGroupSpec"]["template"]["spec"]
    return next(g for g in spec["workerGroupSpecs"] if g["groupName"] == group)["template"]["spec"]


def test_rayjob_runtime_env_matches_jobs_runtime_env():
    """The RayJob carries jobs/runtime_env.yaml inline (code from a release zip instead of '.')."""
    local = _load(RUNTIME_ENV)
    for _, doc in _manifest_docs():
        if doc["kind"] != "RayJob":
            continue
        inline = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
        assert inline["pip"] == local["pip"]
        assert inline["env_vars"] == local["env_vars"]
        assert inline["working_dir"].startswith(("https://", "s3://", "gs://"))
        assert inline["working_dir"].endswith(".zip")


# ---------------------------------------------------------------------------
# Entry points (jobs/*.py) and the runtime environment


def _named_entrypoints() -> dict[str, set[str]]:
    """jobs/<x>.py as named in manifests, cluster configs, docs and the job files' docstrings."""
    found: dict[str, set[str]] = {}
    sources = [*CLUSTER_CONFIGS, *MANIFESTS, *JOB_FILES, RUNTIME_ENV]
    if CLUSTER_DOC.exists():
        sources.append(CLUSTER_DOC)
    for source in sources:
        for match in re.findall(r"\bjobs/[A-Za-z0-9_]+\.py\b", source.read_text()):
            found.setdefault(match, set()).add(str(source.relative_to(ROOT)))
    return found


def test_every_named_entrypoint_exists():
    named = _named_entrypoints()
    assert "jobs/pipeline.py" in named
    missing = {entry: sorted(where) for entry, where in named.items() if not (ROOT / entry).is_file()}
    assert not missing, f"named but not in jobs/: {missing}"
    for _, doc in _manifest_docs():
        if doc["kind"] == "RayJob":
            assert doc["spec"]["entrypoint"].startswith("python jobs/pipeline.py ")


def test_every_stage_has_a_job_file():
    from headrot.cli import COMMANDS

    have = {JOB_COMMAND.get(p.stem, p.stem) for p in JOB_FILES}
    assert {"synth", "train", "embed", "fit", "render", "evaluate", "run"} <= have
    assert have <= set(COMMANDS)


@pytest.mark.parametrize("path", JOB_FILES, ids=_ids(JOB_FILES))
def test_job_file_is_thin_and_answers_help(path):
    command = JOB_COMMAND.get(path.stem, path.stem)
    source = path.read_text()
    assert f'run(["{command}", *sys.argv[1:]])' in source     # headrot.cli.run: main + a clean exit
    assert "ray job submit" in source, "the docstring shows how to submit it"
    done = subprocess.run([sys.executable, str(path.relative_to(ROOT)), "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"headrot {command}" in done.stdout


@pytest.mark.parametrize("path", JOB_FILES, ids=_ids(JOB_FILES))
def test_job_stage_is_implemented(path):
    """`--help` answers even for a stage not built yet; this checks the stage itself.

    Skipped, naming the stage, until headrot/commands/<stage>.py lands; then it must run.
    """
    command = JOB_COMMAND.get(path.stem, path.stem)
    if importlib.util.find_spec(f"headrot.commands.{command}") is None:
        pytest.skip(f"headrot.commands.{command} is not built yet")
    done = subprocess.run([sys.executable, str(path.relative_to(ROOT)), "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # A built stage adds its own flags to the bare `-h`.
    assert re.search(r"--[a-z]", done.stdout.replace("--help", "")), done.stdout


def test_job_file_runs_from_an_unpacked_working_dir(tmp_path):
    """As `ray job submit --working-dir .` unpacks it: the copy's headrot, not an installed one."""
    for part in ("headrot", "jobs"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    # The job file's top (everything but its __main__ block, which leaves the process) picks the
    # copy's headrot ...
    probe = (
        "import runpy\n"
        "runpy.run_path('jobs/synth.py', run_name='job')\n"
        "import headrot\nprint('HEADROT', headrot.__file__)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    origin = Path(done.stdout.split("HEADROT ")[-1].strip())
    assert origin.is_relative_to(tmp_path), origin
    # ... and the job runs from there as `ray job submit` starts it.
    done = subprocess.run([sys.executable, "jobs/synth.py", "--help"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "headrot synth" in done.stdout, done.stderr


def test_runtime_env_is_valid_and_matches_pyproject():
    from ray.runtime_env import RuntimeEnv

    env = _load(RUNTIME_ENV)
    RuntimeEnv(**env)  # Ray's own parsing of every field
    assert env["working_dir"] == "."
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]

    def name(req):
        return re.split(r"[\[<>=!~ ;]", req, maxsplit=1)[0].lower()

    # torch and ray come with the cluster image; everything else exactly as pyproject pins it.
    expected = sorted(d.replace(" ", "") for d in deps if name(d) not in {"torch", "ray"})
    assert sorted(env["pip"]["packages"]) == expected
    assert not any(name(p) in {"torch", "ray"} for p in env["pip"]["packages"])


def test_runtime_env_excludes_what_it_should(tmp_path):
    """Ray's own packaging code, on a tree shaped like the repository after a run."""
    import zipfile

    from ray._private.runtime_env.packaging import _zip_files

    tree = tmp_path / "repo"
    for rel in ["headrot/__init__.py", "headrot/assets/demo.pt", "jobs/synth.py", "bench/run.py",
                ".git/HEAD", ".venv/bin/python", "runs/demo/run.json", "bench/results/x.json",
                "checkpoints/big.pt", "headrot/__pycache__/x.pyc", "headrot.egg-info/PKG-INFO"]:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("x")
    out = tmp_path / "pkg.zip"
    _zip_files(str(tree), _load(RUNTIME_ENV)["excludes"], str(out), include_gitignore=True)
    names = {n for n in zipfile.ZipFile(out).namelist() if not n.endswith("/")}
    assert names == {"headrot/__init__.py", "headrot/assets/demo.pt", "jobs/synth.py", "bench/run.py"}


# ---------------------------------------------------------------------------
# No credentials


CREDENTIAL_PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret key value": re.compile(
        r"aws_secret_access_key[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+]{30,}", re.IGNORECASE),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\"private_key\"\s*:"),
    "secret-looking value": re.compile(
        r"(secret|password|token|access_key)[\w-]*[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+=_-]{24,}", re.IGNORECASE),
    "inline env secret": re.compile(
        r"name:\s*\S*(KEY|SECRET|TOKEN|PASSWORD)\S*\s*\n\s*value:", re.IGNORECASE),
}


def _scan(text: str) -> list[str]:
    return [what for what, pattern in CREDENTIAL_PATTERNS.items() if pattern.search(text)]


def _scanned_files():
    files = [p for d in ("cluster", "manifests", "jobs") for p in sorted((ROOT / d).rglob("*")) if p.is_file()
             and "__pycache__" not in p.parts]
    if CLUSTER_DOC.exists():
        files.append(CLUSTER_DOC)
    return files


@pytest.mark.parametrize("path", _scanned_files(), ids=_ids(_scanned_files()))
def test_no_credentials_in_files(path):
    assert _scan(path.read_text(errors="replace")) == []


@pytest.mark.parametrize("planted", [
    "aws_access_key_id: AKIAZ7XQ4M2PLN3R5VWB",
    "aws_secret_access_key = q8Xm2Lr5Tz9Vb3Nc6Hw1Ks4Pd7Fg0Jy2Ae5Ru8Io",
    "        - name: AWS_SECRET_ACCESS_KEY\n          value: q8Xm2Lr5Tz9Vb3Nc",
    '{"type": "service_account", "private_key": "x"}',
    "password: Zr7Qw2Lx9Vb4Nc6Hm1Ks3Pd8Fg",
])
def test_the_credential_scan_catches_planted_ones(planted):
    assert _scan(planted)


def test_the_credential_scan_passes_placeholders_and_references():
    ok = ("kubectl create secret generic headrot-s3 --from-literal=AWS_ACCESS_KEY_ID=\"$AWS_ACCESS_KEY_ID\"\n"
          "envFrom:\n  - secretRef:\n      name: headrot-s3\n"
          "- name: AWS_SECRET_ACCESS_KEY\n  valueFrom:\n    secretKeyRef: {name: headrot-s3, key: k}\n")
    assert _scan(ok) == []


def test_schema_copy_is_attributed():
    text = (SCHEMAS / "README.md").read_text()
    assert "ray-project/kuberay" in text and "Apache" in text
    json.dumps(_rayjob_schema())  # loads and is plain data
