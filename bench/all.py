"""Every benchmark at a stated size, then BENCHMARKS.md from bench/results/*.json.

    python -m bench.all [--quick] [--data DIR] [--only read embed ...] [--report-only]

Each benchmark runs as its own subprocess (its own Ray session, its own peak RSS) and
writes bench/results/<name>.json; bench.read (which only prints) is wrapped here. Sizes
(full / --quick) are chosen so the whole run takes < 15 minutes on an idle 2-core machine:

    read    10,000 / 1,000 images at 64x64
    model   demo + paper presets: thread x batch x layout sweep, one 10-step render
    train   demo (batch 64) + paper (batch 16) generator steps
    embed   320 / 64 images, demo preset (32x32), inversion, 10 steps; 2 alternating rounds of stage and plain
    fit     40,000 / 1,000 latent rows, demo size, 16 files
    render  160 / 8 sources x 7 deltas, demo preset; 2 alternating rounds of stage and plain loop; 1 and 2 actors at 40
    memory  embed at 1,000 vs 10,000 / 200 vs 1,000 images, tiny preset
    evaluate_memory  evaluate at 1x vs 10x the demo's renders (2,016 vs 20,160 / 504 vs 5,040)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from bench import common

ROOT = Path(__file__).resolve().parent.parent
ORDER = ("read", "model", "train", "embed", "fit", "render", "memory", "evaluate_memory")


def _reconstruct_note(x: dict) -> str:
    """The embed table's note on `embed.reconstruct_every` (results older than it lack the entry)."""
    rec = x.get("reconstruct_every")
    if not rec:
        return ""
    best, sampled = rec["seconds_best"], f"every_{rec['every']}th_row"
    return (f" Diagnostic reconstruction on every {rec['every']}th row instead of every row "
            f"(`embed.reconstruct_every`, {rec['images']} images, best of {len(rec['seconds_rounds']['every_row'])}): "
            f"{_f(best['every_row'])} -> {_f(best[sampled])} s, ratio {_f(rec['ratio'])}.")


def commands(quick: bool, data: str) -> dict[str, list[str]]:
    q = ["--quick"] if quick else []
    return {
        "read": ["bench.read", "--data", data, "--n", "1000" if quick else "10000"],
        "model": ["bench.model", *q],
        "train": ["bench.train", *q],
        "embed": ["bench.embed", "--data", data, *q],
        "fit": ["bench.fit", *q],
        "render": ["bench.render", *q],
        "memory": ["bench.memory", "--data", data, *q],
        "evaluate_memory": ["bench.evaluate_memory", *q],
    }


def run_one(name: str, argv: list[str], results: Path, timeout: float) -> dict:
    start = time.perf_counter()
    if name != "read":
        argv = [*argv, "--results", str(results)]
    try:
        out = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True,
                             timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"name": name, "ok": False, "seconds": time.perf_counter() - start, "error": f"timeout {timeout}s"}
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        return {"name": name, "ok": False, "seconds": seconds, "error": out.stderr[-2000:]}
    if name == "read":  # bench.read prints one JSON line and writes nothing
        line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
        common.write_result("read", {**json.loads(line), "target_ratio": None}, results)
    return {"name": name, "ok": True, "seconds": seconds}


# ---------------------------------------------------------------------------
# BENCHMARKS.md


