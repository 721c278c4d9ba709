"""report.html and the evaluate stage's figures, drawn from a report.json dict (headrot.evaluate's
docstring has its schema): numbers in, PNG bytes and one self-contained HTML page out."""
from __future__ import annotations

from headrot import storage
from headrot.report import html as H
from headrot.report import plots

# The fit summary's per-line figures: {"<light>/<side>": value} (_by_light) and {side: value} (_global).
FIT_FIGURES = ("r2", "noise_share", "r2_reliable")

TRAJECTORIES_CAPTION = (
    "The fit's light-conditioned trajectories: top, each yaw bin's centroid along its side's "
    "fitted direction against the line (legend: R^2, in brackets R^2 without the centroids' "
    "sampling noise, faces); bottom, each centroid's distance from its line and from the side's "
    "mean, and (dashed) the sampling noise of a centroid of that many faces (RMS per latent element).")


# ---------------------------------------------------------------------------
# Figures


def cases_caption(method: str, synthetic: bool) -> str:
    return (f"{method}: best, median and worst renders by PSNR" +
            (" vs ground truth (source | render | ground truth)" if synthetic else " (reconstruction)"))


def make_figures(methods_report: dict, pose_info: dict, synthetic: bool,
                 by_target: dict | None = None) -> dict[str, tuple[bytes, str]]:
    """The metric-vs-delta figures, and pose error by |target yaw| (`by_target`: report.json's
    pose_by_target_yaw): {file name: (png, caption)}."""
    figs: dict[str, tuple[bytes, str]] = {}
    mae = pose_info.get("mae_deg_heldout")
    has = lambda key: any(v.get(key) is not None for per in methods_report.values() for v in per.values())  # noqa: E731
    if has("pose_error_deg_median"):
        est = f"pose estimator held-out MAE {mae:.1f} deg" if mae is not None else f"pose by {pose_info['kind']}"
        figs["pose_error_vs_delta.png"] = (plots.metric_vs_delta(
            methods_report, "pose_error_deg_median", "median pose error (degrees)",
            f"Pose error vs delta ({est})", band=mae, band_label="estimator MAE", ideal="abs"),
            f"Median |estimated yaw - target yaw| per delta; grey band: {est}; dotted: |delta| (no rotation).")
    if by_target:
        figs["pose_error_vs_target_yaw.png"] = (plots.pose_by_band(by_target, "Pose error by |target yaw|"),
            "Median pose error of the turned renders by how far from frontal their target is; dashed: the "
            "judge's own median error on the same renders' ground truths, the floor no render reads below.")
    if synthetic and has("psnr_db"):
        figs["psnr_vs_delta.png"] = (plots.metric_vs_delta(
            methods_report, "psnr_db", "PSNR vs ground truth (dB)", "PSNR vs delta"),
            "Mean PSNR of each render against the same identity re-rendered at the target yaw, same light.")
    if synthetic and has("identity_top1"):
        figs["identity_vs_delta.png"] = (plots.metric_vs_delta(
            methods_report, "identity_top1", "identity top-1", "Identity retrieval vs delta"),
            "Fraction of renders whose nearest gallery face (same pose and light) is their own identity.")
    if synthetic and has("colour_psnr_db"):
        figs["colour_psnr_vs_delta.png"] = (plots.metric_vs_delta(
            methods_report, "colour_psnr_db", "PSNR of 4x4 block colours (dB)", "Colours vs delta"),
            "Mean PSNR of each render's 4x4-pixel block colours against the ground truth's: recoloured hair, "
            "a relit face or a changed background, region by region, whatever the fine detail.")
    if has("colour_fault_rate"):
        figs["colour_faults_vs_delta.png"] = (plots.metric_vs_delta(
            methods_report, "colour_fault_rate", "share of renders with colour faults", "Colour faults vs delta"),
            "Share of renders with over 3% of their pixels in colours their source lacks (recoloured hair, a "
            "relit face, a blotch); a true turn keeps its colours (ground-truth turns: at most 0.6% of pixels). "
            "Blind to -colour renders mapped onto their source (colour_map transport): they take its colours "
            "by construction; judge those by the block-colour PSNR.")
    return figs


# ---------------------------------------------------------------------------
# The page


