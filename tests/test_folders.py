"""Tests for convnet.datasets.local: image_dataset_from_directory (Keras 3's listing, labels, split and
pixels, written out here as NumPy transcriptions), the scan that accounts for every bad file, batches by
(epoch, step) for exact resume, the memory budget, and load_npz. Real Keras: tests/test_keras_folders.py."""
from __future__ import annotations

import doctest
import importlib
import io
import os
import re
import struct
import threading
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from convnet import datasets
from convnet.datasets import BadImageWarning, FolderDataset, check_same_classes, image_dataset_from_directory, load_npz
from convnet.datasets.local import decoding, listing, pipeline, resizing
from convnet.datasets.shapes import draw_shapes

CLASSES = ("circle", "square", "triangle")


def shapes(n: int, side: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 images (n, side, side) of the synthetic shapes, labels 0..2 in turn."""
    labels = np.arange(n) % 3
    return draw_shapes(labels, side, np.random.default_rng(seed), classes=("circle", "square", "triangle")), labels


def write_folder(root: Path, n: int = 12, side: int = 28, fmt: str = "png", mode: str = "L", seed: int = 0) -> Path:
    """A folder per class of CLASSES holding n images in all, named 000.png, 001.png, ..."""
    images, labels = shapes(n, side, seed)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).convert(mode).save(folder / f"{i:03d}.{fmt}")
    return root


def load(root: Path, **options) -> FolderDataset:
    options = {"image_size": (28, 28), "color_mode": "grayscale", "verbose": False, "shuffle": False, **options}
    return image_dataset_from_directory(root, **options)


def one_pixel_png(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height (CRC recomputed, so that it opens): a decompression bomb."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    at = data.index(b"IHDR")
    data[at + 4:at + 12] = struct.pack(">II", width, height)
    data[at + 17:at + 21] = struct.pack(">I", zlib.crc32(bytes(data[at:at + 17])))
    return bytes(data)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """30 grayscale 28x28 PNGs, 10 per class: shared by the tests that only read."""
    return write_folder(tmp_path_factory.mktemp("small"), n=30)




def keras_listing(directory: str, formats=listing.ALLOWED_FORMATS) -> tuple[list[str], list[int], list[str]]:
    """Keras 3's index_directory with labels="inferred", written out from its documented rules: class
    folders in sorted() order (no leading "."), each walked with os.walk, roots sorted, files sorted."""
    classes = [d for d in sorted(os.listdir(directory)) if os.path.isdir(os.path.join(directory, d))
               and not d.startswith(".")]
    paths, labels = [], []
    for label, name in enumerate(classes):
        for root, _, files in sorted(os.walk(os.path.join(directory, name)), key=lambda w: w[0]):
            for file in sorted(files):
                if file.lower().endswith(formats):
                    paths.append(os.path.join(root, file))
                    labels.append(label)
    return paths, labels, classes


def test_classes_files_and_labels_follow_keras_order(tmp_path):
    image = Image.fromarray(shapes(1)[0][0])
    layout = ["b/2.png", "b/10.png", "b/sub/1.png", "b/sub-x/0.png", "B/z.PNG", "a/x.Jpg", "a/deep/er/y.bmp",
              "a/.hidden.png", "c_empty/notes.txt", ".git/skip.png", "a/readme.md", "w/0.webp", "g/0.gif",
              "j/0.jpeg"]
    for name in layout:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith((".txt", ".md")):
            path.write_text("not an image")
        else:
            image.convert("RGB").save(path, format={"jpg": "JPEG", "jpeg": "JPEG"}.get(name.rsplit(".", 1)[1].lower()))
    (tmp_path / "top.png").write_bytes((tmp_path / "b/2.png").read_bytes())  # ignored with labels="inferred"
    with pytest.warns(BadImageWarning, match=re.escape(f"the class folder {tmp_path / 'c_empty'} holds no image file")):
        data = load(tmp_path, image_size=(8, 8))
    paths, labels, classes = keras_listing(str(tmp_path))
    assert data.class_names == classes == ["B", "a", "b", "c_empty", "g", "j", "w"]  # code-point order
    assert data.file_paths == paths and data.labels.tolist() == labels
    assert data.file_paths[data.file_paths.index(str(tmp_path / "b/10.png")) + 1] == str(tmp_path / "b/2.png")
    assert str(tmp_path / "a/.hidden.png") in data.file_paths  # hidden files are read, hidden folders are not


def test_labels_none_walks_from_the_top_and_labels_list(small):
    data = load(small, labels=None, image_size=(4, 4))
    assert data.class_names is None and data.labels is None and data.num_samples == 30
    x = next(iter(data))
    assert isinstance(x, np.ndarray) and x.shape == (30, 4, 4, 1)  # images only: one batch of 30
    given = [(i * 7) % 4 for i in range(30)]
    data = load(small, labels=given, image_size=(4, 4), label_mode="categorical")
    assert data.class_names == ["0", "1", "2", "3"] and data.labels.tolist() == given
    with pytest.raises(ValueError, match=r"Expected the lengths of `labels` to match the number of files in the "
                                         r"target directory\. len\(labels\) is 3 while we found 30 files"):
        load(small, labels=[0, 1, 2])
    with pytest.raises(ValueError, match=r"You can only pass `class_names` if `labels=\"inferred\"`"):
        load(small, labels=given, class_names=["a"])
    with pytest.raises(ValueError, match=r"When `labels=None` \(no labels\), argument `class_names` cannot be "):
        load(small, label_mode=None, class_names=["circle"])
    with pytest.raises(ValueError, match=r"`labels` must be class indices from 0 to 1 for label_mode='binary'"):
        load(small, labels=[i % 2 * 5 for i in range(30)], label_mode="binary")


def test_class_names_choose_and_order_the_classes(small):
    data = load(small, class_names=["triangle", "circle"])
    assert data.class_names == ["triangle", "circle"] and data.num_samples == 20
    assert all(Path(path).parent.name == data.class_names[label] for path, label in zip(data.file_paths, data.labels))
    with pytest.raises(ValueError, match=r"The `class_names` passed did not match the names of the subdirectories "
                                         r"of the target directory\. Expected: \['circle', 'square', 'triangle'\]"):
        load(small, class_names=["dog"])


def test_follow_links(tmp_path, small):
    root = tmp_path / "linked"
    (root / "circle").mkdir(parents=True)
    Image.fromarray(shapes(1)[0][0]).save(root / "circle" / "own.png")
    os.symlink(small / "square", root / "circle" / "more")  # a link to a folder inside a class folder
    assert load(root).num_samples == 1
    assert load(root, follow_links=True).num_samples == 11




@pytest.mark.parametrize("label_mode, y_shape, y_dtype", [("int", (8,), np.int32), ("categorical", (8, 3), np.float32),
                                                          (None, None, None)])
def test_batches_and_label_modes(small, label_mode, y_shape, y_dtype):
    data = load(small, batch_size=8, label_mode=label_mode, color_mode="rgb", image_size=(20, 24))
    assert len(data) == 4 and data.image_shape == (20, 24, 3)
    batches = list(data)
    x = batches[0] if label_mode is None else batches[0][0]
    assert x.shape == (8, 20, 24, 3) and x.dtype == np.float32 and x.min() >= 0 and x.max() <= 255
    if label_mode is None:
        assert data.element_spec == (((None, 20, 24, 3), "float32"),)
        return
    y = batches[0][1]
    assert y.shape == y_shape and y.dtype == y_dtype
    labels = np.concatenate([b[1] for b in batches])
    expected = data.labels if label_mode == "int" else np.eye(3)[data.labels]
    np.testing.assert_array_equal(labels, expected)
    assert sum(len(b[0]) for b in batches) == 30 and len(batches[-1][0]) == 6


def test_binary_labels_and_rgba(tmp_path):
    root = write_folder(tmp_path, n=8)
    for folder in root.iterdir():
        if folder.name == "triangle":
            for file in folder.iterdir():
                file.unlink()
            folder.rmdir()
    data = load(root, label_mode="binary", color_mode="rgba", batch_size=None)
    x, y = next(iter(data))
    assert x.shape == (28, 28, 4) and y.shape == (1,) and y.dtype == np.float32
    assert (x[..., 3] == 255).all() and len(data) == data.num_samples == 6
    assert data.element_spec == (((28, 28, 4), "float32"), ((1,), "float32"))
    with pytest.raises(ValueError, match=r'When passing `label_mode="binary"`, there must be exactly 2 class_names\. '
                                         r"Received: class_names=\['circle', 'square', 'triangle'\]"):
        load(write_folder(tmp_path / "three"), label_mode="binary")


def test_pixels_are_the_files_pixels(tmp_path):
    images, labels = shapes(6, side=20)
    rgb = np.stack([images, 255 - images, images // 2], -1)  # (6, 20, 20, 3)
    for i, (image, label) in enumerate(zip(rgb, labels)):
        (tmp_path / CLASSES[label]).mkdir(exist_ok=True)
        Image.fromarray(image).save(tmp_path / CLASSES[label] / f"{i}.png")
    data = load(tmp_path, color_mode="rgb", image_size=(20, 20))
    x, _ = data.batch(0, 0)
    order = [int(Path(p).stem) for p in data.file_paths]
    np.testing.assert_array_equal(x, rgb[order].astype(np.float32))
    gray, _ = load(tmp_path, image_size=(20, 20)).batch(0, 0)
    r, g, b = (rgb[order][..., i].astype(np.int64) for i in range(3))
    np.testing.assert_array_equal(gray[..., 0], (9797 * r + 19234 * g + 3737 * b) >> 15)  # libpng's weights




def keras_split(paths: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Keras 3 with shuffle=True: RandomState(seed).shuffle of the sorted list, the last int(fraction * n) kept
    for validation."""
    shuffled = list(paths)
    np.random.RandomState(seed).shuffle(shuffled)
    count = int(fraction * len(paths))
    return shuffled[:-count], shuffled[-count:]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), fraction=st.sampled_from([0.1, 0.2, 0.5, 0.7, 0.95]),
       shuffles=st.tuples(st.booleans(), st.booleans()))
