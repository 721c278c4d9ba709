"""`headrot run`: the whole job with one config file.

    synth (when no --data) -> generator (given, shipped demo model, or trained)
    -> embed -> samples (when fit.sources has samples, or a -cal or local method needs its networks)
    -> fit -> render -> evaluate

Every stage checks its own `_SUCCESS` marker and input fingerprint, so a second
run with the same config does no work, and a run interrupted anywhere resumes
where it stopped.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from headrot import runs, storage
from headrot.config import from_mapping, to_mapping
from headrot.layout import RunLayout

log = logging.getLogger(__name__)

# The demo generator shipped with the package (see configs/demo-generator.yaml for how it was made).
DEMO_GENERATOR = "demo_generator.pt"
# The demo generator fine-tuned with a yaw input (bench.yaw_conditioned): what the yaw methods draw with.
DEMO_YAW_GENERATOR = "demo_generator_yaw.pt"
ALL_METHODS = ("headrot", "no_move", "light_agnostic", "single_direction", "centroid_path")


# ---------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class PipelineConfig:
    out: str = "runs/demo"                      # run root: folder or s3://bucket/prefix
    data: str | None = None                     # CelebA-layout root; None: synthesize one into <out>/data
    synth: dict[str, Any] = field(default_factory=lambda: {"n": 1200, "seed": 0})  # when data is None
    generator: str | None = None                # generator checkpoint; None: see resolve_generator
    train_from_scratch: bool = False            # train the generator even if the shipped one fits
    train: dict[str, Any] = field(default_factory=dict)     # TrainConfig keys for the generator
    train_embedder: dict[str, Any] = field(default_factory=dict)  # TrainConfig keys, when embed.method needs it
    embed: dict[str, Any] = field(default_factory=dict)     # EmbedConfig keys, less data/out
    samples: dict[str, Any] = field(default_factory=dict)   # SamplesConfig keys, less root (fit.sources: samples)
    fit: dict[str, Any] = field(default_factory=dict)       # FitConfig keys, less root
    render: dict[str, Any] = field(default_factory=lambda: {"methods": list(ALL_METHODS)})
    evaluate: dict[str, Any] = field(default_factory=dict)  # EvaluateConfig keys, less root/data
    skip_evaluate: bool = False


def needs_samples_stage(stages: dict[str, Any]) -> bool:
    """The samples stage runs for the fit's samples lines, or for the networks it trains: the
    labeller (local moves) and calibration's reader (-cal)."""
    return "samples" in stages["fit"].sources or stages["render"].needs_labeller()


def stage_configs(config: PipelineConfig, data: str, generator: str | None) -> dict[str, Any]:
    """Every stage's config, built (and so validated) before any work starts."""
    from headrot.stages.embed import EmbedConfig
    from headrot.stages.fit import FitConfig
    from headrot.stages.render import RenderConfig
    from headrot.stages.samples import SamplesConfig
    from headrot.train.config import TrainConfig

    out = config.out
    built = {
        "train": from_mapping(TrainConfig, {"kind": "generator", **config.train}, "config.train"),
        "train_embedder": from_mapping(TrainConfig, {**config.train_embedder, "kind": "embedder",
                                                     "generator": generator}, "config.train_embedder"),
        "embed": from_mapping(EmbedConfig, {**config.embed, "data": data, "out": out,
                                            "generator": generator}, "config.embed"),
        "samples": from_mapping(SamplesConfig, {**config.samples, "root": out, "generator": generator},
                                "config.samples"),
        "fit": from_mapping(FitConfig, {**config.fit, "root": out}, "config.fit"),
        "render": from_mapping(RenderConfig, {**config.render, "root": out, "generator": generator,
                                              "data": data}, "config.render"),
    }
    if "samples" in built["fit"].sources and built["samples"].n == 0:
        raise ValueError("config.samples: n is 0 (the networks alone) but fit.sources lists samples: give "
                         "samples.n >= 10, or drop samples from fit.sources")
    evaluate = _evaluate_module()
    if evaluate is not None and not config.skip_evaluate:
        built["evaluate"] = from_mapping(evaluate.EvaluateConfig,
                                         {**config.evaluate, "root": out, "data": data},
                                         "config.evaluate")
    return built


def _evaluate_module():
    import importlib

    try:
        return importlib.import_module("headrot.stages.evaluate")
    except ModuleNotFoundError as exc:  # the evaluation stage is optional in a build
        if exc.name != "headrot.stages.evaluate":
            raise
        return None


# ---------------------------------------------------------------------------
# Inputs: data and generator


def ensure_data(config: PipelineConfig) -> str:
    """The data root: the user's, or a synthetic CelebA written once into <out>/data."""
    if config.data:
        return config.data
    from headrot.synth.writer import write_synthetic_celeba

    data = RunLayout(config.out).data
    done = storage.completion(data)
    wanted = runs.fingerprint(config.synth)
    if done is not None and done.get("fingerprint") == wanted:
        log.info("synth: %s is complete; nothing to do", runs.redact_uri(data))
        return data
    if done is not None:
        raise ValueError(f"{runs.redact_uri(data)} holds a synthetic set made with other settings; "
                         "use a new --out root or delete that folder")
    log.info("synth: writing a synthetic CelebA (%s) into %s", config.synth, runs.redact_uri(data))
    summary = write_synthetic_celeba(data, **config.synth)
    storage.mark_complete(data, {**summary, "fingerprint": wanted})
    return data


