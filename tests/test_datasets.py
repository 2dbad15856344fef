"""Tests for convnet.datasets: the local Fashion-MNIST copy, IDX validation, downloads from a local HTTP
server, the sample photos and load_image. No network: downloads go to a server on 127.0.0.1."""
from __future__ import annotations

import doctest
import functools
import gzip
import hashlib
import http.server
import importlib
import importlib.util
import io
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from convnet import datasets
from convnet.datasets import (
    FILE_NAMES,
    DatasetNotFoundError,
    DownloadError,
    IdxDataset,
    download,
    load_image,
    read_idx,
)

TRAIN, TEST = 6, 4  # images per split in the tiny datasets


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """The IDX encoding of `array` (big-endian, as the format says)."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def make_files(folder: Path, fill: int = 0) -> dict[str, np.ndarray]:
    """The four files of a tiny 2-class dataset in `folder`; `fill` marks which folder a load came from."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(fill)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (TRAIN, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": np.array([0, 1] * (TRAIN // 2), dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (TEST, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": np.array([1, 0] * (TEST // 2), dtype=np.uint8),
    }
    arrays["train-images-idx3-ubyte.gz"][0, 0, 0] = fill
    for name, array in arrays.items():
        write_idx(folder / name, array)
    return arrays


def sha256_of(folder: Path) -> dict[str, str]:
    return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in FILE_NAMES}


