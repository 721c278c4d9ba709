"""The fit stage on Ray: planted linear latents -> trajectories.parquet."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from headrot import storage, tables
from headrot.latents_schema import index_rows, latents_table
from headrot.stages.fit import FitConfig, run_fit

pytestmark = pytest.mark.slow

SIZE = 16
SLOPES = {"left": 0.02, "right": -0.03}  # per degree, planted per light class
ATTRIBUTES = ("Male", "Eyeglasses", "Smiling")


def planted_rows(n=400, seed=0, size=SIZE):
    """A latents table (headrot.latents_schema) whose latents are planted lines in yaw, one per light."""
    rng = np.random.default_rng(seed)
    yaw = rng.uniform(-44, 44, n).astype(np.float32)
    light = rng.choice(["left", "right"], n)
    slope = np.array([SLOPES[l] for l in light]).reshape(-1, 1, 1, 1)
    base = rng.normal(size=(1, 3, size, size)) * 0.5
    latents = (base + slope * yaw.reshape(-1, 1, 1, 1) + rng.normal(size=(n, 3, size, size)) * 0.01)
    rows = index_rows([f"{i:06d}.jpg" for i in range(n)], rng.integers(0, 3, n), rng.integers(0, 50, n),
                      {a: rng.random(n) < 0.5 for a in ATTRIBUTES}, rng.uniform(60, 120, (n, 10)), light)
    return latents_table(rows, yaw, latents, np.zeros(n), np.full(n, 30.0))


def write_latents(root: str, table: pa.Table, n_files: int, seed: int = 0) -> None:
    """Split `table` into n_files latents files (rows shuffled) and mark the stage complete."""
    perm = np.random.default_rng(seed).permutation(table.num_rows)
    for i, idx in enumerate(np.array_split(perm, n_files)):
        tables.write_parquet(storage.join(root, "latents", f"part-{i:05d}.parquet"), table.take(np.sort(idx)))
    storage.mark_complete(storage.join(root, "latents"), {"written": table.num_rows})


def by_key(table: pa.Table) -> dict:
    slopes = tables.tensor_to_numpy(table.column("slope"))
    rows = table.drop_columns(["slope", "intercept", "centroids"]).to_pylist()
    return {(r["mode"], r["light"], r["key"], r["side"]): (r, slopes[i]) for i, r in enumerate(rows)}


def test_fit_recovers_planted_slopes_independent_of_files(ray_cluster, tmp_path):
    table = planted_rows()
    results = []
    for n_files, seed in ((3, 0), (4, 1)):
        root = str(tmp_path / f"run{n_files}")
        write_latents(root, table, n_files, seed)
        config = FitConfig(root=root, bins=(-45.0, 45.0, 10.0), attributes=("Male",), min_images=20, min_bins=3)
        summary = run_fit(config)
        assert summary["files"] == n_files and summary["rows_read"] == table.num_rows
        out = tables.read_parquet(storage.join(root, "trajectories", "trajectories.parquet"))
        results.append(by_key(out))
        # Rerun: complete with the same fingerprint -> nothing to do.
        again = run_fit(config)
        assert again.get("skipped") is True

    lines = results[0]
    for light, planted in SLOPES.items():
        for side in ("left", "right"):
            row, slope = lines[("light_conditioned", light, "", side)]
            assert row["fallback"] == "none"
            assert slope.shape == (3, SIZE, SIZE)
            np.testing.assert_allclose(slope, planted, atol=2e-3)
            assert row["r2"] > 0.99
            assert 0 <= row["noise_share"] < 0.05 and row["r2_reliable"] >= row["r2"] - 1e-3
    # The two light classes differ; light-agnostic mixes them.
    diff = lines[("light_conditioned", "left", "", "left")][1] - lines[("light_conditioned", "right", "", "left")][1]
    assert np.all(np.abs(diff) > 0.04)
    agnostic = lines[("light_agnostic", "any", "", "left")][1]
    assert np.all(np.abs(agnostic - 0.02) > 0.01) and np.all(np.abs(agnostic + 0.03) > 0.01)
    assert ("single_direction", "left", "Male=1", "both") in lines
    # Splitting the rows into other files changes nothing (up to float32 storage).
    assert results[0].keys() == results[1].keys()
    for key, (row, slope) in results[0].items():
        other_row, other_slope = results[1][key]
        np.testing.assert_allclose(slope, other_slope, atol=1e-6)
        assert row["fallback"] == other_row["fallback"] and row["n_images"] == other_row["n_images"]
        assert row["r2"] == pytest.approx(other_row["r2"], abs=1e-9)
        # The noise diagnostics merge across files like the sums (float32 squares: 1e-5); None
        # (a bin below 2 images, a group whose spread is all noise) in both or neither.
        for mine, theirs in [(row["noise_share"], other_row["noise_share"]),
                             (row["r2_reliable"], other_row["r2_reliable"]),
                             *zip([b["spread"] for b in row["bins"]], [b["spread"] for b in other_row["bins"]])]:
            assert (mine is None) == (theirs is None)
            assert mine is None or mine == pytest.approx(theirs, rel=1e-5, abs=1e-9)


def test_fit_refuses_incomplete_latents(ray_cluster, tmp_path):
    with pytest.raises(ValueError, match="embed"):
        run_fit(FitConfig(root=str(tmp_path)))
