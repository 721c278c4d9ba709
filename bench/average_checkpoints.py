"""A generator candidate made by averaging the weights of several checkpoints of one run.

    python -m bench.average_checkpoints OUT IN1 IN2 [IN3 ...]

Each input is an exported model.pt of the same network (usually the EMA exports of
successive epochs). The output's weights are their uniform mean, computed in float64: a
longer average than the run's EMA (post-hoc averaging, the EMA lever's far end), judged
like any other candidate with `python -m bench.latent --generator OUT`. The schedule and
network config are the inputs' (they must agree); `extra.averaged` names the inputs.
"""
from __future__ import annotations

import argparse

import torch

from headrot.model.checkpoint import load_model, save_model


def average_checkpoints(out: str, inputs: list[str], kind: str = "generator") -> None:
    if len(inputs) < 2:
        raise ValueError("average_checkpoints: give at least two checkpoints to average")
    models = [load_model(path, kind)[0] for path in inputs]
    first = models[0]
    for path, model in zip(inputs[1:], models[1:]):
        if model.config != first.config or getattr(model, "schedule", None) != getattr(first, "schedule", None):
            raise ValueError(f"{path}: another network or schedule than {inputs[0]}; average checkpoints of one run only")
    states = [m.state_dict() for m in models]
    mean = {k: (sum(s[k].double() for s in states) / len(states)).to(v.dtype) for k, v in states[0].items()}
    first.load_state_dict(mean)
    save_model(out, kind, first.eval(), first.config, {"averaged": list(inputs)})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("inputs", nargs="+")
    a = p.parse_args(argv)
    torch.set_grad_enabled(False)
    average_checkpoints(a.out, a.inputs)
    print(f"wrote {a.out}: the mean of {len(a.inputs)} checkpoints")


if __name__ == "__main__":
    main()