def render_html(report: dict, figures: dict[str, tuple[bytes, str]], run: dict, report_dir: str) -> str:
    s = report["summary"]
    mae = report["pose_estimator"].get("mae_deg_heldout")
    mae_txt = f"{mae:.2f}" if mae is not None else "n/a"
    sections = []
    notes = "".join(f'<div class="note">{H.esc(n)}</div>' for n in report["notes"])
    sections.append(("Summary", notes + H.table(["", "value"], [
        ("kind", report["kind"]), ("method summarised", s["method"]),
        ("median pose error (deg)", s["pose_error_deg_median"]),
        ("pose estimator held-out MAE (deg)", s["pose_estimator_mae_deg"]),
        ("mean PSNR vs ground truth (dB)", s["psnr_db_mean"]),
        ("mean block-colour PSNR vs ground truth (dB)", s.get("colour_psnr_db_mean")), ("mean SSIM", s["ssim_mean"]),
        ("identity top-1", s["identity_top1"]), ("embedding PSNR (dB)", s["embedding_psnr_db"]),
        ("colour faults (share of turned renders)", s.get("colour_fault_rate")),
        ("renders / sources", f"{s['n_renders']} / {s['n_sources']}"),
        ("targets met", f"{s['targets_met']} of {s['targets_total']}")])))
    sections.append(("Targets", H.table(["target", "value", "threshold", "status", "detail"], [
        (t["description"], t["value"], t["threshold"], H.status(t["met"]), t["detail"])
        for t in report["targets"].values()], left=1)))
    pe = report["pose_estimator"]
    sections.append(("Pose estimator", f"<p>{H.esc(pe.get('note', ''))}</p>" + H.table(
        ["", "value"], [(k, v if not isinstance(v, (list, dict)) else str(v)) for k, v in sorted(pe.items())
                        if k != "note"])))
    figs = "".join(H.figure(png, cap, name) for name, (png, cap) in figures.items() if not name.startswith("cases_"))
    fit = report.get("trajectories", {})
    if fit.get("r2_by_light"):
        def figures_of(scope: str, key: str) -> list:
            return [fit.get(f"{f}_{scope}", {}).get(key) for f in FIT_FIGURES]

        figs += ("<h3>Trajectory fit: R^2 of the light-conditioned lines</h3><p>Noise share: the part of "
                 "the bin centroids' spread that their sampling noise alone gives (bins too small). R^2 without "
                 "noise: the line's R^2 on the rest, what more faces per bin would tend to; low means the "
                 "trajectory bends.</p>") + H.table(
            ["light", "side", "R^2", "noise share", "R^2 without noise"],
            [(*key.split("/", 1), *figures_of("by_light", key)) for key in sorted(fit["r2_by_light"])] +
            [("any (global)", side, *figures_of("global", side)) for side in sorted(fit.get("r2_global", {}))],
            left=2)
    sections.append(("Figures", figs or "<p>No figures (nothing measurable).</p>"))
    rows = []
    for method, per in report["methods"].items():
        for d, v in sorted(per.items(), key=lambda kv: int(kv[0])):
            rows.append((method, int(d), v["pose_error_deg_median"], v.get("achieved_yaw_deg_median"),
                         v.get("achieved_yaw_deg_iqr"), mae_txt, v["psnr_db"], v.get("colour_psnr_db"), v["ssim"],
                         v["identity_top1"], v.get("colour_fault_rate"), v["n"]))
    sections.append(("Methods by delta", "<p>Achieved yaw: the judge's reading of each render minus its "
                     "reading of the same method's delta-0 render; IQR: its spread over faces.</p>" + H.table(
        ["method", "delta", "pose err median (deg)", "achieved yaw median (deg)", "achieved yaw IQR (deg)",
         "estimator MAE (deg)", "PSNR (dB)", "colour PSNR (dB)", "SSIM", "identity top-1", "colour faults", "n"],
        rows, left=1)))
    rows = [(method, lt, v["pose_error_deg_median"], v["psnr_db"], v["ssim"], v["identity_top1"], v["n"])
            for method, per in report["per_light"].items() for lt, v in per.items()]
    light_html = H.table(["method", "light", "pose err median (deg)", "PSNR (dB)", "SSIM", "identity top-1", "n"],
                         rows, left=2)
    if report["light_difference"]:
        light_html += "<h3>Light-conditioned minus light-agnostic</h3>" + H.table(
            ["light", "PSNR (dB)", "pose err median (deg)", "identity top-1"],
            [(lt, v["psnr_db"], v["pose_error_deg_median"], v["identity_top1"])
             for lt, v in report["light_difference"].items()])
    sections.append(("Per light class", light_html))
    e = report["embedding"]
    sections.append(("Embedding quality", "<p>The delta-0 reconstruction G(z) against the source "
                     "preprocessed like the model's input.</p>" + H.table(["", "value"], [
                         ("render used", f"{e.get('method')} at delta {e.get('delta')}"), ("n", e.get("n")),
                         ("PSNR (dB)", e.get("psnr_db")), ("SSIM", e.get("ssim")),
                         (f"embed stage's mean recon PSNR (dB, {e.get('latents_recon_rows', 'all')} rows measured)",
                          e.get("latents_recon_psnr_db_mean"))])))
    cases = "".join(H.figure(png, cap, name) for name, (png, cap) in figures.items() if name.startswith("cases_"))
    if cases:
        sections.append(("Best, median and worst cases", cases))
    earlier = []
    captions = {"mean_faces.png": "Mean face per light class and yaw bin (embed stage)"}
    for name in list(captions) + sorted(f.rsplit("/", 1)[-1] for f in storage.list_files(report_dir, ".png")
                                        if f.rsplit("/", 1)[-1].startswith("contact_sheet_")):
        uri = storage.join(report_dir, name)
        if storage.exists(uri):
            cap = captions.get(name) or \
                f"Contact sheet of method {name[len('contact_sheet_'):-4]}: rows are sources, columns deltas (render stage)"
            earlier.append(H.figure(storage.read_bytes(uri), cap, name))
    if earlier:
        sections.append(("Earlier stages", "".join(earlier)))
    stages = run.get("stages") or {}
    run_html = "".join(f"<h3>{H.esc(name)}</h3>" + H.pre_json({k: v for k, v in st.items()})
                       for name, st in stages.items())
    sections.append(("Run configuration and versions", (run_html or "<p>run.json holds no stages.</p>") +
                     "<h3>evaluate</h3>" + H.pre_json({"config": report["config"], "versions": report["versions"],
                                                       "inputs": report["inputs"]})))
    return H.page(f"headrot report: {report['inputs']['root']}", sections)