def _f(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _met(value, target, higher: bool = True) -> str:
    if value is None or target is None:
        return "-"
    return "met" if (value >= target if higher else value < target) else "**missed**"


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


HEAD = ["figure", "stage (Ray)", "plain loop", "ratio", "FLOP bound", "plain / bound", "target", "result"]


def report(results: Path, ran: list[dict] | None = None) -> str:
    r = {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}
    machine = next((v["machine"] for v in r.values() if "machine" in v), {})
    lines = ["# Benchmarks", "",
             "Written by `python -m bench.all` (`make bench`) from bench/results/*.json; the notes at",
             "the end come from bench/NOTES.md. Ratios, not absolute times: every",
             "ratio's two sides were measured in the same run on the same machine.", "",
             f"- machine: {machine.get('cpu')}, {machine.get('cores')} cores; torch {machine.get('torch')}, "
             f"ray {machine.get('ray')}, pyarrow {machine.get('pyarrow')}, Python {machine.get('python')}",
             f"- date: {machine.get('date')}; 1-minute load average at the end: {machine.get('load_avg_1m')}",
             f"- quick mode: {any(v.get('quick') for v in r.values())}", ""]
    if ran:
        lines += ["Run: " + ", ".join(f"{x['name']} {x['seconds']:.0f}s{'' if x['ok'] else ' FAILED'}" for x in ran), ""]
        for x in ran:
            if not x["ok"]:
                lines += [f"- **{x['name']} failed**: `{x['error'].strip().splitlines()[-1] if x['error'].strip() else ''}`"]
        lines.append("")
    missed: list[str] = []

    def table(title: str, rows: list[list], note: str = "") -> None:
        lines.extend([f"## {title}", ""] + ([note, ""] if note else []) + [_row(HEAD), _row(["---"] * len(HEAD))])
        for row in rows:
            lines.append(_row(row))
            if "**missed**" in row:
                missed.append(f"- {title}, {row[0]}: missed ({row[-2]}); see the notes below.")
        lines.append("")

    if "read" in r:
        x = r["read"]
        table(f"Read + preprocess ({x['n']} images, {x['size']}x{x['size']})",
              [["images/s", _f(x["ray_images_per_s"]), _f(x["plain_images_per_s"]), _f(x["ratio"]), "-", "-",
                ">= 0.7 of plain", _met(x["ratio"], 0.7)]],
              "The Ray stage decodes with tasks on both cores; the plain loop is one process, as the target states.")
    if "embed" in r:
        x = r["embed"]
        table(f"Embed ({x['images']} images, {x['preset']}, {x['method']} {x['steps']} steps = "
              f"{_f(x['calls_per_image'])} calls/image, batch {x['batch_size']})",
              [["images/s", _f(x["ray_images_per_s"]), _f(x["plain_images_per_s"]), _f(x["ratio"]),
                _f(x["flop_bound_images_per_s"]), _f(x["plain_of_flop_bound"]), ">= 0.85 of plain",
                _met(x["ratio"], 0.85)]],
              f"Plain loop: torch threads {x.get('plain_torch_threads')} (probe {x.get('thread_probe_images_per_s')}); "
              f"Ray worker: {x.get('ray_worker')}. Warm-up {_f(x['warmup_s'])} s excluded. "
              f"Best of {x.get('rounds', 1)} alternating rounds per side (stage "
              f"{', '.join(_f(v) for v in x.get('stage_rounds_images_per_s', []))}; plain "
              f"{', '.join(_f(v) for v in x.get('plain_rounds_images_per_s', []))} images/s); model busy fraction "
              f"of the stage's actor {_f(x.get('model_busy_fraction'))}. "
              f"float16 latents: recon error {_f(x['float16']['recon_error_float32'])} -> "
              f"{_f(x['float16']['recon_error_float16'])} (mean |x - G(z)|, {x['float16'].get('model', 'random generator')}), "
              f"latent bytes/image {x['float16']['latent_bytes_per_image']}." + _reconstruct_note(x))
    if "fit" in r:
        x = r["fit"]
        table(f"Fit ({x['rows']} rows, {_f(x['mb'])} MB in {x['files']} files)",
              [["MB/s", _f(x["ray_mb_per_s"]), _f(x["read_mb_per_s"]) + " (pyarrow read)", _f(x["ratio"]), "-", "-",
                ">= 0.5 of the read", _met(x["ratio"], 0.5)],
               ["rows/s", _f(x["ray_rows_per_s"]), _f(x["rows"] / x["plain"]["seconds"]) + " (plain fit)",
                _f(x["ratio_to_plain_fit"]), "-", "-", "-", "-"]],
              f"Read share of the plain fit: {_f(x['plain_read_share'])}.")
    if "render" in r:
        x = r["render"]
        scaling = x.get("scaling", x["stage"])
        table(f"Render ({x['sources']} sources x {len(x['deltas'])} deltas = {x['renders']} renders, {x['preset']}, "
              f"{x['steps']} steps, batch {x['batch_size']})",
              [["images/s", _f(x["ray_images_per_s"]), _f(x["plain_images_per_s"]), _f(x["ratio"]),
                _f(x["flop_bound_images_per_s"]), _f(x["plain_of_flop_bound"]), ">= 0.9 of plain", _met(x["ratio"], 0.9)],
               ["plain / FLOP bound", "-", _f(x["plain_images_per_s"]), "-", _f(x["flop_bound_images_per_s"]),
                _f(x["plain_of_flop_bound"]), ">= 0.5 of bound", _met(x["plain_of_flop_bound"], 0.5)]] +
              [[f"images/s, {k.replace('_', ' ')} ({x.get('scaling_sources', x['sources'])} sources)",
                _f(v["images_per_s"]), "-", "-", "-", "-", "-", "-"] for k, v in scaling.items()],
              f"Best of {x.get('rounds', 1)} alternating rounds per side (stage "
              f"{', '.join(_f(v) for v in x.get('stage_rounds_images_per_s', []))}; plain "
              f"{', '.join(_f(v) for v in x.get('plain_rounds_images_per_s', []))} images/s); model busy fraction of "
              f"the stage's actor {_f(x.get('model_busy_fraction'))}. Fixed start-up of a render run (a run of 2 renders): "
              f"{_f(x.get('startup_s'))} s; the stage net of it: {_f(x.get('ratio_net_of_startup'))} of the plain loop. "
              f"Plain loop torch threads {x.get('plain_torch_threads')}; model part alone "
              f"{_f(x['plain_model_only_of_flop_bound'])} of the bound; 2 actors / 1 actor: {_f(x['scaling_2_over_1'])}; "
              f"PNG encodes/s on one core: {_f(x['png_encodes_per_s_one_core'])}.")
    if "model" in r:
        x = r["model"]
        rows = []
        for p in common.PRESETS:
            if p not in x:
                continue
            m = x[p]
            rows.append([f"{p}: render images/s/core (threads {m['best'].get('threads')}, batch {m['best']['batch']}, "
                         f"channels_last {m['best']['channels_last']})", "-", _f(m["render_images_per_s_per_core"]), "-",
                         _f(m["render_flop_bound"]), _f(m["render_of_flop_bound"]),
                         ">= 0.5 of bound" if p == "paper" else "-",
                         _met(m["render_of_flop_bound"], 0.5) if p == "paper" else "-"])
            rows.append([f"{p}: embed images/s/core ({_f(m['embed_calls_per_image'])} calls)", "-",
                         _f(m["embed_images_per_s_per_core"]), "-", _f(m["embed_flop_bound"]),
                         _f(m["embed_images_per_s"] / m["embed_flop_bound"]), "-", "-"])
        table(f"Model on this CPU (matmul {_f(x['matmul_gflop_per_s'])} GFLOP/s; "
              f"{_f(x.get('matmul_gflop_per_s_after'))} after)", rows)
    if "train" in r:
        x = r["train"]
        table(f"Training step (matmul {_f(x['matmul_gflop_per_s'])} GFLOP/s, 3 x forward FLOPs per sample)",
              [[f"{p}: samples/s (batch {x[p]['batch']}; per core {_f(x[p]['samples_per_s_per_core'])})", "-",
                _f(x[p]["samples_per_s"]), "-", _f(x[p]["flop_bound_samples_per_s"]), _f(x[p]["of_flop_bound"]), "-", "-"]
               for p in common.PRESETS if p in x])
    if "memory" in r:
        x = r["memory"]
        lines += memory_table(f"embed, {x['preset']} preset, {x['sizes'][0]} vs {x['sizes'][1]} images",
                              x, [str(n) for n in x["sizes"]], ("driver_peak_mb", "worker_max_peak_mb",
                                                                 "actor_max_peak_mb"), "embed", missed) + [""]
    if "evaluate_memory" in r:
        x = r["evaluate_memory"]
        a, b = x["runs"][0], x["runs"][-1]
        sizes = [f"{a['renders']:,}", f"{b['renders']:,}"]
        lines += memory_table(f"evaluate, {sizes[0]} vs {sizes[1]} renders: 1x and 10x the demo's", x, sizes,
                              ("driver_peak_mb",), "evaluate", missed, shown=("worker_max_peak_mb",))
        lines += ["", f"One measure task per rotated shard ({_f(a['renders_per_s'])} and {_f(b['renders_per_s'])} "
                  "renders/s here); the driver holds the per-render metrics rows, never an image. "
                  "`python -m bench.evaluate_memory`.", ""]
    if "light" in r:
        x = r["light"]
        conf = x["confusion"]["rows_truth_cols_pred"]
        lines += [f"## Light labels ({x['n']} synthetic faces, no ground truth used)", "",
                  _row(["figure", "value", "target", "result"]), _row(["---"] * 4),
                  _row(["accuracy, 3 classes", _f(x["accuracy"]), ">= 0.90", _met(x["accuracy"], 0.90)]),
                  _row([f"accuracy more than {x.get('margin', 5)} deg from the class thresholds",
                        _f(x["accuracy_away_from_thresholds"]), "-", "-"]),
                  _row(["the physical heuristic alone", _f(x.get("heuristic_accuracy")), "-", "-"]),
                  "", f"Confusion (rows truth, columns predicted; left, center, right): {conf}. "
                  "`python -m bench.light --n 5000`.", ""]
    if "quality" in r:
        x = r["quality"]
        g = x["generator"]
        lines += [f"## Demo model quality ({x['n']} held-out synthetic faces, seed {x['held_out_seed']}, "
                  f"{g['image_size']}x{g['image_size']}, epoch {g.get('epoch')}, step {g.get('step')})", "",
                  _row(["embedding (10 DDIM steps)", "reconstruction PSNR (dB)", "images/s (with the decode)",
                        "target", "result"]),
                  _row(["---"] * 5),
                  _row(["inversion", _f(x["inversion"]["psnr_db_mean"]), _f(x["inversion"].get("images_per_s")),
                        ">= 20", _met(x["inversion"]["psnr_db_mean"], 20)]),
                  _row([f"refine ({x['refine']['steps']} Adam steps from inversion, {x['refine']['n']} images)",
                        f"{_f(x['refine']['psnr_db_start'])} -> {_f(x['refine']['psnr_db_mean'])}",
                        _f(x["refine"].get("images_per_s")),
                        "better than its start", _met(x["refine"]["psnr_db_mean"], x["refine"]["psnr_db_start"] + 1e-9)]),
                  _row([f"network (the paper's embedder{_embedder_trained(x['network'])})",
                        _f(x["network"]["psnr_db_mean"]), _f(x["network"].get("images_per_s")), ">= 22",
                        _met(x["network"]["psnr_db_mean"], 22)]),
                  "", "![samples](bench/results/demo_samples.png)", "",
                  "![originals above their inversion reconstructions](bench/results/demo_inversion.png)", "",
                  "`python -m bench.quality`.", ""]
    lines += latent_section(r)
    lines += gpu_section(r)
    lines += projection(r)
    lines += ["## Limits and next steps", ""] + (missed or ["- Every target was met in this run."]) + [""]
    notes = Path(__file__).with_name("NOTES.md")
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    return "\n".join(lines)


def _embedder_trained(network: dict) -> str:
    """', trained N epochs (S steps)' for the quality table's network row, when it says."""
    e = network.get("embedder") or {}
    return f", trained {e['epoch']} epochs ({e['step']} steps)" if e.get("epoch") is not None else ""


def latent_section(r: dict) -> list[str]:
    """The latent-quality yardstick (`python -m bench.latent`), one table per generator benchmarked:
    every file bench/results/latent*.json (latent.json: the shipped demo model)."""
    names = sorted(k for k in r if k.startswith("latent"))
    out: list[str] = generator_comparison([r[n] for n in names])
    for name in names:
        x = r[name]
        judge = x.get("judge") or {}
        out += [f"## Latent quality: does the generator turn heads? ({x['generator']}, {x['sources']} sources)", "",
                f"Judge: pose CNN seed {judge.get('seed')}, held-out MAE {judge.get('mae_deg_heldout')} deg; "
                + (f"the method's labeller: seed {x['labeller'].get('seed')}{_steering(x)}; " if x.get("labeller") else "")
                + f"calibration's reader: {(x.get('reader') or {}).get('seed', 'none')}. Slope: achieved (judged) yaw change "
                "on the intended delta (target 1.0 +- 0.1); IQR at |delta| = 20: per-face spread (target <= 5); "
                "PSNR gain: vs no_move at each |delta| >= 10, the worst (target > 0); identity top-1 (target >= 0.9); "
                "colour faults: share of renders at |delta| >= 20 with over 3% of their pixels in colours their source "
                "lacks (blind to -colour renders mapped onto their source by the transport map); colour PSNR: PSNR "
                "of 4x4 block mean colours against the ground truth at |delta| >= 20 ('-': recorded before either "
                "was measured).",
                "",
                _row(["method", "slope", "IQR at 20 (deg)", "pose error median (deg)", "worst PSNR gain (dB)",
                      "identity top-1", "colour faults at +-20/30", "colour PSNR at +-20/30 (dB)", "decodes / render"]),
                _row(["---"] * 9)]
        costs = x.get("decodes_per_render") or {}
        for method, v in x["methods"].items():
            gains = list((v.get("psnr_gain_db_by_delta") or {}).values())
            out.append(_row([method, _f(v["slope"]), _f(v["iqr_at_20_deg"]), _f(v["pose_error_deg_median"]),
                             _f(min(gains)) if gains else "-", _f(v["identity_top1"]),
                             _f(v.get("colour_fault_rate_far")), _f(v.get("colour_psnr_db_far")),
                             _f(costs.get(method))]))
        out += ["", f"`{x.get('command', 'python -m bench.latent')}` ({x.get('seconds')} s; "
                + (x.get("note") or "complete stages of its root are reused, so after `make demo` it only reads "
                   "the demo's evaluation") + ").", ""]
    return out


def _steering(x: dict) -> str:
    """The steering networks the local steps followed with the labeller, when there were any."""
    seeds = (x.get("steerers") or {}).get("seeds")
    return f", steering with seeds {', '.join(str(s) for s in seeds)} (their mean reading)" if seeds else ""


def gpu_section(r: dict) -> list[str]:
    """Each run on a lent GPU (`python -m bench.gpu run`, bench/results/gpu*.json): training of a
    network, and the render and embed stages' plain loops with it."""
    out: list[str] = []
    for name in sorted(k for k in r if k.startswith("gpu")):
        out += _gpu_run(r[name])
    return out


def _gpu_run(x: dict) -> list[str]:
    card, t, e, data = x["card"], x.get("train") or {}, x.get("eager") or {}, x.get("data") or {}
    st = x["settings"]

    def pct(m: dict | None, key: str) -> str:
        return f"{100 * m[key]:.1f}%" if m and m.get(key) is not None else "-"

    rows = [["train step, eager (bf16, channels_last)", f"{_f(e.get('samples_per_s'))} samples/s",
             pct(e.get("mfu"), "of_spec_peak"), pct(e.get("mfu"), "of_measured_matmul")],
            ["train step, torch.compile (same)", f"{_f(t.get('samples_per_s_steady'))} samples/s",
             pct(t.get("mfu"), "of_spec_peak"), pct(t.get("mfu"), "of_measured_matmul")]]
    for name, key, unit in (("render", "render", "renders/s"), ("embed (inversion)", "embed", "images/s")):
        v = x.get(key)
        if v:
            rows.append([f"{name}, plain loop, model part only ({_f(v['calls_per_image'])} calls each, eager bf16)",
                         f"{_f(v['model_only_images_per_s'])} {unit} ({_f(v['images_per_s'])} end to end)",
                         pct(v.get("mfu_model_only"), "of_spec_peak"), pct(v.get("mfu_model_only"), "of_measured_matmul")])
    return [f"## On a GPU: the {st['preset']} network ({card['name']}, {x.get('date')})", "",
            f"One lease: {card['name']}, {card.get('memory_gib')} GiB, torch {card['torch']}, {card['cpus']} CPU cores. "
            f"MFU counts the network's convolution and matmul FLOPs (3x the forward's {st['forward_flops_per_image'] / 1e9:.2f} "
            f"GFLOP per training sample) against the spec's dense bf16 peak ({_f((card.get('spec_bf16_flops') or math.nan) / 1e12)} "
            f"TFLOP/s) and against an 8192^3 bf16 matmul measured in the same run ({_f(card['bf16_matmul_flops'] / 1e12)} TFLOP/s).",
            "", _row(["what", "rate", "MFU (spec peak)", "of measured matmul"]), _row(["---"] * 4),
            *[_row(row) for row in rows], "",
            f"- data: {data.get('images', 0):,} synthetic faces ({data.get('identities', 0):,} identities x 10) at "
            f"{data.get('size')}x{data.get('size')}, rendered by {data.get('processes')} processes at "
            f"{_f(data.get('images_per_s'))} images/s beside the compile.",
            f"- training: batch {st['batch']}, AdamW lr {st['lr']:g}, P2 gamma {st['p2_gamma']:g}, EMA {st['ema_decay']:g}; "
            f"{t.get('steps', 0):,} steps ({_f(t.get('epochs'))} epochs) in {_f(t.get('seconds'))} s after a "
            f"{_f((x.get('compile') or {}).get('warmup_s'))} s compile; loss {_f(t.get('final_loss'))} at the end; peak "
            f"{_f(t.get('peak_memory_gib'))} GiB. torch.compile over eager: "
            f"{_f((t.get('samples_per_s_steady') or 0) / (e.get('samples_per_s') or 1))}x.",
            *([] if not x.get("figures") else
              ["", f"![samples of the EMA weights, 10 DDIM steps]({x['figures']['samples']})", "",
               f"![loss]({x['figures']['loss']})"]),
            "", f"`{x.get('command')}`", ""]


def memory_table(title: str, x: dict, sizes: list[str], targeted: tuple[str, ...], stage: str,
                 missed: list[str], shown: tuple[str, ...] = ()) -> list[str]:
    """Peak RSS at the two sizes of a memory benchmark: `targeted` keys must grow < 10%, `shown`
    keys are reported only; a missed target is added to `missed`."""
    a, b = x["runs"][0], x["runs"][-1]
    out = [f"## Memory ({title})", "", _row(["peak RSS (MB)", *sizes, "growth", "target", "result"]),
           _row(["---"] * 6)]
    for k in (*targeted, *shown):
        g = x["growth"].get(k)
        res = _met(None if g is None else abs(g - 1), 0.10, higher=False) if k in targeted else "-"
        out.append(_row([k, _f(a.get(k)), _f(b.get(k)), _f(g), "< 10%" if k in targeted else "-", res]))
        if res == "**missed**":
            missed.append(f"- Memory, {stage} {k}: grew {_f(g)}x; see the notes below.")
    return out


def generator_comparison(results: list[dict]) -> list[str]:
    """One row per generator benchmarked: its default method's figures and its sample quality."""
    if not results:
        return []
    out = ["## Generators compared by the latent benchmark", "",
           "Each generator's default method (the demo's `evaluate.primary`) on the demo's 32 test faces; sample FD: "
           "Frechet distance of the judge's conv features, 600 samples against the data's 1,200 images (floor: two "
           "halves of the data). Colour faults: the share of renders at |delta| >= 20 with over 3% of their "
           "pixels in colours their source lacks (the evaluation's; true turns have none; blind to renders mapped onto "
           "their source by the transport map); colour PSNR: 4x4 block mean colours against the ground truth at "
           "|delta| >= 20 ('-': recorded before it "
           "existed). A new demo model ships only when it beats the shipped one here. The first row is "
           "the shipped pair as the demo runs it (its yaw-cal-colour draws with the yaw-conditioned generator: "
           "the sample FD and embedding PSNR are that generator's). The other yaw-conditioned rows are candidate "
           "checkpoints judged outside the pipeline (`bench.yaw_conditioned judge --record`, 3 calibration "
           "rounds where the demo makes 4); their faces too are inverted under their labelled yaw.", "",
           _row(["generator", "method", "slope", "IQR at 20 (deg)", "pose error median (deg)", "worst PSNR gain (dB)",
                 "identity top-1", "colour faults at +-20/30", "colour PSNR at +-20/30 (dB)", "sample FD (floor)",
                 "embedding PSNR (dB)"]),
           _row(["---"] * 11)]
    for x in results:
        method = x.get("primary") or next(iter(x["methods"]))
        v = x["methods"].get(method, {})
        gains = list((v.get("psnr_gain_db_by_delta") or {}).values())
        fd = f"{_f(x.get('sample_fd'))} ({_f(x.get('sample_fd_floor'))})" if x.get("sample_fd") is not None else "-"
        out.append(_row([x["generator"], method, _f(v.get("slope")), _f(v.get("iqr_at_20_deg")),
                         _f(v.get("pose_error_deg_median")), _f(min(gains)) if gains else "-",
                         _f(v.get("identity_top1")), _f(v.get("colour_fault_rate_far")),
                         _f(v.get("colour_psnr_db_far")), fd,
                         _f(x.get("embedding_psnr_db"))]))
    return out + [""]


def projection(r: dict) -> list[str]:
    """On-paper scaling to 8 and 64 GPUs from this run's CPU costs and a stated GPU rate."""
    gpu_tflops = 200.0  # assumed effective bf16 rate per GPU (H100: ~1,000 dense peak; ~20% MFU)
    paper = common.model_flops("paper") if "model" not in r else r["model"]["paper"]["gflop_per_call"] * 1e9 \
        if "paper" in r["model"] else common.model_flops("paper")
    embed_calls = r.get("embed", {}).get("calls_per_image", 21.0)
    decode = r.get("read", {}).get("plain_images_per_s") or 1100.0
    png = r.get("render", {}).get("png_encodes_per_s_one_core") or 2200.0
    render_gpu = gpu_tflops * 1e12 / (10 * paper)
    embed_gpu = gpu_tflops * 1e12 / (embed_calls * paper)
    rate = f"{gpu_tflops:.0f} TFLOP/s effective per GPU (stated, not measured)"
    measured = r.get("gpu") or {}
    if measured.get("render") and measured.get("embed"):
        # The lease's own figures (model part of the stages' plain loops, eager bf16) replace the guess.
        render_gpu = measured["render"]["model_only_images_per_s"]
        embed_gpu = measured["embed"]["model_only_images_per_s"] * measured["embed"]["calls_per_image"] / embed_calls
        rate = (f"the GPU rates measured on one {measured['card']['name']} (bench.gpu, eager bf16: "
                f"{render_gpu:,.0f} renders/s, {measured['embed']['model_only_images_per_s']:,.0f} inversions/s at "
                f"{_f(measured['embed']['calls_per_image'])} calls, scaled to {_f(embed_calls)} calls here)")
    out = ["## Scaling projection (on paper)", "",
           f"Assumptions: paper preset ({paper / 1e9:.2f} GFLOP/call), {rate}, CPU costs measured here: JPEG decode {decode:,.0f} images/s/core "
           f"(read plain loop), PNG encode {png:,.0f} renders/s/core at the render bench's size (taken as 4x the cost at 64x64).", "",
           _row(["GPUs", "render: renders/s (GPU)", "cores for PNG", "embed: images/s (GPU)", "cores for decode",
                 "first bottleneck"]), _row(["---"] * 6)]
    for gpus in (1, 8, 64):
        rr, ee = render_gpu * gpus, embed_gpu * gpus
        png_cores, dec_cores = rr / (png / 4), ee / decode
        neck = (f"CPU PNG encoding: {png_cores / gpus:.1f} cores per GPU beside the GPUs"
                if png_cores / gpus > 1 else "GPU compute")
        if gpus == 64:
            neck += "; the single driver's Ray Data scheduling and S3 write bandwidth " \
                    f"(~{rr * 8e3 / 1e9:.1f} GB/s of ~8 kB PNGs) next"
        out.append(_row([gpus, f"{rr:,.0f}", f"{png_cores:,.1f}", f"{ee:,.0f}", f"{dec_cores:,.1f}", neck]))
    one = r.get("render", {}).get("scaling_2_over_1")
    out += ["", f"Measured on this machine: render with 2 actors / 1 actor = {_f(one)} (CPU actors share the "
                "same 2 cores, so ~1 is expected; on GPUs one actor per GPU).", ""]
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--data", default=None, help="CelebA-layout folder with >= 10,000 images (default: synthesise)")
    p.add_argument("--only", nargs="+", choices=ORDER, default=list(ORDER))
    p.add_argument("--results", default=str(common.RESULTS))
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per benchmark")
    p.add_argument("--report-only", action="store_true", help="only rewrite BENCHMARKS.md from the JSON files")
    args = p.parse_args(argv)
    results = Path(args.results)
    ran = []
    if not args.report_only:
        data = common.synth_data(1_000 if args.quick else 10_000, args.data)
        cmds = commands(args.quick, data)
        for name in args.only:
            print(f"bench.all: {name} ...", flush=True)
            x = run_one(name, cmds[name], results, args.timeout)
            print(f"bench.all: {name} {'ok' if x['ok'] else 'FAILED'} in {x['seconds']:.0f}s", flush=True)
            if not x["ok"]:
                print(x["error"], file=sys.stderr)
            ran.append(x)
    text = report(results, ran)
    Path(args.out).write_text(text)
    print(text)
    if any(not x["ok"] for x in ran):
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    main()