def tiny(folder: Path | None = None, mirrors: tuple[str, ...] = ("http://127.0.0.1:9/",)) -> IdxDataset:
    """A 2-class dataset with TRAIN / TEST images; checksums from `folder`'s files when given."""
    sha256 = sha256_of(folder) if folder else {f: "0" * 64 for f in FILE_NAMES}
    return IdxDataset("tiny", ["no", "yes"], sha256=sha256, mirrors=mirrors, train_size=TRAIN, test_size=TEST)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Downloads go to a temporary cache, never through a proxy, never to the real mirrors."""
    monkeypatch.setenv("CONVNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CONVNET_MIRROR", raising=False)
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """(folder served, base URL) of an HTTP server on 127.0.0.1."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def dead_url():
    """A URL on a port nobody listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def fashion():
    """The local Fashion-MNIST copy, loaded once (about a second)."""
    root = os.environ.get("CONVNET_DATA")
    if not root:
        pytest.skip("CONVNET_DATA is not set; point it at the folder holding fashion-mnist/ (../shared/data)")
    if not (Path(root) / "fashion-mnist").is_dir():
        pytest.skip(f"CONVNET_DATA={root} has no fashion-mnist/ folder")
    return datasets.fashion_mnist.load_data(download=False)


def test_local_fashion_mnist(fashion):
    (x_train, y_train), (x_test, y_test) = fashion
    assert x_train.shape == (60000, 28, 28) and y_train.shape == (60000,)
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {np.dtype(np.uint8)}
    assert np.bincount(y_train).tolist() == [6000] * 10  # Fashion-MNIST is balanced
    assert np.bincount(y_test).tolist() == [1000] * 10
    assert x_train.mean() == pytest.approx(72.94, abs=0.005)  # the data README's figures
    assert x_test.mean() == pytest.approx(73.15, abs=0.005)
    assert x_train.flags.writeable


def test_local_copy_is_the_same_through_data_dir(fashion):
    (_, y_train), (x_test, _) = datasets.fashion_mnist.load_data(data_dir=os.environ["CONVNET_DATA"])
    np.testing.assert_array_equal(y_train, fashion[0][1])
    np.testing.assert_array_equal(x_test, fashion[1][0])


def test_fashion_mnist_attributes():
    ds = datasets.fashion_mnist
    assert ds.name == "fashion-mnist" and ds.num_classes == 10 and ds.input_shape == (28, 28, 1)
    assert ds.class_names == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                              "Sneaker", "Bag", "Ankle boot")
    assert datasets.mnist.name == "mnist" and datasets.mnist.class_names == tuple("0123456789")
    assert repr(ds) == "IdxDataset('fashion-mnist': 10 classes, 60000 train and 10000 test images of 28x28)"


@pytest.mark.parametrize("name", datasets.list_datasets("*mnist"))
def test_registered_datasets(name):
    ds = datasets.get_dataset(name)
    assert ds.name == name and ds.num_classes == len(ds.class_names) == 10
    assert (ds.train_size, ds.test_size, ds.input_shape) == (60000, 10000, (28, 28, 1))
    assert set(ds.sha256) == set(FILE_NAMES) and all(m.startswith("https://") for m in ds.mirrors[:1])


def test_registry_lookup():
    assert datasets.list_datasets() == ["fashion-mnist", "mnist", "shapes"]
    assert datasets.list_datasets("fash*") == ["fashion-mnist"]
    assert datasets.get_dataset("Fashion_MNIST") is datasets.fashion_mnist
    with pytest.raises(ValueError, match=r"`name`: unknown dataset 'fashon-mnist'\. Did you mean 'fashion-mnist'"
                                         r".*Available: fashion-mnist, mnist, shapes\."):
        datasets.get_dataset("fashon-mnist")
    with pytest.raises(TypeError, match=r"`name` must be a string\. Received: name=3 \(type int\)"):
        datasets.get_dataset(3)


def test_data_dir_holding_the_files(tmp_path):
    arrays = make_files(tmp_path / "mine")
    (x_train, y_train), (x_test, y_test) = tiny().load_data(data_dir=tmp_path / "mine")
    np.testing.assert_array_equal(x_train, arrays["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte.gz"])
    assert x_train.shape == (TRAIN, 28, 28) and y_train.shape == (TRAIN,) and x_test.shape == (TEST, 28, 28)


def test_data_dir_parent_form(tmp_path):
    make_files(tmp_path / "tiny", fill=7)
    (x_train, _), _ = tiny().load_data(data_dir=str(tmp_path))
    assert x_train[0, 0, 0] == 7


def test_lookup_order(tmp_path, monkeypatch):
    make_files(tmp_path / "given", fill=1)
    make_files(tmp_path / "env" / "tiny", fill=2)
    make_files(tmp_path / "cache" / "tiny", fill=3)
    monkeypatch.setenv("CONVNET_DATA", str(tmp_path / "env"))
    ds = tiny()
    assert ds.load_data(data_dir=tmp_path / "given")[0][0][0, 0, 0] == 1
    assert ds.load_data(download=False)[0][0][0, 0, 0] == 2
    monkeypatch.setenv("CONVNET_DATA", str(tmp_path / "elsewhere"))
    assert ds.load_data(download=False)[0][0][0, 0, 0] == 3
    monkeypatch.delenv("CONVNET_DATA")
    assert ds.load_data(download=False)[0][0][0, 0, 0] == 3
    assert ds.cache_dir == tmp_path / "cache" / "tiny"


def test_default_cache_folder(monkeypatch):
    monkeypatch.delenv("CONVNET_CACHE")
    assert datasets.mnist.cache_dir == Path.home() / ".cache" / "convnet" / "mnist"


def test_data_dir_without_the_files(tmp_path):
    make_files(tmp_path / "partial").pop("t10k-labels-idx1-ubyte.gz")
    (tmp_path / "partial" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        tiny().load_data(data_dir=tmp_path / "partial")
    message = str(info.value)
    assert f"{tmp_path / 'partial'} (missing t10k-labels-idx1-ubyte.gz)" in message
    assert f"{tmp_path / 'partial' / 'tiny'} (does not exist)" in message
    assert "`data_dir` was given, so nothing else was searched and nothing downloaded." in message


def corrupt(kind: str, folder: Path) -> Path:
    """Spoil one file of a good tiny dataset in `folder` the way `kind` says; returns its path."""
    make_files(folder)
    images, labels = folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz"
    if kind == "truncated gzip":
        images.write_bytes(images.read_bytes()[:-100])
    elif kind == "flipped gzip byte":
        data = bytearray(images.read_bytes())
        data[len(data) // 2] ^= 0xFF
        images.write_bytes(bytes(data))
    elif kind == "short content":
        images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:1000]))
    elif kind == "trailing bytes":
        images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes()) + b"\0"))
    elif kind == "wrong magic":
        write_idx(images, np.zeros((TRAIN,), np.uint8))
    elif kind == "wrong count":
        write_idx(images, np.zeros((TRAIN - 1, 28, 28), np.uint8))
    elif kind == "wrong image size":
        write_idx(images, np.zeros((TRAIN, 28, 27), np.uint8))
    elif kind == "labels out of range":
        write_idx(labels, np.array([0, 1, 0, 2, 1, 0], np.uint8))
        return labels
    elif kind == "not gzip":
        images.write_bytes(b"this is not a gzip file at all")
    elif kind == "gzip of garbage":
        images.write_bytes(gzip.compress(b"garbage, not an IDX file"))
    return images


CORRUPTIONS = {
    "truncated gzip": r"the gzip stream ends early \(the file is truncated\)",
    "flipped gzip byte": r"corrupt gzip data",
    "short content": r"expected 4720 bytes after decompression, found 1000 \(truncated or corrupt\)",
    "trailing bytes": r"expected 4720 bytes after decompression, found more than 4720",
    "wrong magic": r"expected magic number 2051 \(unsigned bytes in 3 dimensions: images\), found 2049",
    "wrong count": r"expected images of shape \(6, 28, 28\), the header says \(5, 28, 28\)",
    "wrong image size": r"expected images of shape \(6, 28, 28\), the header says \(6, 28, 27\)",
    "labels out of range": r"labels must be in \[0, 2\) \(2 classes\), found 2 at index 3",
    "not gzip": r"not a gzip file \(it does not start with the gzip magic bytes 1f 8b\)",
    "gzip of garbage": r"not an IDX file: expected 0x0000, a data type among 0x08, .*found header bytes 0x67617262",
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupt_files_are_refused(tmp_path, kind):
    path = corrupt(kind, tmp_path / "bad")
    pattern = re.escape(str(path)) + ": " + CORRUPTIONS[kind] + r".*; delete it or provide a good copy$"
    with pytest.raises(ValueError, match=pattern):
        tiny().load_data(data_dir=tmp_path / "bad")


def test_the_example_message_for_a_truncated_standard_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((60000, 28, 28), np.uint8))[:1000]))
    with pytest.raises(ValueError, match=re.escape(f"{path}: expected 47040016 bytes after decompression, "
                                                   f"found 1000 (truncated or corrupt); delete it or provide "
                                                   f"a good copy")):
        datasets.fashion_mnist.read_file(path)


@pytest.mark.parametrize("code, dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16),
                                         (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)])
def test_read_idx_round_trip(tmp_path, code, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype) if code != 0x08 else np.arange(24, dtype=dtype)
    path = tmp_path / "a.idx"
    path.write_bytes(idx_bytes(array, code))
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)
    np.testing.assert_array_equal(read_idx(io.BytesIO(gzip.compress(idx_bytes(array, code)))), array)


def test_read_idx_errors(tmp_path):
    with pytest.raises(ValueError, match=r"<file object>: expected at least a 4-byte IDX header, found 2 bytes"):
        read_idx(io.BytesIO(b"\0\0"))
    with pytest.raises(ValueError, match=r"expected a 12-byte IDX header, found 8 bytes"):
        read_idx(io.BytesIO(bytes([0, 0, 8, 2, 0, 0, 0, 1])))
    with pytest.raises(ValueError, match=r"not an IDX file: .*found header bytes 0x00000A01"):
        read_idx(io.BytesIO(bytes([0, 0, 0x0A, 1, 0, 0, 0, 0])))
    huge = bytes([0, 0, 8, 3]) + b"\xff" * 12 + b"tiny"  # declares ~2**96 bytes: refused without allocating
    with pytest.raises(ValueError, match=rf"expected {16 + (2**32 - 1) ** 3} bytes, found 20 \(truncated"):
        read_idx(io.BytesIO(huge))
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing.idx")
    with pytest.raises(TypeError, match=r"`source` must be a path or a binary file object\. Received: source=3"):
        read_idx(3)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.booleans())
def test_read_idx_fuzz_gives_an_array_or_a_value_error(data, compress):
    try:
        out = read_idx(io.BytesIO(gzip.compress(data) if compress else data))
    except ValueError:
        return
    assert isinstance(out, np.ndarray)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=4), st.data())
def test_read_idx_round_trip_any_shape(shape, data):
    array = np.array(data.draw(st.lists(st.integers(0, 255), min_size=int(np.prod(shape)),
                                        max_size=int(np.prod(shape)))), np.uint8).reshape(shape)
    np.testing.assert_array_equal(read_idx(io.BytesIO(idx_bytes(array))), array)


def test_download_lands_in_the_cache(tmp_path, server, capsys):
    root, url = server
    arrays = make_files(root)
    ds = tiny(root, mirrors=(url,))
    (x_train, _), (_, y_test) = ds.load_data()
    np.testing.assert_array_equal(x_train, arrays["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte.gz"])
    assert sorted(p.name for p in ds.cache_dir.iterdir()) == sorted(FILE_NAMES)  # no temporary files left
    for name in FILE_NAMES:
        assert (ds.cache_dir / name).read_bytes() == (root / name).read_bytes()
    assert capsys.readouterr().err.count(f"Downloading {url}") == 4  # one line per file (not a terminal)
    for name in FILE_NAMES:  # now cached: the server is not needed
        (root / name).unlink()
    np.testing.assert_array_equal(ds.load_data(download=False)[0][0], x_train)


def test_download_progress_on_a_terminal(server, monkeypatch):
    root, url = server
    make_files(root)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    tiny(root, mirrors=(url,)).load_data()
    size = (root / "t10k-labels-idx1-ubyte.gz").stat().st_size / 1e6
    assert (f"\rDownloading {url}t10k-labels-idx1-ubyte.gz: {size:.1f} / {size:.1f} MB [{'#' * 20}] 100%\n"
            in sys.stderr.getvalue())


def test_progress_bar_figures(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    progress = download.Progress("http://x/f.gz")
    progress.total = 4_000_000
    progress.update(1_000_000)
    assert sys.stderr.getvalue() == "\rDownloading http://x/f.gz: 1.0 / 4.0 MB [#####...............]  25%"
    progress.update(10_000_000)  # pooch counts whole chunks: the last one overshoots
    assert sys.stderr.getvalue().endswith(": 4.0 / 4.0 MB [####################] 100%")
    unknown = download.Progress("http://x/g.gz")
    unknown.update(2_500_000)
    assert sys.stderr.getvalue().endswith("\rDownloading http://x/g.gz: 2.5 MB")


def test_read_idx_leaves_a_callers_file_open(tmp_path):
    path = write_idx(tmp_path / "a.gz", np.arange(5, dtype=np.uint8))
    with open(path, "rb") as f:
        assert read_idx(f).tolist() == [0, 1, 2, 3, 4]
        assert not f.closed


def test_download_falls_back_to_the_next_mirror(server, dead_url):
    root, url = server
    make_files(root)
    ds = tiny(root, mirrors=(dead_url, url))
    assert ds.load_data()[0][0].shape == (TRAIN, 28, 28)


def test_mirror_override_by_environment(server, monkeypatch):
    root, url = server
    make_files(root)
    monkeypatch.setenv("CONVNET_MIRROR", url)
    assert tiny(root).load_data()[1][1].shape == (TEST,)  # the dataset's own mirror is dead


def test_bad_checksum_is_rejected(server):
    root, url = server
    make_files(root)
    sha256 = sha256_of(root) | {"t10k-images-idx3-ubyte.gz": "ab" * 32}
    ds = IdxDataset("tiny", ["no", "yes"], sha256=sha256, mirrors=[url], train_size=TRAIN, test_size=TEST)
    actual = hashlib.sha256((root / "t10k-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    with pytest.raises(DatasetNotFoundError, match=re.escape(
            f"{url}t10k-images-idx3-ubyte.gz: the SHA-256 of the downloaded bytes is {actual}, "
            f"expected {'ab' * 32}; the file was discarded")):
        ds.load_data()
    assert sorted(os.listdir(ds.cache_dir)) == sorted(FILE_NAMES[:2])  # the two before it; no temporary file


def tamper(path: Path) -> None:
    """Change one byte of `path`, so that its SHA-256 no longer matches."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_wrong_bytes_from_a_mirror_fall_back_to_the_next(server):
    """pooch refuses a file whose SHA-256 is wrong; the next mirror's good copy is the one kept."""
    root, url = server
    arrays = make_files(root / "good")
    make_files(root / "bad")
    tamper(root / "bad" / "t10k-images-idx3-ubyte.gz")
    ds = tiny(root / "good", mirrors=(f"{url}bad/", f"{url}good/"))
    (_, _), (x_test, _) = ds.load_data()
    np.testing.assert_array_equal(x_test, arrays["t10k-images-idx3-ubyte.gz"])
    assert sorted(os.listdir(ds.cache_dir)) == sorted(FILE_NAMES)  # no temporary file left
    for name in FILE_NAMES:
        assert (ds.cache_dir / name).read_bytes() == (root / "good" / name).read_bytes()


