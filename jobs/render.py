"""Stage 3: move latents along the trajectories and decode the rotated dataset (Ray Data).

Submit it to a running cluster from the repository root (README.md, "Running on a cluster"):

    ray job submit --address http://<head>:8265 --runtime-env jobs/runtime_env.yaml \\
        -- python jobs/render.py --config <config.yaml> --root s3://<bucket>/runs/celeba

Flags: `python jobs/render.py --help` (the same as `headrot render --help`).
"""
import sys
from pathlib import Path

# `ray job submit --working-dir .` unpacks the repository as the job's cwd, but
# `python jobs/render.py` puts only jobs/ on sys.path and the cluster image does
# not have headrot installed: put the repository root first, so that this file
# always runs the headrot that came with it (also over an older installed copy).
_ROOT = Path(__file__).resolve().parent.parent
if (_ROOT / "headrot" / "__init__.py").is_file():
    sys.path.insert(0, str(_ROOT))

from headrot.cli import run  # noqa: E402  (after the sys.path line above)

if __name__ == "__main__":
    run(["render", *sys.argv[1:]])
