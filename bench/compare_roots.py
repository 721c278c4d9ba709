"""Is a candidate generator better than the shipped one, or did the 32 test faces fall its way?

    python -m bench.compare_roots BASE_ROOT CAND_ROOT [CAND_ROOT ...] [--method M] [--base-method B] [--n 1000]

Each root is one that `bench.latent` (or `make demo`) evaluated, on the same source faces. A
paired bootstrap over those faces: draw the sources with replacement, compute `bench.latent`'s
figures on the draw in both roots, and keep the candidate-minus-base difference of the median pose
error, of the worst PSNR gain over no_move and of the IQR of the achieved turn at |delta| 20 (an
interquartile range over 32 faces moves by half a degree between draws: the interval says whether a
change in it is more than that). Prints, for each candidate, the median difference,
its 90% interval and how often the candidate came out better. Pairing matters: the faces that are
hard to turn are hard for every generator, so the difference varies far less than either figure.
`--base-method B`: the base root's method B against the candidates' M (two methods of one root:
`python -m bench.compare_roots runs/demo runs/demo --method yaw-cal-colour --base-method
local-ortho-norm-cal-colour`).
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from bench.latent import yardstick

PRIMARY = "yaw-cal-colour"   # the demo's evaluate.primary


def _figures(metrics, method: str) -> tuple[float, float, float]:
    y = yardstick(metrics, method)
    iqr = y["iqr_at_20_deg"]
    return y["pose_error_deg_median"], min(y["psnr_gain_db_by_delta"].values()), np.nan if iqr is None else iqr


def _draw(groups: dict, picks: np.ndarray):
    """The rows of the drawn sources, each draw a source of its own (a face drawn twice counts twice)."""
    import pandas as pd

    return pd.concat([groups[s].assign(source_id=f"{s}#{k}") for k, s in enumerate(picks)], ignore_index=True)


def compare(base, candidate, method: str = PRIMARY, n: int = 1000, seed: int = 0, base_method: str | None = None) -> dict:
    """Paired bootstrap of candidate-minus-base pose error (deg), worst PSNR gain (dB) and IQR of the
    achieved turn at |delta| 20 (deg); the base's `base_method` (default `method`) against the
    candidate's `method`."""
    if base_method not in (None, method):
        base = base[base.method.isin([base_method, "no_move"])].copy()
        base.loc[base.method == base_method, "method"] = method
    sources = sorted(base[base.method == method].source_id.unique())
    theirs = sorted(candidate[candidate.method == method].source_id.unique())
    if sources != theirs:
        raise ValueError(f"the roots evaluated different faces ({len(sources)} against {len(theirs)}); "
                         "compare roots made with the same data and --limit")
    rng = np.random.default_rng(seed)
    ours, other = (dict(tuple(m.groupby("source_id"))) for m in (base, candidate))
    diffs = np.empty((n, 3))     # pose, worst gain, IQR at 20: candidate minus base, per draw
    for i in range(n):
        picks = rng.choice(sources, len(sources))
        diffs[i] = np.subtract(_figures(_draw(other, picks), method), _figures(_draw(ours, picks), method))
    pose, gain, iqr = diffs.T
    observed = np.subtract(_figures(candidate, method), _figures(base, method))

    def summary(d: np.ndarray, observed: float, better: np.ndarray) -> dict:
        lo, hi = np.percentile(d, [5, 95])
        return {"observed": round(observed, 3), "median": round(float(np.median(d)), 3),
                "interval_90": [round(float(lo), 3), round(float(hi), 3)],
                "p_candidate_better": round(float(better.mean()), 3)}

    return {"method": method, **({"base_method": base_method} if base_method not in (None, method) else {}),
            "sources": len(sources), "draws": n,
            "pose_error_diff_deg": summary(pose, observed[0], pose < 0),
            "worst_psnr_gain_diff_db": summary(gain, observed[1], gain > 0),
            **({"iqr_at_20_diff_deg": summary(iqr, observed[2], iqr < 0)} if np.isfinite(iqr).all() else {})}


def main(argv: list[str] | None = None) -> list[dict]:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", help="the shipped model's root (e.g. runs/demo)")
    ap.add_argument("candidates", nargs="+", help="roots of the candidates, made on the same faces")
    ap.add_argument("--method", default=PRIMARY)
    ap.add_argument("--base-method", default=None, help="the base root's method (default: --method)")
    ap.add_argument("--n", type=int, default=1000, help="bootstrap draws")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    def read(root: str):
        return pd.read_parquet(f"{root.rstrip('/')}/report/metrics.parquet")

    base = read(args.base)
    out = []
    for root in args.candidates:
        row = {"base": args.base, "candidate": root, **compare(base, read(root), args.method, args.n, args.seed,
                                                                         args.base_method)}
        print(json.dumps(row))
        out.append(row)
    return out


if __name__ == "__main__":
    main()
