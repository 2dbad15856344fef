"""convnet's image_dataset_from_directory against real Keras 3 (`-m keras`, skipped unless Keras imports):
the same folder gives the same class names, file order, labels, split membership and pixels (within 1e-3
after resizing, for lossless files), and the places where convnet differs on purpose behave as documented
in convnet/datasets/local/folder.py.

Run: KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=3 /work/.keras-venv/bin/python -m pytest \
     tests/test_keras_folders.py -m keras -q -o addopts=""
"""
from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convnet.datasets import image_dataset_from_directory
from convnet.datasets.local import decoding, resizing
from convnet.datasets.shapes import draw_shapes

pytestmark = pytest.mark.keras

ATOL = 1e-3  # pixels in 0..255 after resizing; both sides compute in float32


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


@pytest.fixture(scope="module")
def tf(keras):
    return pytest.importorskip("tensorflow")


def png16(values: np.ndarray) -> bytes:
    """A 16-bit grayscale PNG (Pillow writes 16-bit grayscale only through "I;16")."""
    height, width = values.shape
    raw = b"".join(b"\0" + values[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_mixed(root: Path, kinds: tuple[str, ...], n: int = 42, seed: int = 0) -> Path:
    """n shapes in three class folders (one of them nested), of various sizes, cycling through `kinds`."""
    classes = ("Bars", "circles", "crosses")
    labels = np.arange(n) % 3
    images = draw_shapes(labels, 40, np.random.default_rng(seed), classes=("horizontal bar", "circle", "cross"))
    sizes = [(40, 40), (31, 45), (50, 23), (17, 60), (28, 28)]
    for i, (image, label) in enumerate(zip(images, labels)):
        height, width = sizes[i % len(sizes)]
        gray = Image.fromarray(image).resize((width, height))
        inverse = gray.point(lambda v: 255 - v)
        rgb = Image.merge("RGB", [gray, inverse, gray.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
        folder = root / classes[label] / ("nested" if i % 4 == 3 else "")
        folder.mkdir(parents=True, exist_ok=True)
        kind = kinds[i % len(kinds)]
        if kind == "gray.png":
            gray.save(folder / f"{i:03d}.png")
        elif kind == "rgb.PNG":
            rgb.save(folder / f"{i:03d}.PNG")
        elif kind == "rgba.png":
            Image.merge("RGBA", [*rgb.split(), inverse]).save(folder / f"{i:03d}.png")
        elif kind == "palette.png":
            palette = rgb.quantize(16)
            palette.info["transparency"] = 0
            palette.save(folder / f"{i:03d}.png", transparency=0)
        elif kind == "16bit.png":
            (folder / f"{i:03d}.png").write_bytes(png16(np.asarray(gray).astype(np.uint16) * 257 + 100))
        elif kind == "bmp":
            rgb.save(folder / f"{i:03d}.bmp")
        elif kind == "gif":
            rgb.quantize(32).save(folder / f"{i:03d}.gif")
        elif kind == "jpg":
            rgb.save(folder / f"{i:03d}.jpg", quality=90)
    return root


LOSSLESS = ("gray.png", "rgb.PNG", "rgba.png", "palette.png", "16bit.png", "bmp", "gif")
PNG_ONLY = ("gray.png", "rgb.PNG", "rgba.png", "palette.png", "16bit.png")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    return write_mixed(tmp_path_factory.mktemp("mixed"), LOSSLESS)


@pytest.fixture(scope="module")
def png_only(tmp_path_factory) -> Path:
    return write_mixed(tmp_path_factory.mktemp("png"), PNG_ONLY)


def both(keras, root, **options):
    """(Keras's dataset, convnet's dataset) of the same call."""
    options = {"verbose": False, **options}
    return keras.utils.image_dataset_from_directory(root, **options), image_dataset_from_directory(root, **options)


def everything(keras_data, ours):
    """All of Keras's batches and all of convnet's, concatenated: (x, y) each."""
    xk, yk = zip(*[(x.numpy(), y.numpy()) for x, y in keras_data])
    xo, yo = zip(*ours)
    return (np.concatenate(xk), np.concatenate(yk)), (np.concatenate(xo), np.concatenate(yo))


@pytest.mark.parametrize("options", [
    {"image_size": (28, 28)},
    {"image_size": (20, 36), "interpolation": "nearest"},
    {"image_size": (33, 21), "interpolation": "bicubic"},
    {"image_size": (19, 19), "interpolation": "area"},
    {"image_size": (24, 24), "interpolation": "lanczos3"},
    {"image_size": (30, 22), "interpolation": "lanczos5"},
    {"image_size": (26, 26), "interpolation": "gaussian"},
    {"image_size": (18, 25), "interpolation": "mitchellcubic"},
    {"image_size": (24, 24), "crop_to_aspect_ratio": True},
    {"image_size": (16, 30), "crop_to_aspect_ratio": True, "interpolation": "bicubic"},
    {"image_size": (24, 30), "pad_to_aspect_ratio": True},
    {"image_size": (40, 20), "pad_to_aspect_ratio": True, "interpolation": "area"},
], ids=lambda options: "-".join(str(v) for v in options.values()))
def test_same_files_labels_and_pixels(keras, mixed, options):
    keras_data, ours = both(keras, mixed, shuffle=False, batch_size=16, **options)
    assert ours.class_names == keras_data.class_names == ["Bars", "circles", "crosses"]
    assert ours.file_paths == keras_data.file_paths
    (xk, yk), (xo, yo) = everything(keras_data, ours)
    assert xo.shape == xk.shape and xo.dtype == np.float32
    np.testing.assert_allclose(xo, xk.astype(np.float32), atol=ATOL, rtol=0)
    np.testing.assert_array_equal(yo, yk)


@pytest.mark.parametrize("color_mode, root", [("grayscale", "png_only"), ("rgba", "png_only")])
def test_color_modes(keras, request, color_mode, root):
    # Keras fails on BMP and GIF files in grayscale and on GIF in rgba: only PNGs here (convnet reads them all)
    keras_data, ours = both(keras, request.getfixturevalue(root), shuffle=False, color_mode=color_mode,
                            image_size=(21, 27))
    (xk, _), (xo, _) = everything(keras_data, ours)
    np.testing.assert_allclose(xo, xk, atol=ATOL, rtol=0)


@pytest.mark.parametrize("label_mode", ["categorical", "binary", None])
def test_label_modes(keras, tmp_path, label_mode):
    root = write_mixed(tmp_path, ("gray.png",), n=12)
    if label_mode == "binary":
        shutil.rmtree(root / "crosses")  # two classes left
    keras_data, ours = both(keras, root, shuffle=False, image_size=(8, 8), label_mode=label_mode)
    if label_mode is None:
        np.testing.assert_allclose(next(iter(ours)), next(iter(keras_data)).numpy(), atol=ATOL)
        assert ours.class_names is None and keras_data.class_names is None
        return
    (_, yk), (_, yo) = everything(keras_data, ours)
    assert yo.dtype == yk.dtype and yo.shape == yk.shape
    np.testing.assert_array_equal(yo, yk)


def test_labels_as_a_list_and_labels_none(keras, mixed):
    given = [(i * 5) % 4 for i in range(42)]
    keras_data, ours = both(keras, mixed, shuffle=False, labels=given, image_size=(8, 8))
    assert ours.class_names == keras_data.class_names == ["0", "1", "2", "3"]
    assert ours.file_paths == keras_data.file_paths
    (_, yk), (_, yo) = everything(keras_data, ours)
    np.testing.assert_array_equal(yo, yk)
    keras_data, ours = both(keras, mixed, shuffle=False, labels=None, image_size=(8, 8))
    assert ours.file_paths == keras_data.file_paths


@pytest.mark.parametrize("seed", [0, 7, 1234, 2 ** 32 - 1])
@pytest.mark.parametrize("fraction", [0.2, 0.5])
def test_same_split_membership_and_order_when_shuffling(keras, mixed, seed, fraction):
    for subset in ("training", "validation"):
        keras_data, ours = both(keras, mixed, seed=seed, validation_split=fraction, subset=subset, image_size=(8, 8))
        assert ours.file_paths == keras_data.file_paths  # the same files, in Keras's shuffled order
    keras_train, keras_val = keras.utils.image_dataset_from_directory(
        mixed, seed=seed, validation_split=fraction, subset="both", image_size=(8, 8), verbose=False)
    train, val = image_dataset_from_directory(mixed, seed=seed, validation_split=fraction, subset="both",
                                              image_size=(8, 8), verbose=False)
    assert (train.file_paths, val.file_paths) == (keras_train.file_paths, keras_val.file_paths)


def test_without_shuffle_the_split_is_keras_when_there_is_no_seed(keras, mixed):
    for subset in ("training", "validation"):
        keras_data, ours = both(keras, mixed, shuffle=False, validation_split=0.25, subset=subset, image_size=(8, 8))
        assert ours.file_paths == keras_data.file_paths


def test_where_keras_overlaps_convnet_does_not(keras, mixed):
    """The documented difference: with a seed, Keras's split depends on `shuffle`; convnet's does not."""
    options = {"seed": 11, "validation_split": 0.3, "image_size": (8, 8), "verbose": False}
    keras_train = keras.utils.image_dataset_from_directory(mixed, subset="training", shuffle=True, **options)
    keras_val = keras.utils.image_dataset_from_directory(mixed, subset="validation", shuffle=False, **options)
    assert set(keras_train.file_paths) & set(keras_val.file_paths)  # Keras: overlap
    train = image_dataset_from_directory(mixed, subset="training", shuffle=True, **options)
    val = image_dataset_from_directory(mixed, subset="validation", shuffle=False, **options)
    assert not set(train.file_paths) & set(val.file_paths)
    assert set(val.file_paths) == set(keras.utils.image_dataset_from_directory(
        mixed, subset="validation", shuffle=True, **options).file_paths)  # Keras's shuffled membership
    assert val.file_paths == sorted(val.file_paths)  # in sorted order, as shuffle=False asks


def test_the_same_argument_errors(keras, mixed):
    calls = [{"validation_split": 0.2, "subset": "training"}, {"subset": "training"},
             {"validation_split": 2.0, "subset": "training"}, {"validation_split": 0.2, "subset": "all", "seed": 1},
             {"label_mode": "sparse"}, {"color_mode": "hsv"}, {"image_size": (3,)}, {"interpolation": "cubic"},
             {"labels": "folders"}, {"labels": [0] * 42, "class_names": ["a"]}, {"class_names": ["dogs"]},
             {"label_mode": "binary"}, {"labels": [0, 1]}]
    for options in calls:
        with pytest.raises(ValueError) as keras_error:
            keras.utils.image_dataset_from_directory(mixed, verbose=False, **options)
        with pytest.raises(ValueError) as ours:
            image_dataset_from_directory(mixed, verbose=False, **options)
        assert str(ours.value) == str(keras_error.value), options


def test_decoding_matches_tensorflow(tf, mixed):
    files = sorted(path for path in mixed.rglob("*") if path.is_file())
    compared = 0
    for path in files:
        for channels in (1, 3, 4):
            try:
                expected = tf.io.decode_image(path.read_bytes(), channels=channels, expand_animations=False).numpy()
            except tf.errors.InvalidArgumentError:  # TensorFlow refuses BMP and GIF in some channel counts
                continue
            np.testing.assert_array_equal(decoding.decode(path, channels), expected, err_msg=f"{path} {channels}")
            compared += 1
    assert compared > 100


def test_resizing_matches_tensorflow(tf):
    rng = np.random.default_rng(0)
    for height, width in [(28, 28), (37, 53), (5, 3), (100, 64)]:
        image = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
        for size in [(28, 28), (16, 40), (64, 64), (7, 7), (1, 1)]:
            for method in resizing.INTERPOLATIONS:
                expected = tf.image.resize(image, size, method=method).numpy()
                np.testing.assert_allclose(resizing.fit_image(image, size, method), expected, atol=ATOL, rtol=0,
                                           err_msg=f"{method} {(height, width)} -> {size}")


def test_jpeg_is_close(keras, tmp_path):
    """TensorFlow's libjpeg uses the fast integer IDCT, Pillow's the accurate one: a few levels apart."""
    root = write_mixed(tmp_path, ("jpg",), n=30)
    keras_data, ours = both(keras, root, shuffle=False, image_size=(32, 32))
    (xk, _), (xo, _) = everything(keras_data, ours)
    difference = np.abs(xo - xk)
    print(f"JPEG: mean |convnet - Keras| {difference.mean():.3f}, max {difference.max():.2f} (of 255)")
    assert difference.mean() < 1.5 and difference.max() < 16, (difference.mean(), difference.max())


def test_a_bad_file_stops_keras_but_not_convnet(keras, tf, tmp_path):
    root = write_mixed(tmp_path, ("gray.png",), n=12)
    (root / "Bars" / "zz.png").write_bytes(b"")
    keras_data = keras.utils.image_dataset_from_directory(root, shuffle=False, image_size=(8, 8), verbose=False)
    with pytest.raises(tf.errors.InvalidArgumentError):
        list(keras_data)
    with pytest.warns(UserWarning, match=r"1 of 13 image files .* cannot be used and are skipped"):
        ours = image_dataset_from_directory(root, shuffle=False, image_size=(8, 8), verbose=False)
    assert sum(len(x) for x, _ in ours) == 12 and ours.bad_files[0][0] == os.path.join(root, "Bars", "zz.png")


def test_webp_is_read_by_convnet_only(keras, tmp_path):
    root = write_mixed(tmp_path, ("gray.png",), n=6)
    buffer = io.BytesIO()
    Image.new("RGB", (9, 9), (10, 200, 30)).save(buffer, "WEBP", lossless=True)
    (root / "Bars" / "extra.webp").write_bytes(buffer.getvalue())
    keras_data, ours = both(keras, root, shuffle=False, image_size=(9, 9))
    webp = str(root / "Bars" / "extra.webp")
    assert webp in ours.file_paths and webp not in keras_data.file_paths
    assert [path for path in ours.file_paths if path != webp] == keras_data.file_paths
