"""The report's figures (matplotlib, Agg backend: no display needed). Each returns PNG bytes."""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np

# One colour and marker per method, stable across figures.
STYLE = {
    "headrot": ("tab:blue", "o"), "no_move": ("tab:gray", "s"), "light_agnostic": ("tab:orange", "^"),
    "single_direction": ("tab:green", "v"), "centroid_path": ("tab:purple", "D"),
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def metric_vs_delta(methods: dict[str, dict[str, dict]], key: str, ylabel: str, title: str,
                    band: float | None = None, band_label: str = "", ideal: str | None = None) -> bytes:
    """One line per method of methods[m][delta][key] against delta (str keys as in report.json).

    band: draw a grey band [0, band] (e.g. the pose estimator's held-out MAE: errors inside it
    are below what the estimator can resolve). ideal: "abs" draws y = |delta| (no_move's pose error).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    all_d: list[int] = []
    for i, (method, per_delta) in enumerate(sorted(methods.items())):
        pts = sorted((int(d), v.get(key)) for d, v in per_delta.items() if v.get(key) is not None)
        if not pts:
            continue
        d, y = zip(*pts)
        all_d.extend(d)
        color, marker = STYLE.get(method, (f"C{(i + 5) % 10}", "x"))
        ax.plot(d, y, marker=marker, color=color, label=method, lw=1.6, ms=5)
    if band:
        ax.axhspan(0, band, color="0.85", zorder=0, label=band_label or None)
    if ideal == "abs" and all_d:
        xs = np.linspace(min(all_d), max(all_d), 50)
        ax.plot(xs, np.abs(xs), ls=":", color="0.5", lw=1, label="|delta|")
    ax.set_xlabel("delta (degrees; target yaw = source yaw + delta)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if all_d:
        ax.set_xticks(sorted(set(all_d)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def pose_by_band(bands: dict[str, dict[str, dict]], title: str) -> bytes:
    """One line per method of its median pose error per |target yaw| band (report.json's
    pose_by_target_yaw), and the judge's own median error on the same renders' ground truths
    (dashed black: the floor no render can read below)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    labels = sorted({b for per in bands.values() for b in per}, key=lambda b: float(b.split("-")[0].rstrip("+")))
    x = {b: i for i, b in enumerate(labels)}
    floor: dict[str, list[float]] = {}
    for i, (method, per) in enumerate(sorted(bands.items())):
        pts = [(x[b], v["pose_error_deg_median"]) for b, v in per.items() if v.get("pose_error_deg_median") is not None]
        for b, v in per.items():
            if v.get("judge_on_truth_deg_median") is not None:
                floor.setdefault(b, []).append(v["judge_on_truth_deg_median"])
        if pts:
            color, marker = STYLE.get(method, (f"C{(i + 5) % 10}", "x"))
            ax.plot(*zip(*sorted(pts)), marker=marker, color=color, label=method, lw=1.6, ms=5)
    if floor:
        # every method renders the same (source, delta) pairs, so their floors agree; the median
        # covers a report whose methods were rendered on different faces
        pts = sorted((x[b], float(np.median(v))) for b, v in floor.items())
        ax.plot(*zip(*pts), ls="--", color="black", lw=1.2, label="judge on the ground truth")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    ax.set_xlabel("|target yaw| (degrees)")
    ax.set_ylabel("median pose error (degrees)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # beside: the lines rise to the right
    return _png(fig)


def cases_sheet(cases: Sequence[dict], with_truth: bool) -> bytes:
    """Rows: source | render | ground truth (when known), labelled with the case's kind and PSNR.

    cases: dicts with source, render, truth (uint8 [S,S,3]) and label."""
    from headrot.report.contact_sheet import contact_sheet
    from headrot.report.grid import png_bytes

    rows = [(c["source"], [c["render"], c["truth"]] if with_truth else [c["render"]]) for c in cases]
    cols = ["render", "ground truth"] if with_truth else ["render"]
    return png_bytes(contact_sheet(rows, cols, [c["label"] for c in cases], source_label="source"))


def loss_curve(history: Sequence[dict], title: str = "Training loss", ylabel: str = "loss") -> bytes:
    """The training loss per epoch (history: the train loop's per-epoch metrics, kept across
    resumes, so a run stopped and continued many times draws one curve)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["loss"] for h in history], marker="o", ms=3, lw=1.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _png(fig)