def test_splits_are_disjoint_whatever_shuffle(small, seed, fraction, shuffles):
    train = load(small, seed=seed, validation_split=fraction, subset="training", shuffle=shuffles[0],
                 image_size=(4, 4))
    val = load(small, seed=seed, validation_split=fraction, subset="validation", shuffle=shuffles[1],
               image_size=(4, 4))
    assert not set(train.file_paths) & set(val.file_paths)
    assert sorted(train.file_paths + val.file_paths) == sorted(keras_listing(str(small))[0])
    keras_train, keras_val = keras_split(keras_listing(str(small))[0], fraction, seed)
    assert set(train.file_paths) == set(keras_train) and set(val.file_paths) == set(keras_val)
    if shuffles[0]:
        assert train.file_paths == keras_train  # Keras's order too
    else:
        assert train.file_paths == sorted(train.file_paths)


def test_split_both_and_without_seed(small):
    train, val = load(small, seed=3, validation_split=0.3, subset="both", shuffle=True, image_size=(4, 4))
    keras_train, keras_val = keras_split(keras_listing(str(small))[0], 0.3, 3)
    assert (train.file_paths, val.file_paths) == (keras_train, keras_val)
    assert train.shuffle and not val.shuffle  # Keras does not reshuffle the validation half of "both"
    train = load(small, validation_split=0.2, subset="training", image_size=(4, 4))  # shuffle=False, no seed
    assert train.file_paths == keras_listing(str(small))[0][:24]  # the sorted list, its last 6 for validation


