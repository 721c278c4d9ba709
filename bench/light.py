"""Light labeler accuracy on a synthetic CelebA set: `python -m bench.light [--n 5000]`.

Generates (or reuses, when its truth.parquet has n rows) a synthetic set with
headrot.synth.writer, then runs exactly the stage's path: decode_face at S x S
(the stage's light_image_size, 32) from the written JPEGs, the integer
landmarks of list_landmarks_align_celeba.txt mapped with landmarks_in_crop,
yaw from yaw_from_landmarks, light_features, LightLabeler. Prints JSON:
n, accuracy, accuracy away from the class thresholds (|azimuth| not within
--margin degrees of +-20), per-class recall, confusion matrix (rows truth,
columns predicted, in LIGHT_CLASSES order), seconds (features, labeler).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def load_set(data_dir: str, size: int):
    """(images [N,S,S,3], landmarks [N,10] aligned-image ints, azimuth [N], truth labels [N])."""
    from headrot.data.images import decode_face
    from headrot.synth.writer import read_truth

    truth = read_truth(data_dir).to_pydict()
    marks = {}
    with open(os.path.join(data_dir, "list_landmarks_align_celeba.txt")) as fh:
        lines = fh.read().splitlines()[2:]
    for line in lines:
        parts = line.split()
        if parts:
            marks[parts[0]] = [float(v) for v in parts[1:11]]
    ids = truth["image_id"]
    images = np.zeros((len(ids), size, size, 3), np.uint8)
    for i, image_id in enumerate(ids):
        with open(os.path.join(data_dir, "img_align_celeba", image_id), "rb") as fh:
            images[i] = decode_face(fh.read(), size)
    landmarks = np.array([marks[i] for i in ids], dtype=np.float32)
    return images, landmarks, np.asarray(truth["light_azimuth"]), np.asarray(truth["light"], dtype=object)


def evaluate(data_dir: str, size: int = 32, margin: float = 5.0, seed: int = 0) -> dict:
    from headrot.labels import light as lightlib
    from headrot.labels.yaw import yaw_from_landmarks
    from headrot.stages.embed import landmarks_in_crop
    from headrot.synth.writer import LIGHT_RIGHT_ABOVE

    images, landmarks, azimuth, truth = load_set(data_dir, size)
    t0 = time.perf_counter()
    yaw = yaw_from_landmarks(landmarks)
    feats = lightlib.light_features(images, landmarks_in_crop(landmarks, size), yaw)
    t1 = time.perf_counter()
    labeler = lightlib.LightLabeler(seed=seed).fit(feats, yaw, None)
    labels, score, source = labeler.predict(feats, yaw, None)
    t2 = time.perf_counter()
    heur, _ = lightlib.heuristic_labels(feats, labeler.calibration_)
    classes = list(lightlib.LIGHT_CLASSES)
    ok = labels == truth
    away = np.abs(np.abs(azimuth) - LIGHT_RIGHT_ABOVE) > margin
    conf = [[int(np.sum((truth == t) & (labels == p))) for p in classes] for t in classes]
    cal = labeler.calibration_
    return {
        "n": int(len(truth)),
        "image_size": size,
        "accuracy": round(float(ok.mean()), 4),
        "accuracy_away_from_thresholds": round(float(ok[away].mean()), 4),
        "away_margin_deg": margin,
        "n_away": int(away.sum()),
        "heuristic_accuracy": round(float(np.mean(heur == truth)), 4),
        "recall": {c: round(float(ok[truth == c].mean()), 4) if np.any(truth == c) else None for c in classes},
        "confusion": {"classes": classes, "rows_truth_cols_pred": conf},
        "sources": {s: int(np.sum(source == s)) for s in sorted(set(source))},
        "seeds": labeler.n_seeds_,
        "calibration": {"azimuth_offset_deg": round(cal.offset_deg, 5),
                        "asymmetry_yaw_slope": round(lightlib.asymmetry_yaw_slope(feats[:, lightlib.ASYM_COL], yaw), 6),
                        "center_half_width": cal.center_half_width, "fitted": cal.fitted},
        "seconds": {"features": round(t1 - t0, 3), "labeler": round(t2 - t1, 3)},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=32, help="light_image_size (the stage's default: 32)")
    ap.add_argument("--margin", type=float, default=5.0, help="degrees around +-20 left out of 'away'")
    ap.add_argument("--data", default=None, help="synthetic set folder (default runs/bench-light/synth-n<N>-seed<S>)")
    args = ap.parse_args(argv)
    data = args.data or os.path.join("runs", "bench-light", f"synth-n{args.n}-seed{args.seed}")
    generated = None
    if not os.path.exists(os.path.join(data, "truth.parquet")):
        from headrot.synth.writer import write_synthetic_celeba

        summary = write_synthetic_celeba(data, args.n, seed=args.seed)
        generated = summary["seconds"]
    result = {"data": data, "generated_seconds": generated, **evaluate(data, args.size, args.margin, args.seed)}
    from bench.common import write_result

    write_result("light", {**result, "target_accuracy": 0.90})
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