def test_fetch_lists_every_failed_mirror_and_keeps_nothing(server, dead_url, tmp_path):
    root, url = server
    make_files(root / "bad")
    name = "train-labels-idx1-ubyte.gz"
    good = hashlib.sha256((root / "bad" / name).read_bytes()).hexdigest()
    tamper(root / "bad" / name)
    wrong = hashlib.sha256((root / "bad" / name).read_bytes()).hexdigest()
    folder = tmp_path / "into"
    with pytest.raises(DownloadError) as info:
        download.fetch(name, folder, good, [f"{url}bad/", f"{url}missing/", dead_url])
    assert info.value.failures == [
        f"{url}bad/{name}: the SHA-256 of the downloaded bytes is {wrong}, expected {good}; the file was discarded",
        f"{url}missing/{name}: HTTP Error 404: File not found",
        f"{dead_url}{name}: ConnectionRefusedError: [Errno 111] Connection refused",
    ]
    assert str(info.value).startswith(f"Downloading {name} failed:\n  - {url}bad/{name}: the SHA-256")
    assert isinstance(info.value, OSError) and list(folder.iterdir()) == []


class CutShort(QuietHandler):
    """Announces the whole file, sends half of it, and hangs up."""

    def do_GET(self):
        data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2])
        self.wfile.flush()
        self.close_connection = True