def resolve_generator(config: PipelineConfig, data: str, train_config) -> str:
    """The generator checkpoint to use, in this order: --generator; one already in the run
    root; the shipped demo model (synthetic data at its size, unless train_from_scratch);
    otherwise train one with Ray Train."""
    if config.generator:
        return config.generator
    target = RunLayout(config.out).model("generator")
    if storage.exists(target):
        return target
    shipped = resources.files("headrot") / "assets" / DEMO_GENERATOR
    if not config.train_from_scratch and not config.data and shipped.is_file():
        # Copied into the run root so the run is self-contained and its fingerprint covers it.
        storage.write_bytes(target, shipped.read_bytes())
        log.info("generator: using the shipped demo model (%s)", DEMO_GENERATOR)
        return target
    from headrot.train.driver import train

    log.info("generator: none found; training one with Ray Train (%s)", train_config.preset)
    train(train_config, data, config.out)
    return target


def resolve_yaw_generator(config: PipelineConfig, render) -> None:
    """The yaw methods' generator, before any stage runs: render.yaw_generator, one already in the
    run root, or the shipped demo one (on the synthetic demo data); else a clear error now rather
    than after the embed stage."""
    if not render.has_yaw_methods():
        return
    target = render.yaw_generator_uri()
    if storage.exists(target):
        return
    shipped = resources.files("headrot") / "assets" / DEMO_YAW_GENERATOR
    # Also under --train-from-scratch: the yaw methods invert and draw with this network alone, so a
    # freshly trained plain generator does not change what they need (`headrot train` does not
    # train a yaw-conditioned one; bench.yaw_conditioned does).
    if render.yaw_generator is None and not config.data and shipped.is_file():
        storage.write_bytes(target, shipped.read_bytes())
        log.info("yaw generator: using the shipped demo model (%s)%s", DEMO_YAW_GENERATOR,
                 "; --train-from-scratch trains the plain generator only" if config.train_from_scratch else "")
        return
    raise ValueError(f"render methods {[m for m in render.methods if m.startswith('yaw')]} need a yaw-conditioned "
                     f"generator and {runs.redact_uri(target)} does not exist: give render.yaw_generator (README, "
                     "Models: a yaw-conditioned generator), or leave the yaw methods out")


def ensure_embedder(config: PipelineConfig, data: str, stages: dict[str, Any]) -> None:
    """Train the paper's embedder network when the embed method needs one and none is given."""
    embed = stages["embed"]
    needs = embed.method == "network" or (embed.method == "refine" and embed.refine_from == "network")
    target = RunLayout(config.out).model("embedder")
    if not needs or embed.embedder or storage.exists(target):
        return
    from headrot.train.driver import train

    log.info("embedder: none found; training the paper's embedder through the frozen generator")
    train(stages["train_embedder"], data, config.out)


# ---------------------------------------------------------------------------
# The job


def run_pipeline(config: PipelineConfig) -> dict[str, Any]:
    from headrot.lock import run_lock

    # Validate every section before the first byte (the lock included) is written.
    stage_configs(config, config.data or RunLayout(config.out).data, config.generator)
    with run_lock(config.out, "run"):  # one writer per run root (headrot/lock.py)
        return _run_pipeline(config)


def _run_pipeline(config: PipelineConfig) -> dict[str, Any]:
    from headrot.stages.embed import run_embed
    from headrot.stages.fit import run_fit
    from headrot.stages.render import run_render
    from headrot.stages.samples import run_samples

    started = time.time()
    # Validate every section before the first byte is written.
    stage_configs(config, config.data or RunLayout(config.out).data, config.generator)
    data = ensure_data(config)
    train_config = stage_configs(config, data, None)["train"]
    generator = resolve_generator(config, data, train_config)
    stages = stage_configs(config, data, generator)
    resolve_yaw_generator(config, stages["render"])
    ensure_embedder(config, data, stages)
    results: dict[str, Any] = {"config": runs._redact(to_mapping(config)), "data": runs.redact_uri(data),
                               "generator": runs.redact_uri(generator)}
    results["embed"] = _brief(run_embed(stages["embed"]))
    if needs_samples_stage(stages):
        results["samples"] = _brief(run_samples(stages["samples"]))
    results["fit"] = _brief(run_fit(stages["fit"]))
    results["render"] = _brief(run_render(stages["render"]))
    if "evaluate" in stages:
        results["evaluate"] = _brief(_evaluate_module().run_evaluate(stages["evaluate"]))
    results["seconds"] = round(time.time() - started, 1)
    results["did_work"] = [name for name in ("embed", "samples", "fit", "render", "evaluate")
                           if name in results and not results[name].get("skipped")]
    storage.write_json(RunLayout(config.out).pipeline_json, results)
    return results


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    """A stage summary without bulky fields, for the pipeline's result."""
    return {k: v for k, v in summary.items()
            if not isinstance(v, (bytes, list)) or k in ("did_work",)}
