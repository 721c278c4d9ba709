"""Reading a CelebA-layout dataset: the text index, the image decoder, the Ray Dataset.

    index = read_index("data/celeba")             # or s3://bucket/prefix
    ds = images_from_index(index, size=64)        # index.rejected holds the bad rows
    face = decode_face(jpeg_bytes, 64)            # [64, 64, 3] uint8, or ImageError

Ray is imported only when a dataset is built.
"""
from headrot.data.celeba_text import LANDMARK_NAMES, LIGHT_CLASSES
from headrot.data.dataset import decode_batch, image_dataset, images_from_index, select_rows
from headrot.data.images import ImageError, central_square, decode_face
from headrot.data.index import IMAGES_DIR, Index, read_index

__all__ = [
    "IMAGES_DIR", "LANDMARK_NAMES", "LIGHT_CLASSES", "ImageError", "Index", "central_square",
    "decode_batch", "decode_face", "image_dataset", "images_from_index", "read_index", "select_rows",
]
