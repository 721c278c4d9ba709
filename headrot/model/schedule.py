"""The paper's diffusion schedule (Keras DDIM example): continuous time, cosine of a linear angle.

Glossary (code name -> symbol):
    times          t in [0, 1]; t = 1 is pure noise end, t = 0 the clean end
    signal_rates   alpha_t = cos(angle(t))   (the weight of the image in x_t)
    noise_rates    sigma_t = sin(angle(t))   (the weight of the noise in x_t)
    x_t = signal_rates * x_0 + noise_rates * noise, with alpha_t**2 + sigma_t**2 = 1.

The angle runs linearly from acos(max_signal_rate) at t = 0 to acos(min_signal_rate)
at t = 1. Neither end is reached exactly (0.95 and 0.02, not 1 and 0): the signal rate
never vanishes, so x_0 can always be recovered from x_t and the predicted noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


# ---------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class ScheduleConfig:
    max_signal_rate: float = 0.95  # alpha at t = 0 (the paper's / Keras example's value)
    min_signal_rate: float = 0.02  # alpha at t = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.min_signal_rate < self.max_signal_rate <= 1.0:
            raise ValueError(
                f"schedule: need 0 < min_signal_rate < max_signal_rate <= 1, got "
                f"min={self.min_signal_rate}, max={self.max_signal_rate}"
            )


# ---------------------------------------------------------------------------
# Schedule


def diffusion_schedule(
    times: torch.Tensor, schedule: ScheduleConfig | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(noise_rates, signal_rates) at `times` (any shape, e.g. [N,1,1,1] or [N]), same shape and dtype."""
    schedule = schedule or ScheduleConfig()
    start_angle = math.acos(schedule.max_signal_rate)
    end_angle = math.acos(schedule.min_signal_rate)
    diffusion_angles = start_angle + times * (end_angle - start_angle)
    signal_rates = torch.cos(diffusion_angles)
    noise_rates = torch.sin(diffusion_angles)
    return noise_rates, signal_rates
