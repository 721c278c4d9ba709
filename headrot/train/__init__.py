"""Training the generator and the embedder with Ray Train.

- `config`: the frozen `TrainConfig` (YAML or flags).
- `steps`: pure-torch training steps (DDIM noise loss, embedder loss) and the EMA.
- `loop`: `train_loop_per_worker(config)`, what each Ray Train worker runs.
- `driver`: `train(config, data_uri, root)`, builds the dataset and the TorchTrainer.
- `grid`: `image_grid(...)`, sample grids and contact sheets.

Nothing is imported at package import: Ray and torch load only where they are used.
"""
