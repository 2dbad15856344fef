"""Datasets: Fashion-MNIST and MNIST (IDX files, downloaded and verified), the synthetic shapes, the
seed's sample photos, and safe image loading."""
from convnet.datasets.core import (
                                   DEFAULT_MAX_PIXELS,
                                   FILE_NAMES,
                                   Dataset,
                                   DatasetNotFoundError,
                                   IdxDataset,
                                   fashion_mnist,
                                   get_dataset,
                                   list_datasets,
                                   list_sample_images,
                                   load_image,
                                   load_sample_image,
                                   mnist,
                                   read_idx,
                                   shapes,
)
from convnet.datasets.shapes import ShapesDataset

__all__ = ["Dataset", "IdxDataset", "ShapesDataset", "DatasetNotFoundError", "FILE_NAMES", "fashion_mnist", "mnist",
           "shapes", "list_datasets", "get_dataset", "read_idx", "load_sample_image", "list_sample_images",
           "load_image", "DEFAULT_MAX_PIXELS"]
