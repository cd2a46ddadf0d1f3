"""Data: image I/O, resizing, and the shipped photographs."""
from .io import IMAGE_EXTENSIONS, ImageReadError, bicubic_down, list_images, load_image, save_image, to_uint8

__all__ = ["ImageReadError", "load_image", "save_image", "list_images", "bicubic_down", "to_uint8",
           "IMAGE_EXTENSIONS"]
