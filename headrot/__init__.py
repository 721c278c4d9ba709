"""headrot: head-rotation augmentation of face datasets in the latent space of a DDIM."""
__version__ = "0.1.0"
