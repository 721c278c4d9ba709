"""Labels computed from a CelebA-layout dataset: yaw from the 5 landmarks (yaw.py)."""
