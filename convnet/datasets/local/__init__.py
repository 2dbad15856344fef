"""Datasets from your own files: a folder of images per class, and NumPy .npz archives.

    folder.py     image_dataset_from_directory and FolderDataset: Keras 3's reader, batches by (epoch, step)
    listing.py    which files, in which order, with which labels; the training/validation split
    pipeline.py   the scan of every file and the stream of batches, decoded in threads
    placement.py  where a cached dataset's pixels live while a model trains (its GPU when they fit), batches there
    decoding.py   a file's pixels as TensorFlow's decode_image gives them (through the safe image loader)
    resizing.py   tf.image.resize, resize_with_pad and Keras's aspect-ratio crop, in NumPy
    npz.py        load_npz: x_train, y_train, x_test, y_test (and class_names) from an .npz, checked
"""
from convnet.datasets.local.folder import (
    DEFAULT_MEMORY_BUDGET,
    BadImageWarning,
    FolderDataset,
    check_same_classes,
    image_dataset_from_directory,
)
from convnet.datasets.local.npz import ArrayDataset, load_npz

__all__ = ["image_dataset_from_directory", "FolderDataset", "BadImageWarning", "DEFAULT_MEMORY_BUDGET",
           "check_same_classes", "load_npz", "ArrayDataset"]
