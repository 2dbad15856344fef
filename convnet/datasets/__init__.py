"""Datasets: Fashion-MNIST and MNIST (IDX files, downloaded with pooch and verified), the synthetic shapes,
the seed's sample photos, and safe image loading.

    registry.py     the registered datasets: list_datasets, get_dataset, fashion_mnist, mnist, shapes
    idx_dataset.py  IdxDataset: the four IDX files, searched for on disk, else downloaded into the cache
    idx.py          read_idx: the IDX format, every header field and length checked
    download.py     fetching into the cache with pooch: mirrors in order, SHA-256, progress, atomic
    shapes.py       ShapesDataset: synthetic line drawings, drawn with NumPy
    images.py       load_image (safe decoding of a user's image), load_sample_image
    png.py          the PNG integrity checks Pillow leaves out
    local/          your own files: image_dataset_from_directory (a folder per class), load_npz
"""
from convnet.datasets.download import DownloadError
from convnet.datasets.idx import read_idx
from convnet.datasets.idx_dataset import FILE_NAMES, DatasetNotFoundError, IdxDataset
from convnet.datasets.images import DEFAULT_MAX_PIXELS, list_sample_images, load_image, load_sample_image, read_pixels
from convnet.datasets.local import (
    DEFAULT_MEMORY_BUDGET,
    ArrayDataset,
    BadImageWarning,
    FolderDataset,
    check_same_classes,
    image_dataset_from_directory,
    load_npz,
)
from convnet.datasets.registry import Dataset, fashion_mnist, get_dataset, list_datasets, mnist, shapes
from convnet.datasets.shapes import ShapesDataset

__all__ = ["Dataset", "IdxDataset", "ShapesDataset", "DatasetNotFoundError", "DownloadError", "FILE_NAMES",
           "fashion_mnist", "mnist", "shapes", "list_datasets", "get_dataset", "read_idx", "load_sample_image",
           "list_sample_images", "load_image", "read_pixels", "DEFAULT_MAX_PIXELS", "image_dataset_from_directory",
           "FolderDataset", "BadImageWarning", "DEFAULT_MEMORY_BUDGET", "check_same_classes", "load_npz", "ArrayDataset"]