def test_split_errors(small):
    with pytest.raises(ValueError, match=r"^If using `validation_split` and shuffling the data, you must provide a "
                                         r"`seed` argument, to make sure that there is no overlap between the "
                                         r"training and validation subset\.$"):
        load(small, validation_split=0.2, subset="training", shuffle=True)
    with pytest.raises(ValueError, match=r"If using `validation_split` and shuffling the data, you must provide"):
        load(small, validation_split=0.2, subset="both", shuffle=True)
    with pytest.raises(ValueError, match=r"^If `subset` is set, `validation_split` must be set, and inversely\.$"):
        load(small, subset="training")
    with pytest.raises(ValueError, match=r"If `subset` is set, `validation_split` must be set"):
        load(small, validation_split=0.2)
    with pytest.raises(ValueError, match=r"`validation_split` must be between 0 and 1, received: 1\.5"):
        load(small, validation_split=1.5, subset="training")
    with pytest.raises(ValueError, match=r'`subset` must be either "training", "validation" or "both", received: '
                                         r"train"):
        load(small, validation_split=0.2, subset="train")
    with pytest.raises(ValueError, match=r"`validation_split`=0\.01 of 30 files leaves int\(0\.01 \* 30\) = 0 files "
                                         r"for validation"):
        load(small, validation_split=0.01, subset="training")




@pytest.mark.parametrize("budget", [2 ** 30, 0], ids=["cached", "streamed"])
def test_batches_are_a_function_of_epoch_and_step(small, budget):
    data = load(small, shuffle=True, seed=5, batch_size=7, memory_budget=budget)
    assert data.cached == (budget > 0)
    for epoch in (0, 3):
        order = data.epoch_order(epoch)
        assert sorted(order.tolist()) == list(range(30))
        whole = list(data.iter_from(epoch))
        assert len(whole) == len(data) == 5
        np.testing.assert_array_equal(np.concatenate([y for _, y in whole]), data.labels[order])
        for step in (0, 2, 4):
            rest = list(data.iter_from(epoch, step))
            assert len(rest) == 5 - step
            for (x1, y1), (x2, y2) in zip(rest, whole[step:]):
                np.testing.assert_array_equal(x1, x2)
                np.testing.assert_array_equal(y1, y2)
            x, y = data.batch(epoch, step)
            np.testing.assert_array_equal(x, whole[step][0])
            np.testing.assert_array_equal(y, data.labels[data.batch_indices(epoch, step)])
    assert not np.array_equal(data.epoch_order(0), data.epoch_order(1))
    first, second = list(data), list(data)  # iterating twice: epochs 0 and 1, as Keras reshuffles
    np.testing.assert_array_equal(np.concatenate([y for _, y in second]), data.labels[data.epoch_order(1)])
    assert len(first) == 5
    assert list(data.iter_from(0, 5)) == []
    with pytest.raises(ValueError, match=r"`step` must be <= 5 \(the batches per epoch\)\. Received: step=6"):
        data.iter_from(0, 6)
    with pytest.raises(ValueError, match=r"`index` must be < 5 \(the batches per epoch\)\. Received: index=5"):
        data.batch(0, 5)
    with pytest.raises(ValueError, match=r"`epoch` must be >= 0\. Received: epoch=-1"):
        data.batch(-1, 0)


def test_cached_and_streamed_batches_are_identical(tmp_path):
    root = write_folder(tmp_path, n=20, side=33, mode="RGB")
    cached = load(root, shuffle=True, seed=1, image_size=(24, 20), batch_size=6)  # resampled: a float32 cache
    streamed = load(root, shuffle=True, seed=1, image_size=(24, 20), batch_size=6, memory_budget=0, workers=3)
    assert cached.cached and cached.as_arrays()[0].dtype == np.float32 and not streamed.cached
    for (x1, y1), (x2, y2) in zip(cached.iter_from(2), streamed.iter_from(2)):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def test_iter_from_reads_only_the_batches_it_yields(small, monkeypatch):
    data = load(small, shuffle=True, seed=2, batch_size=4, memory_budget=0, workers=2, prefetch=2)
    read: list[str] = []
    original = pipeline.ImageReader.read
    lock = threading.Lock()

    def counting(self, path):
        with lock:
            read.append(path)
        return original(self, path)

    monkeypatch.setattr(pipeline.ImageReader, "read", counting)
    rest = list(data.iter_from(1, 5))  # batches 5, 6, 7 of 8
    assert len(rest) == 3 and len(read) == 30 - 5 * 4
    wanted = [data.file_paths[i] for i in data.epoch_order(1)[20:]]
    assert sorted(read) == sorted(wanted)
    read.clear()
    stream = data.iter_from(0)
    next(stream)  # the caller holds one batch: at most `prefetch` more are decoded ahead
    assert len(read) <= (1 + data.prefetch) * 4
    stream.close()


