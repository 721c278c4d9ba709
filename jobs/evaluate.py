"""Measure the rotations against ground truth and baselines; write the report.

Submit it to a running cluster from the repository root (README.md, "Running on a cluster"):

    ray job submit --address http://<head>:8265 --runtime-env jobs/runtime_env.yaml \\
        -- python jobs/evaluate.py --config <config.yaml> --root s3://<bucket>/runs/celeba

Flags: `python jobs/evaluate.py --help` (the same as `headrot evaluate --help`).
"""
import sys
from pathlib import Path

# `ray job submit --working-dir .` unpacks the repository as the job's cwd, but
# `python jobs/evaluate.py` puts only jobs/ on sys.path and the cluster image does
# not have headrot installed: put the repository root first, so that this file
# always runs the headrot that came with it (also over an older installed copy).
_ROOT = Path(__file__).resolve().parent.parent
if (_ROOT / "headrot" / "__init__.py").is_file():
    sys.path.insert(0, str(_ROOT))

from headrot.cli import run  # noqa: E402  (after the sys.path line above)

if __name__ == "__main__":
    run(["evaluate", *sys.argv[1:]])
