"""The training driver: dataset in, TorchTrainer run, EMA weights out.

    train(config, data_uri, root) -> result dict

Layout under <root>/checkpoints/<kind>/ (Ray Train's storage_path is <root>/checkpoints
and its run name is <kind>, so Ray's own files live in the same folder):
    checkpoint_epochNNNN_stepNNNNNNNN/   Ray Train checkpoints (state.pt, samples.png, metrics.json)
    checkpoint_manager_snapshot.json     Ray Train's list of them: what a rerun resumes from
    samples/epoch_NNN.png                the sample grid of every epoch
    metrics.json                         per-epoch metrics
    model.pt                             the final EMA weights (checkpoint.save_model): what later stages load
    train_config.json                    the resolved TrainConfig and model config
    _SUCCESS                             written last

Resuming: Ray Train V2 (the default in Ray 2.60) restores a run by itself when a new
fit uses the same RunConfig(storage_path, name): the controller's checkpoint manager
reads checkpoint_manager_snapshot.json from <storage_path>/<name> and hands the latest
checkpoint to the workers through ray.train.get_checkpoint(). So rerunning the same
command after a crash continues from the latest checkpoint; a rerun with more epochs
trains further. (`resume_from_checkpoint` and `Trainer.restore` are deprecated in V2.)
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

from headrot import storage
from headrot.config import from_mapping, to_mapping
from headrot.layout import RunLayout
from headrot.train.config import TrainConfig

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Dataset


def _tag_usable(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    images = batch["image"]
    if "reject_reason" in batch:
        ok = np.asarray([r == "" for r in batch["reject_reason"]], dtype=bool)
    else:
        ok = np.ones(len(images), dtype=bool)
    return {"image": images, "ok": ok}


def _keep_usable(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"image": batch["image"][batch["ok"]]}


def training_dataset(dataset, image_size: int):
    """(materialized dataset with one column `image`, usable rows, rejected rows).

    Materialized: decoding happens once, not once per epoch, and the training
    workers then hold only their CPU share while Ray Data has nothing left to run."""
    tagged = dataset.map_batches(_tag_usable, batch_format="numpy").materialize()
    total = tagged.count()
    usable = tagged.map_batches(_keep_usable, batch_format="numpy").materialize()
    del tagged
    rows = usable.count()
    if rows:
        shape = tuple(usable.take(1)[0]["image"].shape)
        if shape != (image_size, image_size, 3):
            raise ValueError(f"train: images are {shape}, the model takes ({image_size}, {image_size}, 3)")
    return usable, rows, total - rows


# ---------------------------------------------------------------------------
# Driver


def train(config: TrainConfig, data_uri: str, root: str, *, dataset=None) -> dict[str, Any]:
    """Train config.kind on the images of `data_uri` (or on `dataset`, a Ray Dataset with an
    `image` column and optionally `reject_reason`); write <root>/checkpoints/<kind>/.

    Returns the result: final metrics, rows used and rejected, paths, timing."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from headrot.model.checkpoint import load_model, save_model
    from headrot.model.unet import UNet

    started = time.time()
    layout = RunLayout(root)
    kind_uri = layout.checkpoint_dir(config.kind)

    # 1. the network (the embedder's follows its generator)
    generator_uri, generator_config = None, None
    if config.kind == "embedder":
        generator_uri = config.generator or layout.model("generator")
        if not storage.is_remote(generator_uri):
            # Workers run in Ray's own working directory: a relative path would not resolve there.
            generator_uri = os.path.abspath(generator_uri)
        if not storage.exists(generator_uri):
            raise ValueError(
                f"train embedder: no generator checkpoint at {generator_uri}; train the generator first "
                "(headrot train generator) or pass --generator"
            )
        _, generator_config, _ = load_model(generator_uri, "generator")
    model_config = config.model_config(generator_config)
    init_uri = _warm_start(config, model_config)

    # 2. data
    if dataset is None:
        from headrot.data.dataset import image_dataset

        dataset = image_dataset(data_uri, model_config.image_size, partitions=list(config.partitions), limit=config.limit)
    elif config.limit is not None:
        dataset = dataset.limit(config.limit)
    train_ds, rows, rejected = training_dataset(dataset, model_config.image_size)
    if rows < config.batch_size * config.num_workers:
        raise ValueError(
            f"train: {rows} usable images ({rejected} rejected) but one step needs batch_size x workers = "
            f"{config.batch_size} x {config.num_workers}; lower --batch-size or --workers, or add data"
        )

    loop_config: dict[str, Any] = {
        "train": to_mapping(config),
        "model": to_mapping(model_config),
        "root": root,
    }
    if init_uri is not None:
        loop_config["init_uri"] = init_uri
    if config.kind == "embedder":
        loop_config["generator_uri"] = generator_uri
        loop_config["sample_images"] = np.stack([r["image"] for r in train_ds.take(min(8, config.sample_count))])

    # 3. Ray Train
    use_gpu = config.use_gpu
    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    scaling = ray.train.ScalingConfig(
        num_workers=config.num_workers,
        use_gpu=use_gpu,
        resources_per_worker={"CPU": config.cpus_per_worker},  # + 1 GPU each when use_gpu
    )
    storage_root = layout.checkpoints
    storage_filesystem = None
    if storage.is_remote(root):
        storage_filesystem, storage_path = storage.arrow_filesystem(storage_root)
    else:
        storage_path = os.path.abspath(storage_root)
    run_config = ray.train.RunConfig(
        storage_path=storage_path,
        storage_filesystem=storage_filesystem,
        name=config.kind,
        failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.keep_checkpoints),
    )
    trainer = TorchTrainer(
        train_loop_per_worker=_train_loop,
        train_loop_config=loop_config,
        scaling_config=scaling,
        run_config=run_config,
        datasets={"train": train_ds},
    )
    log.info("training %s: %d images, %d workers, gpu=%s", config.kind, rows, config.num_workers, use_gpu)
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"train: the run at {kind_uri} finished without a checkpoint")

    # 4. export the EMA weights in the format every later stage loads
    from headrot.train.loop import load_state

    with result.checkpoint.as_directory() as d:
        state = load_state(d)
    model = UNet(model_config)
    model.load_state_dict(state["ema"])
    history = list(state["history"])
    final = history[-1] if history else {}
    extra = {
        "step": int(state["step"]),
        "epoch": int(state["epoch"]),
        "loss": final.get("loss"),
        "train_config": to_mapping(config),
        "generator": generator_uri,
    }
    model_uri = layout.model(config.kind)
    save_model(model_uri, config.kind, model.eval(), model_config, extra)
    storage.write_json(
        storage.join(kind_uri, "train_config.json"),
        {"train": to_mapping(config), "model": to_mapping(model_config), "data": data_uri, "generator": generator_uri},
    )
    storage.write_json(storage.join(kind_uri, "metrics.json"), history)

    summary = {
        "kind": config.kind,
        "model": model_uri,
        "checkpoint": _uri(root, result.checkpoint.path),
        "rows": rows,
        "rejected": rejected,
        "step": int(state["step"]),
        "epoch": int(state["epoch"]),
        "loss": final.get("loss"),
        "samples_per_s": final.get("samples_per_s"),
        "num_workers": config.num_workers,
        "use_gpu": bool(use_gpu),
        "history": history,
        "restores": list(state.get("restores", [])),
        "seconds": round(time.time() - started, 2),
    }
    storage.mark_complete(kind_uri, {k: v for k, v in summary.items() if k != "history"})
    return summary


