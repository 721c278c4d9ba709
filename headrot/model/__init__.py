"""The paper's networks and sampler: schedule, U-Net, DDIM sampler and inversion, embedding, checkpoints.

Modules are separate and small (diffusers' habit): `schedule` has no torch.nn, `unet`
knows nothing of diffusion, `sampler` is pure functions of (net, x_T, steps, schedule).
"""
