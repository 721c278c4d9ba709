"""Synthetic CelebA: procedurally rendered 3D-shaded heads with ground truth.

- identity.py: `IdentityParams`, `sample_identity(seed, identity)`, the 40 attributes;
- render.py:   `render_face(params, yaw_deg, light_azimuth_deg, ...) -> (image, landmarks)`;
- writer.py:   `write_synthetic_celeba(out_dir, n, seed=0, ...)`, the CelebA layout + truth.parquet.
"""