def test_state_dict_restores_the_order(small):
    first = load(small, shuffle=True, batch_size=8)  # no seed: drawn as Keras draws it
    state = first.state_dict()
    again = load(small, shuffle=True, batch_size=8)
    again.seed = state["seed"] + 1  # another draw
    again.load_state_dict(state)
    np.testing.assert_array_equal(again.epoch_order(4), first.epoch_order(4))
    other = load(small, shuffle=True, batch_size=8, class_names=["circle", "square"])
    with pytest.warns(UserWarning, match=r"differ from the checkpoint's \(30 files then, 20 now, or other files or "
                                         r"labels\): the rest of the epoch cannot follow"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match=r"differ from the checkpoint's"):
        other.load_state_dict(state, strict=True)
    with pytest.raises(TypeError, match=r"`state` must be a dict from FolderDataset\.state_dict\(\)"):
        other.load_state_dict({"seed": 1})




def plant_bad_files(root: Path) -> dict[str, str]:
    """Bad files among good ones: name -> a fragment of the reason the scan gives."""
    good = (root / "circle" / "000.png").read_bytes()
    buffer = io.BytesIO()
    Image.fromarray(np.ones((3, 4), np.float32)).save(buffer, "TIFF")
    corrupt = bytearray(good)
    at = good.index(b"IDAT")
    crc = at + 4 + struct.unpack(">I", good[at - 4:at])[0]
    corrupt[crc] ^= 0xFF  # the image data's checksum no longer matches: Pillow alone would not notice
    bad = {"circle/truncated.png": (good[:len(good) // 2], "corrupt or truncated image"),
           "circle/empty.png": (b"", "the file is empty (0 bytes)"),
           "square/notes.png": (b"just some text, renamed\n" * 4, "not an image Pillow can read"),
           "square/bomb.png": (one_pixel_png(10000, 10000), "decompression bomb"),
           "triangle/float.png": (buffer.getvalue(), "unsupported image mode 'F'"),
           "triangle/flipped.png": (bytes(corrupt), "corrupt PNG")}
    for name, (data, _) in bad.items():
        (root / name).write_bytes(data)
    return {name: reason for name, (_, reason) in bad.items()}


def test_bad_files_are_skipped_warned_and_listed(tmp_path):
    root = write_folder(tmp_path, n=12)
    planted = plant_bad_files(root)
    with pytest.warns(BadImageWarning, match=r"^6 of 18 image files in .* cannot be used and are skipped: .*; and 3 "
                                             r"more\. The full list of \(path, reason\) is in `bad_files`\.$"):
        data = load(root)
    assert data.num_samples == 12 and len(data.bad_files) == 6
    found = {os.path.relpath(path, root): reason for path, reason in data.bad_files}
    assert set(found) == set(planted)
    for name, fragment in planted.items():
        assert fragment in found[name], (name, found[name])
    assert not set(data.file_paths) & {str(root / name) for name in planted}
    with pytest.raises(ValueError, match=r"(?s)^6 of 18 image files in .* cannot be used \(on_bad_image='error'\):"
                                         r"\n  .*bomb\.png: the image declares 10000x10000 = 100000000 pixels.*\n"
                                         r"Remove or repair them, or pass on_bad_image='skip'"):
        load(root, on_bad_image="error")


def test_a_file_that_goes_bad_after_the_scan_is_skipped(tmp_path):
    root = write_folder(tmp_path, n=12)
    data = load(root, batch_size=4, memory_budget=0, shuffle=True, seed=0)
    victim = data.file_paths[data.batch_indices(0, 1)[2]]
    Path(victim).write_bytes(Path(victim).read_bytes()[:80])  # cut in the image data
    with pytest.warns(BadImageWarning, match=re.escape(victim) + r": corrupt or truncated image .* The file passed the "
                                                                 r"scan but fails now; it is left out of its batch"):
        sizes = [len(x) for x, _ in data.iter_from(0)]
    assert sizes == [4, 3, 4]
    assert data.bad_files[-1][0] == victim and "(when read in epoch 0, after the scan)" in data.bad_files[-1][1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: later epochs leave it out quietly
        assert sum(len(x) for x, _ in data.iter_from(1)) == 11


def test_unreadable_and_vanished_files(tmp_path, monkeypatch):
    root = write_folder(tmp_path, n=6)
    locked = str(root / "square" / "001.png")
    os.symlink(root / "nowhere.png", root / "circle" / "link.png")  # a broken link
    real_open = open

    def guarded(path, *args, **kwargs):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    from convnet.datasets import images
    monkeypatch.setattr(images, "open", guarded, raising=False)  # as a file chmod 000 (the tests may run as root)
    with pytest.warns(BadImageWarning, match=r"2 of 7 image files"):
        data = load(root)
    reasons = dict(data.bad_files)
    assert reasons[locked] == "the file cannot be read (Permission denied)"
    assert reasons[str(root / "circle" / "link.png")] == "no such file (a broken link, or removed after the listing)"


def test_non_ascii_names(tmp_path):
    image = Image.fromarray(shapes(1)[0][0])
    for name in ["chats_é/образ.png", "chats_é/猫 1.png", "дом/ünïcødé.PNG"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        image.save(tmp_path / name, format="PNG")
    undecodable = os.path.join(os.fsencode(tmp_path / "дом"), b"\xff\xfe.png")  # not UTF-8: kept as surrogates
    try:
        with open(undecodable, "wb") as stream:
            stream.write(b"")
    except OSError:  # a file system that takes UTF-8 names only (macOS)
        pytest.skip("this file system refuses file names that are not UTF-8")
    with pytest.warns(BadImageWarning, match=r"дом/\\xff\\xfe\.png \(the file is empty"):
        data = load(tmp_path)
    assert data.class_names == ["chats_é", "дом"] and data.num_samples == 3
    assert data.bad_files[0][0] == os.fsdecode(undecodable)
    repr(data)


def test_empty_folders_and_missing_directories(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.warns(BadImageWarning, match=r"holds no image file"), \
            pytest.raises(ValueError, match=r"^No images found in directory .*\. Allowed formats: \('\.bmp', '\.gif', "
                                            r"'\.jpeg', '\.jpg', '\.png', '\.webp'\)$"):
        load(tmp_path)
    Image.fromarray(shapes(1)[0][0]).save(tmp_path / "loose.png")
    with pytest.warns(BadImageWarning), pytest.raises(ValueError, match=r"\(1 image files lie directly in it, but "
                                                                       r"labels='inferred' reads one subfolder per "
                                                                       r"class: move them into class folders, or pass "
                                                                       r"labels=None\)"):
        load(tmp_path)
    assert load(tmp_path, labels=None).num_samples == 1
    with pytest.raises(FileNotFoundError, match=r"`directory` does not exist\. Received: directory='.*nowhere'"):
        load(tmp_path / "nowhere")
    with pytest.raises(NotADirectoryError, match=r"`directory` must be a folder of class folders, not a file"):
        load(tmp_path / "loose.png")
    (tmp_path / "a" / "bad.png").write_bytes(b"")
    (tmp_path / "b").mkdir()
    Image.fromarray(shapes(1)[0][0]).save(tmp_path / "b" / "ok.png")
    with pytest.warns(BadImageWarning) as caught:
        load(tmp_path)
    assert [str(w.message).split(":")[0] for w in caught] == ["1 of 2 image files in " + str(tmp_path) + " cannot be "
                                                              "used and are skipped", "class 'a' (label 0) has no usable "
                                                              "image left"]
    (tmp_path / "b" / "ok.png").write_bytes(b"")
    with pytest.warns(BadImageWarning), pytest.raises(ValueError, match=r"None of the 2 image files found in .* can "
                                                                       r"be used; the first: .*bad\.png: the file is "
                                                                       r"empty"):
        load(tmp_path)


def test_training_and_test_folders_must_share_their_classes(tmp_path, small):
    train = load(small)
    test = load(write_folder(tmp_path / "test", n=6))
    check_same_classes(train, test)
    other = load(small, class_names=["square", "circle"])
    with pytest.raises(ValueError, match=r"the test folder .* and the training folder .* must hold the same class "
                                         r"folders, so that each label means one class: classes only in the training "
                                         r"folder: \['triangle'\]; only in the test folder: none\. Pass class_names="):
        check_same_classes(train, other)
    with pytest.raises(ValueError, match=r"the same classes in another order: \['circle', 'square'\] and "
                                         r"\['square', 'circle'\]"):
        check_same_classes(load(small, class_names=["circle", "square"]), other, what="validation")




def test_the_memory_budget_chooses_cache_or_stream(tmp_path):
    root = write_folder(tmp_path, n=12, side=28)
    exact = 12 * 28 * 28  # bytes as uint8
    data = load(root, memory_budget=exact)
    assert data.cached and data.as_arrays()[0].dtype == np.uint8 and "cached as uint8" in repr(data)
    x, y = data.as_arrays()
    assert x.shape == (12, 28, 28, 1) and y.tolist() == data.labels.tolist()
    assert [Path(p).parent.name for p in data.file_paths] == [data.class_names[i] for i in y]
    streamed = load(root, memory_budget=exact - 1)
    assert not streamed.cached and "streamed" in repr(streamed)
    with pytest.raises(ValueError, match=r"^the dataset streams from disk: its 12 images of 28x28x1 take 9408 bytes "
                                         r"as uint8 \(4x as float32 after resampling\), more than memory_budget=9407"):
        streamed.as_arrays()
    resampled = 12 * 20 * 20
    assert load(root, image_size=(20, 20), memory_budget=4 * resampled).as_arrays()[0].dtype == np.float32
    assert not load(root, image_size=(20, 20), memory_budget=4 * resampled - 1).cached  # uint8 would fit, float32 not
    assert load(root, image_size=(20, 20), interpolation="nearest", memory_budget=resampled).cached  # nearest: exact


def test_both_subsets_share_the_budget(small):
    one = 21 * 28 * 28  # the training subset's bytes
    train, val = load(small, validation_split=0.3, subset="both", seed=0, memory_budget=one + 5)
    assert train.cached and not val.cached


def test_streaming_memory_stays_flat(tmp_path):
    root = write_folder(tmp_path, n=300, side=28)
    peaks = []
    for n_epochs in (1, 3):
        data = load(root, batch_size=16, memory_budget=0, shuffle=True, seed=0)
        tracemalloc.start()
        for epoch in range(n_epochs):
            for _ in data.iter_from(epoch):
                pass
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    batch = 16 * 28 * 28 * 4
    assert peaks[1] < 1.5 * peaks[0] + batch  # three epochs hold no more than one
    assert peaks[0] < 40 * batch  # a few batches in flight, not the epoch (300 images = 19 batches)




@pytest.mark.parametrize("options, error, message", [
    ({"label_mode": "sparse"}, ValueError, r'`label_mode` argument must be one of "int", "categorical", "binary", or '
                                           r"None\. Received: label_mode=sparse"),
    ({"color_mode": "bgr"}, ValueError, r'`color_mode` must be one of \{"rgb", "rgba", "grayscale"\}\. '
                                        r"Received: color_mode=bgr"),
    ({"image_size": (28,)}, ValueError, r"Invalid `image_size` value\. Expected a tuple of 2 integers\. "
                                        r"Received: image_size=\(28,\)"),
    ({"image_size": (0, 4)}, ValueError, r"Invalid `image_size` value"),
    ({"interpolation": "cubic"}, ValueError, r"Argument `interpolation` should be one of \('bilinear', 'nearest', "),
    ({"labels": "folders"}, ValueError, r"`labels` argument should be a list/tuple of integer labels"),
    ({"labels": [0.5]}, ValueError, r"`labels` argument should be a list/tuple of integer labels"),
    ({"crop_to_aspect_ratio": True, "pad_to_aspect_ratio": True}, ValueError,
     r"Only one of `pad_to_aspect_ratio`, `crop_to_aspect_ratio` can be set to `True`\."),
    ({"data_format": "channels_first"}, ValueError, r"`data_format` must be None or 'channels_last': convnet's images "
                                                    r"are NHWC\. Received: data_format='channels_first'"),
    ({"batch_size": 0}, ValueError, r"`batch_size` must be >= 1\. Received: batch_size=0"),
    ({"seed": -1}, ValueError, r"`seed` must be >= 0\. Received: seed=-1"),
    ({"seed": 2 ** 32}, ValueError, r"`seed` must be <= 4294967295\. Received: seed=4294967296"),
    ({"shuffle": "yes"}, TypeError, r"`shuffle` must be True or False\. Received: shuffle='yes'"),
    ({"on_bad_image": "ignore"}, ValueError, r"`on_bad_image` must be 'skip' or 'error'\. "
                                             r"Received: on_bad_image='ignore'"),
    ({"memory_budget": -1}, ValueError, r"`memory_budget` must be >= 0\. Received: memory_budget=-1"),
    ({"workers": 0}, ValueError, r"`workers` must be >= 1\. Received: workers=0"),
    ({"prefetch": 0}, ValueError, r"`prefetch` must be >= 1\. Received: prefetch=0"),
    ({"validation_split": "0.2", "subset": "training"}, TypeError, r"`validation_split` must be a float between 0 "
                                                                   r"and 1\. Received: validation_split='0\.2'"),
    ({"class_names": "circle"}, TypeError, r"`class_names` must be a list of folder names\. "
                                           r"Received: class_names='circle'"),
])
def test_arguments_are_checked(small, options, error, message):
    with pytest.raises(error, match=message):
        load(small, **options)


def test_directory_must_be_a_path():
    with pytest.raises(TypeError, match=r"`directory` must be a path\. Received: directory=3 \(type int\)"):
        image_dataset_from_directory(3)


def test_verbose_prints_as_keras(small, capsys):
    image_dataset_from_directory(small, seed=1, validation_split=0.2, subset="both", image_size=(4, 4))
    assert capsys.readouterr().out == ("Found 30 files belonging to 3 classes.\nUsing 24 files for training.\n"
                                       "Using 6 files for validation.\n")




def test_decoding_follows_tensorflows_rules():
    rgba = np.random.default_rng(0).integers(0, 256, (5, 6, 4), dtype=np.uint8)
    np.testing.assert_array_equal(decoding.to_channels(rgba, "PNG", 3), rgba[..., :3])  # alpha dropped, not blended
    np.testing.assert_array_equal(decoding.to_channels(rgba, "PNG", 4), rgba)
    r, g, b = (rgba[..., i].astype(np.int64) for i in range(3))
    np.testing.assert_array_equal(decoding.to_channels(rgba, "PNG", 1)[..., 0], (9797 * r + 19234 * g + 3737 * b) >> 15)
    gray = rgba[..., :1]
    np.testing.assert_array_equal(decoding.to_channels(gray, "PNG", 4), np.concatenate([gray] * 3 + [gray * 0 + 255], 2))
    sixteen = np.array([[[0], [257], [42467], [65535]]], np.uint16)
    assert decoding.to_channels(sixteen, "PNG", 1).ravel().tolist() == [0, 1, 165, 255]  # the high byte
    gif = rgba.copy()
    gif[..., 3] = np.where(rgba[..., 3] > 127, 255, 0)
    expected = np.where(gif[..., 3:] == 0, 0, gif[..., :3])
    np.testing.assert_array_equal(decoding.to_channels(gif, "GIF", 3), expected)  # transparent pixels black


def test_jpeg_grayscale_is_libjpegs_luma(tmp_path):
    rgb = np.stack([*np.meshgrid(np.arange(32) * 8, np.arange(24) * 10), np.full((24, 32), 90)], -1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=90)
    reference = Image.open(tmp_path / "a.jpg")
    reference.draft("L", None)
    np.testing.assert_array_equal(decoding.decode(tmp_path / "a.jpg", 1)[..., 0], np.asarray(reference))


def bilinear_reference(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """tf.image.resize bilinear without antialias, from its documented rule: half-pixel centres, sample
    x = (i + 0.5) * in / out - 0.5, the neighbours floor and ceil clamped to the image, loops in float64."""
    out = np.zeros((height, width, image.shape[2]))
    h, w = image.shape[:2]
    for i in range(height):
        y = (i + 0.5) * h / height - 0.5
        y0, y1, fy = max(int(np.floor(y)), 0), min(int(np.ceil(y)), h - 1), y - np.floor(y)
        for j in range(width):
            x = (j + 0.5) * w / width - 0.5
            x0, x1, fx = max(int(np.floor(x)), 0), min(int(np.ceil(x)), w - 1), x - np.floor(x)
            top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
            bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
            out[i, j] = top * (1 - fy) + bottom * fy
    return out


@pytest.mark.parametrize("size, target", [((7, 9), (4, 13)), ((28, 28), (13, 5)), ((3, 2), (9, 9)), ((5, 5), (5, 5))])
def test_bilinear_resize_against_a_transcription(size, target):
    image = np.random.default_rng(1).integers(0, 256, (*size, 2)).astype(np.uint8)
    np.testing.assert_allclose(resizing.fit_image(image, target, "bilinear"), bilinear_reference(image, *target),
                               atol=1e-3)


def test_other_resize_methods_on_hand_cases():
    row = np.array([[[0.0], [10.0], [20.0], [40.0]]], np.float32)  # (1, 4, 1)
    assert resizing.resize(row, (1, 2), "area")[0, :, 0].tolist() == [5.0, 30.0]  # the mean of each pair
    assert resizing.resize(row, (1, 2), "nearest")[0, :, 0].tolist() == [10.0, 40.0]  # floor((i + 0.5) * 2)
    assert resizing.resize(row, (1, 3), "area")[0, :, 0].tolist() == pytest.approx([(0 + 10 / 3) * 3 / 4,
                                                                                   (20 / 3 + 40 / 3) * 3 / 4,
                                                                                   (20 / 3 + 40) * 3 / 4])
    for method in resizing.INTERPOLATIONS:  # a constant image stays constant; weights sum to 1
        flat = np.full((9, 7, 1), 100, np.uint8)
        np.testing.assert_allclose(resizing.fit_image(flat, (5, 11), method), 100, atol=1e-3)
    for method in resizing.EXACT_AT_SAME_SIZE:
        image = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
        assert resizing.fit_image(image, (3, 4), method) is image
    blur = resizing.fit_image(np.eye(5, dtype=np.uint8)[..., None] * 100, (5, 5), "gaussian")
    assert blur.dtype == np.float32 and 0 < blur[0, 1, 0] < 100  # gaussian is not exact at the same size


def test_crop_and_pad_boxes():
    assert resizing.crop_box(100, 200, (50, 50)) == (0, 50, 100, 100)
    assert resizing.crop_box(30, 20, (10, 20)) == (10, 0, 10, 20)
    assert resizing.pad_box(100, 200, (50, 50)) == (12, 0, 25, 50)
    assert resizing.pad_box(1, 200, (50, 50)) == (24, 0, 1, 50)  # at least one row
    padded = resizing.fit_image(np.full((2, 4, 1), 9, np.uint8), (4, 4), "bilinear", pad_to_aspect_ratio=True)
    assert padded[:, :, 0].tolist() == [[0] * 4, [9] * 4, [9] * 4, [0] * 4]




def test_load_npz(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (10, 6, 5, 3), dtype=np.uint8)
    np.savez_compressed(tmp_path / "mine.npz", x_train=x[:8], y_train=(np.arange(8) % 3)[:, None], x_test=x[8:],
                        y_test=np.array([2, 0]), class_names=np.array(["a", "b", "c"]))
    data = load_npz(tmp_path / "mine.npz")
    assert (data.name, data.class_names, data.input_shape, data.num_classes) == ("mine", ("a", "b", "c"), (6, 5, 3), 3)
    (x_train, y_train), (x_test, y_test) = data.load_data()
    np.testing.assert_array_equal(x_train, x[:8])
    np.testing.assert_array_equal(x_test, x[8:])
    assert y_train.shape == (8,) and y_test.tolist() == [2, 0]
    np.savez(tmp_path / "plain.npz", x_train=x[:4, ..., 0], y_train=np.array([0, 4, 1, 1]), x_test=x[:1, ..., 0],
             y_test=np.array([3]))
    assert load_npz(tmp_path / "plain.npz").class_names == ("0", "1", "2", "3", "4")


def save(path: Path, **arrays) -> Path:
    base = {"x_train": np.zeros((4, 5, 5), np.uint8), "y_train": np.arange(4), "x_test": np.zeros((2, 5, 5), np.uint8),
            "y_test": np.arange(2)}
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path


@pytest.mark.parametrize("arrays, message", [
    ({"y_test": None}, r"missing y_test; an image dataset \.npz holds x_train, y_train, x_test and y_test .*Found: "
                       r"x_test, x_train, y_train"),
    ({"x_train": np.zeros((4, 25))}, r"x_train must be images \(N, height, width\) or \(N, height, width, channels\) "
                                     r"with 1, 3 or 4 channels\. Received: shape \(4, 25\)"),
    ({"x_test": np.zeros((2, 5, 5, 2))}, r"x_test must be images .* Received: shape \(2, 5, 5, 2\)"),
    ({"x_test": np.zeros((2, 6, 5))}, r"x_train's images are \(5, 5, 1\) but x_test's \(6, 5, 1\)"),
    ({"y_train": np.arange(3)}, r"x_train holds 4 images but y_train 3 labels"),
    ({"y_train": np.zeros(4)}, r"y_train must be integer class indices\. Received: dtype float64"),
    ({"y_train": np.zeros((4, 2), int)}, r"y_train must be class indices of shape \(N,\) or \(N, 1\)"),
    ({"x_train": np.full((4, 5, 5), "a")}, r"x_train must hold numbers \(uint8 pixels, or floats\)\. Received: dtype <U1"),
    ({"x_train": np.full((4, 5, 5), np.nan)}, r"x_train holds NaN or infinite values"),
    ({"y_test": np.array([0, -1])}, r"labels must be class indices >= 0\. Received: a label -1"),
    ({"class_names": np.array(["a", "b"])}, r"a label 3 but only 2 class_names"),
    ({"class_names": np.array([1, 2])}, r"class_names must be a 1-D array of strings"),
    ({"x_train": np.zeros((0, 5, 5)), "y_train": np.arange(0)}, r"x_train holds no images"),
])
def test_load_npz_errors(tmp_path, arrays, message):
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "d.npz")) + ": " + message):
        load_npz(save(tmp_path / "d.npz", **arrays))


def test_load_npz_refuses_objects_and_other_files(tmp_path):
    objects = np.empty(4, object)
    with pytest.raises(ValueError, match=r"y_train holds Python objects \(dtype object\), which are not loaded"):
        load_npz(save(tmp_path / "o.npz", y_train=objects))
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"x\.npz: not an \.npz archive of arrays \(as np\.savez writes\) \(BadZipFile"):
        load_npz(tmp_path / "x.npz")
    with pytest.raises(FileNotFoundError, match=r"load_npz: no such file: '.*nothing\.npz'"):
        load_npz(tmp_path / "nothing.npz")
    with pytest.raises(TypeError, match=r"`path` must be the path of an \.npz file\. Received: path=3 \(type int\)"):
        load_npz(3)



# -- where a cached dataset's pixels live while a model trains (placement.py) ---------------------------------

GiB = 1024 ** 3


@pytest.mark.parametrize("device, cache, budget, free, expected, reason", [
    ("cpu", 10 * GiB, 0, None, "cpu", "the model trains on the CPU"),                # the host cache as it is
    ("cuda:0", 1 * GiB, 2 * GiB, 8 * GiB, "cuda:0", r"is copied to cuda:0 once"),
    ("cuda:0", 1 * GiB, 2 * GiB, None, "cpu", r"CUDA is not available for cuda:0"),
    ("cuda:0", 3 * GiB, 2 * GiB, 80 * GiB, "cpu", r"exceeds memory_budget \(2.0 GiB\) on cuda:0"),
    ("cuda:0", 1 * GiB, 2 * GiB, 2 * GiB - 1, "cpu", r"more than half of the free memory of cuda:0"),
    ("cuda:0", 1 * GiB, 1 * GiB, 2 * GiB, "cuda:0", "copied"),                        # both limits inclusive
    ("mps", 1 * GiB, 2 * GiB, None, "mps", "copied"),                                 # free memory unknown: budget
    ("meta", 3 * GiB, 2 * GiB, None, "cpu", "exceeds memory_budget"),
])
def test_the_cache_goes_to_the_gpu_when_it_fits_the_budget_and_half_its_free_memory(device, cache, budget, free,
                                                                                     expected, reason):
    from convnet.datasets.local.placement import choose_device
    placement = choose_device(cache, torch.device(device), budget, free)
    assert placement.device == torch.device(expected) and re.search(reason, placement.reason)


def test_choose_device_checks_its_arguments():
    from convnet.datasets.local.placement import choose_device
    with pytest.raises(TypeError, match=r"`device` must be a torch.device. Received: device='cuda'"):
        choose_device(1, "cuda", 1, None)
    with pytest.raises(ValueError, match=r"cache_bytes"):
        choose_device(-1, torch.device("cpu"), 1, None)


def test_cached_batches_are_the_datasets_batches_sliced_as_asked(small):
    """Gathered by torch from the cache, in the dataset's order (from a step, and a rank's slice of each batch),
    uint8 pixels whose values are the float32 batches'."""
    from convnet.datasets.local.placement import CachedBatches
    data = load(small, batch_size=8, shuffle=True, seed=4)
    x, y = data.as_arrays()
    cached = CachedBatches(torch.from_numpy(x), torch.from_numpy(y), data.epoch_order, 8)
    halves = lambda size: slice(size // 2, size)
    for part in (None, halves):
        expected = list(data.iter_from(1, 2, part=part))
        got = list(cached.iter_from(1, 2, part=part))
        assert len(got) == len(expected) == 2
        for (xc, yc), (xe, ye) in zip(got, expected):
            assert xc.dtype == torch.uint8 and np.array_equal(xc.numpy().astype(np.float32), xe)
            assert np.array_equal(yc.numpy(), ye)
    with pytest.raises(ValueError, match=r"`x` and `y` must hold as many samples, on one device"):
        CachedBatches(torch.from_numpy(x), torch.from_numpy(y[:3]), data.epoch_order, 8)


def test_fit_keeps_the_cache_where_the_decision_says(small, monkeypatch):
    """On the CPU the tensors are the dataset's cache itself (no copy); the decision gets the pixels' and labels'
    bytes, the dataset's memory_budget and the free memory; the tensors go to the device it names ("meta" here,
    standing for a GPU: a device with no memory to read back)."""
    import convnet
    from convnet import layers
    from convnet.datasets.local.placement import Placement
    from convnet.training import loop
    data = load(small, batch_size=8, memory_budget=10 ** 6)
    model = convnet.Sequential([layers.Input((28, 28, 1)), layers.Flatten(), layers.Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", device="cpu")
    model.build((28, 28, 1))
    batches, placement = loop._cached_batches(model, data)
    assert placement.device == torch.device("cpu") and batches.x.data_ptr() == data.as_arrays()[0].ctypes.data
    asked = []

    def decide(cache_bytes, device, budget, free_bytes):
        asked.append((cache_bytes, device, budget, free_bytes))
        return Placement(torch.device("meta"), "a stand-in for a GPU")
    monkeypatch.setattr(loop, "choose_device", decide)
    batches, placement = loop._cached_batches(model, data)
    assert asked == [(30 * 28 * 28 + 30 * 8, torch.device("cpu"), 10 ** 6, None)]  # uint8 pixels, int64 labels
    assert batches.x.device.type == batches.y.device.type == "meta" and batches.x.dtype == torch.uint8


LOCAL_MODULES = ["__init__", "decoding", "folder", "listing", "npz", "pipeline", "placement", "resizing"]


@pytest.mark.parametrize("module", LOCAL_MODULES)
def test_docstring_examples_run(module):
    name = "convnet.datasets.local" + ("" if module == "__init__" else f".{module}")
    assert doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS).failed == 0


def test_every_local_module_is_doctested():
    assert {p.stem for p in Path(datasets.local.__file__).parent.glob("*.py")} == set(LOCAL_MODULES)