def test_a_download_cut_short_leaves_no_partial_file(server, tmp_path):
    root, url = server
    arrays = make_files(root)
    cut = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(CutShort, directory=str(root)))
    threading.Thread(target=cut.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        cut_url = f"http://127.0.0.1:{cut.server_address[1]}/"
        name = "train-images-idx3-ubyte.gz"
        with pytest.raises(DownloadError, match=re.escape(f"{cut_url}{name}: ")):
            download.fetch(name, tmp_path / "into", sha256_of(root)[name], [cut_url])
        assert list((tmp_path / "into").iterdir()) == []  # pooch's temporary file is gone, nothing else came
        ds = tiny(root, mirrors=(cut_url, url))
        np.testing.assert_array_equal(ds.load_data()[0][0], arrays[name])
        assert sorted(os.listdir(ds.cache_dir)) == sorted(FILE_NAMES)
    finally:
        cut.shutdown()
        cut.server_close()


def test_a_stalled_mirror_times_out(server, monkeypatch):
    """A server that accepts the connection and never answers counts as down after DOWNLOAD_TIMEOUT_S."""
    root, url = server
    make_files(root)
    monkeypatch.setattr(download, "DOWNLOAD_TIMEOUT_S", 0.2)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshakes; nobody ever reads or answers
        stalled = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        with pytest.raises(DownloadError, match=re.escape(f"{stalled}t10k-labels-idx1-ubyte.gz: ") + r".*timed out"):
            download.fetch("t10k-labels-idx1-ubyte.gz", root / "unused", "0" * 64, [stalled])
        assert tiny(root, mirrors=(stalled, url)).load_data()[1][1].shape == (TEST,)


def test_http_error_is_reported(server, tmp_path):
    _, url = server  # serves an empty folder
    make_files(tmp_path / "files")
    with pytest.raises(DatasetNotFoundError, match=r"train-images-idx3-ubyte.gz: HTTP Error 404"):
        tiny(tmp_path / "files", mirrors=(url,)).load_data()


def test_server_down_says_how_to_provide_the_files(dead_url, monkeypatch, tmp_path):
    monkeypatch.delenv("CONVNET_DATA", raising=False)
    ds = tiny(mirrors=(dead_url,))
    with pytest.raises(DatasetNotFoundError) as info:
        ds.load_data()
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for expected in [*FILE_NAMES, "$CONVNET_DATA/tiny (CONVNET_DATA is not set)",
                     f"{tmp_path / 'cache' / 'tiny'} (missing train-images-idx3-ubyte.gz",
                     f"Downloading train-images-idx3-ubyte.gz failed:\n  - {dead_url}train-images-idx3-ubyte.gz: ",
                     "Connection refused", "pass data_dir=", "set CONVNET_DATA",
                     f"copy the four files into {tmp_path / 'cache' / 'tiny'}/", "load_data(download=True)"]:
        assert expected in message


def test_offline_by_patching_the_fetch_seam(monkeypatch, tmp_path):
    """`download.fetch` is the one place that touches the network: patching it is how a test goes offline."""
    def offline(filename, folder, sha256, bases):
        raise DownloadError(filename, [f"{base}{filename}: offline (test)" for base in bases])

    monkeypatch.delenv("CONVNET_DATA", raising=False)
    monkeypatch.setattr(download, "fetch", offline)
    with pytest.raises(DatasetNotFoundError, match=r"Downloading train-images-idx3-ubyte.gz failed:\n"
                                                   r"  - http://127.0.0.1:9/.*: offline \(test\)"):
        tiny(mirrors=("http://127.0.0.1:9/",)).load_data()  # a dead port, should the patch miss
    assert not (tmp_path / "cache" / "tiny").exists()


def test_download_false(monkeypatch):
    monkeypatch.setenv("CONVNET_MIRROR", "http://127.0.0.1:9/")  # never contacted
    with pytest.raises(DatasetNotFoundError, match=r"(?s)mnist: the files .* were not found\..*"
                                                   r"Nothing was downloaded: download=False\."):
        datasets.mnist.load_data(download=False)


def test_bad_cached_file_is_fetched_again(server):
    root, url = server
    arrays = make_files(root)
    ds = tiny(root, mirrors=(url,))
    bad = corrupt("short content", ds.cache_dir)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        ds.load_data(download=False)
    with pytest.warns(UserWarning, match=re.escape(str(bad)) + r": expected 4720 bytes .* downloading it again") as caught:
        (x_train, _), _ = ds.load_data()
    assert caught[0].filename == __file__  # the warning points at the caller of load_data
    np.testing.assert_array_equal(x_train, arrays["train-images-idx3-ubyte.gz"])
    assert bad.read_bytes() == (root / bad.name).read_bytes()


def test_dataset_arguments_are_checked(tmp_path):
    ds = tiny()
    with pytest.raises(TypeError, match=r"`data_dir` must be a path \(str or os.PathLike\) or None\. "
                                        r"Received: data_dir=3 \(type int\)"):
        ds.load_data(data_dir=3)
    with pytest.raises(TypeError, match=r"`download` must be True or False\. Received: download='yes'"):
        ds.load_data(download="yes")
    good = dict(class_names=["a", "b"], sha256={f: "0" * 64 for f in FILE_NAMES}, mirrors=["https://x/"])
    with pytest.raises(ValueError, match=r"`name` must be lower-case .* Received: name='\.\./up'"):
        IdxDataset("../up", **good)
    with pytest.raises(ValueError, match=r"`class_names` must hold 2 to 256 distinct names .* Received: "
                                         r"class_names=\['a', 'a'\]"):
        IdxDataset("x", **good | {"class_names": ["a", "a"]})
    with pytest.raises(TypeError, match=r"`class_names\[1\]` must be a string\. Received: class_names\[1\]=2"):
        IdxDataset("x", **good | {"class_names": ["a", 2]})
    with pytest.raises(ValueError, match=r"`sha256` must map each of train-images-idx3-ubyte.gz, "):
        IdxDataset("x", **good | {"sha256": {}})
    with pytest.raises(ValueError, match=r"`sha256` values must be 64 hexadecimal digits\. "
                                         r"Received: sha256\['train-images-idx3-ubyte.gz'\]='xyz'"):
        IdxDataset("x", **good | {"sha256": good["sha256"] | {"train-images-idx3-ubyte.gz": "xyz"}})
    with pytest.raises(ValueError, match=r"`mirrors\[0\]` must be an http:// or https:// base URL\. "
                                         r"Received: mirrors\[0\]='ftp://x/'"):
        IdxDataset("x", **good | {"mirrors": ["ftp://x/"]})
    with pytest.raises(ValueError, match=r"`mirrors` must hold at least one base URL"):
        IdxDataset("x", **good | {"mirrors": []})
    with pytest.raises(ValueError, match=r"`train_size` must be >= 1\. Received: train_size=0"):
        IdxDataset("x", **good, train_size=0)


@pytest.mark.parametrize("name", datasets.list_sample_images())
def test_load_sample_image(name):
    image = datasets.load_sample_image(name)
    assert image.shape == (427, 640, 3) and image.dtype == np.uint8
    assert 0 < image.mean() < 255


def test_load_sample_image_errors(monkeypatch):
    with pytest.raises(ValueError, match=r"`name`: unknown sample image 'china\.png'\. Did you mean 'china\.jpg'\?"
                                         r" Available: china\.jpg, flower\.jpg\."):
        datasets.load_sample_image("china.png")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"scikit-learn, which is not installed: pip install scikit-learn"):
        datasets.load_sample_image("china.jpg")