def export_latest(root: str, kind: str, uri: str, epoch: int | None = None) -> dict[str, Any]:
    """Write the EMA weights of the newest checkpoint under <root>/checkpoints/<kind>/ (or of the
    one saved at `epoch`, if the run kept it) to `uri` (a model.pt every stage loads), without
    training: to measure or ship a run that is still going, one stopped before its last epoch, or
    an earlier epoch than its last. Returns what was exported."""
    import io

    import torch

    from headrot.model.checkpoint import save_model
    from headrot.model.unet import UNet, UNetConfig
    from headrot.train.loop import STATE_FILE

    kind_dir = RunLayout(root).checkpoint_dir(kind)
    found = storage.list_dirs(kind_dir, "checkpoint_epoch")
    if not found:
        raise ValueError(f"train export: no checkpoint_epoch* folder under {kind_dir}: nothing trained there yet")
    # Names are checkpoint_epochNNNN_stepNNNNNNNN, zero-padded: the last in sorted order is the newest.
    chosen = found[-1]
    if epoch is not None:
        epochs = [int(d.rsplit("/", 1)[-1][len("checkpoint_epoch"):].split("_")[0]) for d in found]
        mine = [d for d, e in zip(found, epochs) if e == epoch]
        if not mine:
            kept = ", ".join(str(e) for e in epochs)
            raise ValueError(f"train export: no checkpoint of epoch {epoch} under {kind_dir}; it keeps epochs {kept} "
                             "(raise keep_checkpoints to keep more)")
        chosen = mine[-1]
    state = torch.load(io.BytesIO(storage.read_bytes(storage.join(chosen, STATE_FILE))),
                       map_location="cpu", weights_only=True)
    model_config = from_mapping(UNetConfig, state["model_config"], where=f"{chosen} model_config")
    model = UNet(model_config)
    model.load_state_dict(state["ema"])
    final = (state["history"] or [{}])[-1]
    extra = {"step": int(state["step"]), "epoch": int(state["epoch"]), "loss": final.get("loss"),
             "checkpoint": chosen.rsplit("/", 1)[-1]}
    save_model(uri, kind, model.eval(), model_config, extra)
    return {"model": uri, **extra}


def _warm_start(config: TrainConfig, model_config) -> str | None:
    """The absolute URI of `init_from`, checked now (on the driver) rather than in every worker:
    it must hold a network of this run's kind and exactly this run's config."""
    if config.init_from is None:
        return None
    from headrot.model.checkpoint import load_model

    uri = config.init_from if storage.is_remote(config.init_from) else os.path.abspath(config.init_from)
    _, found, _ = load_model(uri, config.kind)
    if found != model_config:
        raise ValueError(
            f"train: init_from {uri} holds a different network ({found}) than this run trains "
            f"({model_config}); use a checkpoint of the same preset, or drop init_from"
        )
    return uri


def _uri(root: str, path: str) -> str:
    """A storage path as a URI in the root's scheme (Ray reports s3 paths without 's3://')."""
    if storage.is_remote(root) and "://" not in path:
        return root.split("://", 1)[0] + "://" + path
    return path


def _train_loop(config: dict[str, Any]) -> None:
    # Imported inside the worker so the driver's module import stays light.
    from headrot.train.loop import train_loop_per_worker

    train_loop_per_worker(config)
