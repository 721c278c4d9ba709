"""Moved to headrot.report.grid (the one package that draws); these names stay importable here."""
from headrot.report.grid import image_grid, png_bytes, to_uint8  # noqa: F401