def test_import_stays_light():
    code = ("import sys, convnet.datasets as d; d.load_sample_image('china.jpg'); "
            "print(sorted(m for m in ('sklearn', 'matplotlib', 'pooch', 'requests') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


RGB = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)


def test_load_image_png_round_trip(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(RGB).save(path)
    np.testing.assert_array_equal(load_image(path), RGB)
    np.testing.assert_array_equal(load_image(str(path)), RGB)


def test_load_image_jpeg_round_trip(tmp_path):
    x, y = np.meshgrid(np.arange(40) * 6, np.arange(30) * 8)  # (30, 40) each: a smooth gradient
    smooth = np.stack([x, y, np.full((30, 40), 99)], -1)  # (30, 40, 3)
    path = tmp_path / "a.jpg"
    Image.fromarray(smooth.astype(np.uint8)).save(path, quality=95)
    image = load_image(path)
    assert image.shape == (30, 40, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - smooth).mean() < 3


def test_load_image_channels():
    gray = RGB[..., 0]
    assert load_image(encode(Image.fromarray(gray))).shape == (30, 40, 1)
    np.testing.assert_array_equal(load_image(encode(Image.fromarray(gray)), channels=3), np.stack([gray] * 3, -1))
    as_gray = load_image(encode(Image.fromarray(RGB)), channels=1)
    np.testing.assert_array_equal(as_gray[..., 0], np.asarray(Image.fromarray(RGB).convert("L")))
    assert load_image(encode(Image.fromarray(RGB).convert("1")), channels=1).max() in (0, 255)
    palette = Image.fromarray(RGB).convert("P")
    np.testing.assert_array_equal(load_image(encode(palette)), np.asarray(palette.convert("RGB")))
    cmyk = load_image(encode(Image.fromarray(RGB).convert("CMYK"), "JPEG"))
    assert cmyk.shape == (30, 40, 3)


def test_load_image_alpha_is_composited_onto_black():
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = [[0, 128, 255], [255, 255, 255]]
    image = load_image(encode(Image.fromarray(rgba, "RGBA")))
    assert image.shape == (2, 3, 3)
    assert image[0, :, 0].tolist() == [0, 100, 200]  # 200 * alpha / 255, rounded
    la = load_image(encode(Image.fromarray(rgba[..., [0, 3]], "LA")))
    assert la.shape == (2, 3, 1) and la[0, :, 0].tolist() == [0, 100, 200]
    transparent = Image.fromarray(RGB).convert("P")
    transparent.info["transparency"] = int(np.asarray(transparent)[0, 0])
    assert load_image(encode(transparent))[0, 0].tolist() == [0, 0, 0]


def test_load_image_16_bit():
    values = np.array([[0, 257, 65535]], np.uint16)
    image = load_image(encode(Image.fromarray(values)))
    assert image.shape == (1, 3, 1) and image[0, :, 0].tolist() == [0, 1, 255]


def test_load_image_refuses_unsupported_modes():
    floats = encode(Image.fromarray(np.ones((3, 4), np.float32)), "TIFF")
    with pytest.raises(ValueError, match=r"^<\d+ bytes>: unsupported image mode 'F'; expected a grayscale, RGB, "):
        load_image(floats)


def test_load_image_exif_orientation():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    image = load_image(encode(Image.fromarray(RGB), "JPEG", exif=exif.tobytes()))
    assert image.shape == (40, 30, 3)


def test_load_image_resize():
    assert load_image(encode(Image.fromarray(RGB)), size=(10, 20)).shape == (10, 20, 3)
    assert load_image(encode(Image.fromarray(RGB)), size=28, channels=1).shape == (28, 28, 1)
    flat = np.full((30, 40, 3), 77, np.uint8)
    assert set(load_image(encode(Image.fromarray(flat)), size=(7, 9)).ravel()) == {77}


def test_load_image_sources(tmp_path):
    data = encode(Image.fromarray(RGB))
    for source in (data, bytearray(data), memoryview(data), io.BytesIO(data)):
        np.testing.assert_array_equal(load_image(source), RGB)

    class Unseekable(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, buffer):
            chunk = data[self.tell_:self.tell_ + len(buffer)]
            buffer[:len(chunk)] = chunk
            self.tell_ += len(chunk)
            return len(chunk)

        tell_ = 0

        def seekable(self):
            return False

    np.testing.assert_array_equal(load_image(Unseekable()), RGB)
    with open(tmp_path / "a.png", "wb") as f:
        f.write(data)
    with open(tmp_path / "a.png", "rb") as f:
        np.testing.assert_array_equal(load_image(f), RGB)


def one_pixel_png(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height (the IHDR CRC recomputed, so it opens)."""
    data = bytearray(encode(Image.new("L", (1, 1))))
    at = data.index(b"IHDR")
    data[at + 4:at + 12] = struct.pack(">II", width, height)
    data[at + 17:at + 21] = struct.pack(">I", zlib.crc32(bytes(data[at:at + 17])))
    return bytes(data)


def test_load_image_refuses_bad_input(tmp_path):
    png, jpeg = encode(Image.fromarray(RGB)), encode(Image.fromarray(RGB), "JPEG")
    with pytest.raises(ValueError, match=r"^<\d+ bytes>: corrupt or truncated image \(OSError: image file is "
                                         r"truncated"):
        load_image(png[:len(png) // 2])
    with pytest.raises(ValueError, match=r"corrupt or truncated image \(OSError: image file is truncated"):
        load_image(jpeg[:len(jpeg) // 2])
    with pytest.raises(ValueError, match=r"^<100 bytes>: not an image Pillow can read \(UnidentifiedImageError"):
        load_image(np.random.default_rng(1).integers(0, 256, 100, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=r"not an image Pillow can read"):
        load_image(one_pixel_png(0, 1))  # zero width: Pillow refuses it as a PNG
    with pytest.raises(ValueError, match=r"^<0 bytes>: empty input \(0 bytes\), not an image"):
        load_image(b"")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'empty.png'}: the file is empty (0 bytes)")):
        load_image(tmp_path / "empty.png")
    with pytest.raises(FileNotFoundError, match=re.escape(f"load_image: no such file: '{tmp_path / 'no.png'}'")):
        load_image(tmp_path / "no.png")
    with pytest.raises(ValueError, match=r"is a folder, not an image file"):
        load_image(tmp_path)
    (tmp_path / "cut.jpg").write_bytes(jpeg[:200])  # cut inside the header: Pillow fails to open it
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "cut.jpg")) + r": not an image Pillow can read "
                                                                                r"\(OSError: Truncated File Read\)"):
        load_image(tmp_path / "cut.jpg")


def test_load_image_refuses_decompression_bombs():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not leak
        with pytest.raises(ValueError, match=r"^<\d+ bytes>: the image declares 10000x10000 = 100000000 pixels, "
                                             r"more than max_pixels=67108864 \(a possible decompression bomb\)"):
            load_image(one_pixel_png(10000, 10000))
        with pytest.raises(ValueError, match=r"refused as a possible decompression bomb: Image size "
                                             r"\(10000000000 pixels\) exceeds limit"):
            load_image(one_pixel_png(100000, 100000), max_pixels=None)
        with pytest.raises(ValueError, match=r"the image declares 40x30 = 1200 pixels, more than max_pixels=1000"):
            load_image(encode(Image.fromarray(RGB)), max_pixels=1000)


def test_load_image_arguments_are_checked():
    png = encode(Image.fromarray(RGB))
    with pytest.raises(ValueError, match=r"`channels` must be 1 \(grayscale\), 3 \(RGB\) or None\. "
                                         r"Received: channels=2"):
        load_image(png, channels=2)
    with pytest.raises(TypeError, match=r"`channels` must be an integer\. Received: channels='rgb'"):
        load_image(png, channels="rgb")
    with pytest.raises(ValueError, match=r"`size` values must be >= 1\. Received: size=\(0, 5\)"):
        load_image(png, size=(0, 5))
    with pytest.raises(ValueError, match=r"`size` must be an integer or a sequence of 2 integers"):
        load_image(png, size=(1, 2, 3))
    with pytest.raises(ValueError, match=r"`max_pixels` must be >= 1\. Received: max_pixels=0"):
        load_image(png, max_pixels=0)
    with pytest.raises(TypeError, match=r"`source` must be a path, bytes or a binary file object\. "
                                        r"Received: source=3 \(type int\)"):
        load_image(3)


@pytest.mark.parametrize("module", ["__init__", "base", "download", "idx", "idx_dataset", "images", "png", "registry",
                                    "shapes", "streams"])
def test_docstring_examples_run(module):
    name = "convnet.datasets" + ("" if module == "__init__" else f".{module}")
    assert doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS).failed == 0


def test_every_module_of_the_package_is_doctested():
    folder = Path(datasets.__file__).parent
    modules = {p.stem for p in folder.glob("*.py")}
    assert modules == set(test_docstring_examples_run.pytestmark[0].args[1])
