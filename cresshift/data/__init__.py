"""Data: robust image I/O, MATLAB-compatible bicubic resizing, and the shipped photographs."""
from .io import (IMAGE_EXTENSIONS, ImageReadError, bicubic_down, bicubic_up, imresize, list_images, load_image,
                 save_image, to_uint8)
from .photos import (Photo, bundled_testset, make_test_tiles, photo_catalog, photos_markdown, test_photos, training_photos,
                     validation_photos, write_test_tiles)

__all__ = ["ImageReadError", "IMAGE_EXTENSIONS", "load_image", "save_image", "list_images", "to_uint8",
           "imresize", "bicubic_down", "bicubic_up",
           "Photo", "photo_catalog", "training_photos", "validation_photos", "test_photos", "make_test_tiles",
           "write_test_tiles", "bundled_testset", "photos_markdown"]
