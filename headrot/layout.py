"""Every path of a run root, in one place.

    <root>/
      run.json                          each stage's fingerprint, config and versions (headrot.runs)
      pipeline.json                     `headrot run`: what each stage did
      data/                             `headrot run` without --data: the synthetic CelebA it writes
      _LOCK                             one writer at a time (headrot.lock)
      checkpoints/<kind>/model.pt       generator, embedder (headrot.train, or copied in by `headrot run`),
                                        generator_yaw (the yaw methods' conditional generator)
      checkpoints/labeller/pose.npz     the method's own pose-and-light CNN (samples stage)
      checkpoints/labeller/reader.npz   its second one, another seed: what calibration reads
      checkpoints/labeller/steer-<seed>.npz  more of its kind: what the local steps follow, with it
      labels/light.parquet              the light classifier's labels of every selected image (embed)
      latents/part-NNNNN.parquet        embed: one file per shard, then _SUCCESS
      latents/_mean_faces/part-NNNNN.npz  embed: per-shard sums of the mean-face figure
      samples/part-NNNNN.parquet        samples: the generator's own labelled samples
      trajectories/trajectories.parquet fit
      rotated/part-NNNNN.parquet        render
      rejected/<stage>-<shard>.parquet  every rejected row with its reason (headrot.rejects)
      report/                           evaluate (report.json, report.html, metrics.parquet, figures)
                                        and the figures of earlier stages (mean faces, contact sheets)

A stage reads and writes these paths through a RunLayout, never through string literals,
so that moving a folder is a change here alone. `_`-prefixed names are invisible to
storage.list_files, which is why the mean-face sums can live inside latents/.
"""
from __future__ import annotations

from dataclasses import dataclass

from headrot import storage

CHECKPOINTS = "checkpoints"
LABELS = "labels"
LATENTS = "latents"
SAMPLES = "samples"
TRAJECTORIES = "trajectories"
ROTATED = "rotated"
REPORT = "report"
MEAN_FACES = "_mean_faces"


@dataclass(frozen=True)
class RunLayout:
    root: str  # local folder or s3:// prefix

    def path(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    # -- stage folders ---------------------------------------------------------
    @property
    def data(self) -> str:
        """Where `headrot run` writes its synthetic CelebA when no --data is given."""
        return self.path("data")

    @property
    def latents(self) -> str:
        return self.path(LATENTS)

    @property
    def samples(self) -> str:
        return self.path(SAMPLES)

    @property
    def trajectories(self) -> str:
        return self.path(TRAJECTORIES)

    @property
    def rotated(self) -> str:
        return self.path(ROTATED)

    @property
    def report(self) -> str:
        return self.path(REPORT)

    @property
    def checkpoints(self) -> str:
        """Ray Train's storage_path: its run for each kind is checkpoints/<kind>/."""
        return self.path(CHECKPOINTS)

    # -- files -----------------------------------------------------------------
    def checkpoint_dir(self, kind: str) -> str:
        return self.path(CHECKPOINTS, kind)

    def model(self, kind: str) -> str:
        """The exported weights of a trained network (generator, embedder, generator_yaw)."""
        return self.path(CHECKPOINTS, kind, "model.pt")

    @property
    def labeller(self) -> str:
        return self.path(CHECKPOINTS, "labeller", "pose.npz")

    @property
    def reader(self) -> str:
        return self.path(CHECKPOINTS, "labeller", "reader.npz")

    def steerer(self, seed: int) -> str:
        return self.path(CHECKPOINTS, "labeller", f"steer-{int(seed)}.npz")

    @property
    def light_labels(self) -> str:
        return self.path(LABELS, "light.parquet")

    @property
    def trajectories_table(self) -> str:
        return self.path(TRAJECTORIES, "trajectories.parquet")

    def shard(self, stage_dir: str, shard: str) -> str:
        """The data file of one shard of a stage folder (latents, samples, rotated)."""
        return storage.join(stage_dir, f"{shard}.parquet")

    def mean_face_sums(self, shard: str) -> str:
        return self.path(LATENTS, MEAN_FACES, f"{shard}.npz")

    @property
    def pipeline_json(self) -> str:
        return self.path("pipeline.json")

    def report_file(self, name: str) -> str:
        return self.path(REPORT, name)
