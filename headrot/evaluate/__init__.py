"""Evaluation of a run: metrics, an independent yaw estimator, ground truth, the report's numbers.

    measure    one rotated/ file -> a per-render metrics table (a Ray task; no image leaves it)
    aggregate  metrics tables -> the report dict below (any split of the renders gives the same)
    metrics    PSNR / SSIM;  truth  synthetic ground truth and identity galleries

`headrot evaluate --root ROOT [--data URI]` (headrot.stages.evaluate.run_evaluate, the driver)
writes ROOT/report/report.json and ROOT/report/report.html (one self-contained page, drawn by
headrot.report), plus the figures as PNGs, metrics.parquet (one row per render) and
yaw_estimator.npz (the cached pose estimator).

report.json (all numbers plain JSON; a metric that cannot be measured is null):

    {
      "schema": 1,
      "kind": "synthetic" | "real",            # synthetic: the data root holds truth.parquet
      "summary": {
        "method": str,                         # the method summarised (headrot when rendered)
        "pose_error_deg_median": float|null,   # |estimated yaw of render - (true source yaw + delta)|
        "pose_error_deg_mean": float|null,
        "psnr_db_mean": float|null,            # vs the ground-truth render (synthetic)
        "ssim_mean": float|null,
        "identity_top1": float|null,           # fraction in [0, 1]
        "n_renders": int, "n_sources": int,
        "pose_estimator_mae_deg": float|null,  # the estimator's own held-out error, beside every pose figure
        "embedding_psnr_db": float|null,
        "targets_met": int, "targets_total": int
      },
      "methods": {method: {"<delta>": {        # delta as a string: "-30", "0", "10"
          "n": int, "pose_error_deg_median": float|null, "pose_error_deg_mean": float|null,
          "psnr_db": float|null, "ssim": float|null, "identity_top1": float|null}}},
      "per_light": {method: {"left"|"center"|"right": {same keys, over every delta}}},
      "light_difference": {light: {"psnr_db": headrot - light_agnostic, "pose_error_deg_median": ...}},
      "pose_by_target_yaw": {method: {"0-15"|"15-30"|"30-45"|"45-60"|"60+": {  # |true target yaw|,
          "n": int, "pose_error_deg_median": float|null,                        # turned renders
          "judge_on_truth_deg_median": float|null}}},  # the judge's own error on their ground truths
      "embedding": {"method": str, "delta": int, "n": int,
                    "psnr_db": float|null, "ssim": float|null,  # delta-0 render vs the preprocessed source
                    "latents_recon_psnr_db_mean": float|null,   # what the embed stage recorded,
                    "latents_recon_rows": int},                 # on this many rows (reconstruct_every)
      "pose_estimator": {"kind": "cnn" | "mediapipe" | "skipped",
                         "mae_deg_heldout": float|null, "mae_deg_heldout_blur": float|null,
                         "mae_deg_sources": float|null,   # on the evaluated sources vs truth (synthetic)
                         "cached": bool, "note": str, ...fit details},
      "targets": {name: {"description": str, "value": float|null, "threshold": float|null,
                         "met": bool|null, "detail": str}},
            # pose_error: median pose error <= 5 deg over deltas in [-30, 30]
            # beats_no_move: PSNR vs ground truth above no_move's at every |delta| >= 10
            # light_conditioning: headrot's PSNR (|delta| >= 10) >= light_agnostic's; per light in detail
            # identity: identity top-1 >= 0.90
      "notes": [str],
      "inputs": {"root", "data", "rotated", "rotated_fingerprint"},
      "config": {...EvaluateConfig}, "versions": {...}, "seconds": float,
      "files": {"html": uri, "json": uri, "figures": [uri], "metrics": uri}
    }

Synthetic ground truth (headrot.evaluate.truth): identity i of source s re-rendered at
the source's true yaw + delta in the same light, pitch and roll, preprocessed exactly
like the model's input. Real data has no ground truth: reconstruction PSNR/SSIM only,
and pose error from mediapipe's face mesh when `import mediapipe` works
(pip install 'mediapipe<=0.10.21'), measured as |yaw(render) - yaw(source) - delta|.
"""
