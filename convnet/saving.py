"""The `.convnet` model file: one safetensors file whose header carries the architecture as JSON.

Layout:
- tensors "<layer name>/<weight name>" in Keras's layouts (a Conv2D kernel (kh, kw, in, out)), float32;
- header metadata "convnet.format" ("model" or "weights"), "convnet.version", "convnet.config" (the
  architecture, training configuration and user metadata, as JSON), "convnet.config_sha256" (a digest of
  that JSON) and "convnet.sha256" (a digest of the tensors), so a modified or damaged file is refused.
  The metadata is written in sorted order: the same model gives the same bytes.

Loading parses JSON and raw tensors only: no pickle, and only registered layer classes are built, so
opening a file someone sent you runs no code from it. Files are written atomically (temporary file,
fsync, rename): a crash or a full disk never leaves a half-written model in place of the old one.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._checks import describe

if TYPE_CHECKING:
    from .models import Sequential

FORMAT_VERSION = 1
_MAX_HEADER = 64 * 2**20  # a header beyond this is not ours


def _check_path(filepath: Any, argument: str = "filepath") -> str:
    if not isinstance(filepath, (str, os.PathLike)):
        raise TypeError(f"`{argument}` must be a path. Received: {argument}={describe(filepath)}")
    return os.fspath(filepath)


def atomic_write(path: str, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder, fsync, then rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(handle, _file_mode(path))  # mkstemp makes 0600; keep the mode open() would give
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    try:  # make the rename itself durable
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError:
        pass


def _file_mode(path: str) -> int:
    """The mode of the file being replaced, else what open() would create under the current umask."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].contiguous()
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # raw bytes, any dtype (bfloat16 too)
    return digest.hexdigest()


def _model_tensors(model: Sequential) -> dict[str, torch.Tensor]:
    tensors = {}
    for layer in model.layers:
        for name, array in zip(layer.weight_names(), layer.get_weights()):
            tensors[f"{layer.name}/{name}"] = torch.from_numpy(np.ascontiguousarray(array, np.float32))
    return tensors


def encode(tensors: dict[str, torch.Tensor], kind: str, config: dict[str, Any]) -> bytes:
    """safetensors bytes with convnet's header metadata."""
    from safetensors.torch import save
    text = json.dumps(config)
    metadata = {"convnet.format": kind, "convnet.version": str(FORMAT_VERSION), "convnet.config": text,
                "convnet.config_sha256": hashlib.sha256(text.encode()).hexdigest(), "convnet.sha256": _digest(tensors)}
    return _sorted_metadata(save(tensors, metadata=metadata))


def _sorted_metadata(data: bytes) -> bytes:
    """The same file with its header metadata in sorted order: safetensors writes it from a hash map, in
    an order that changes from process to process, and the same model should give the same bytes."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to a multiple of 8 bytes
    return struct.pack("<Q", len(text)) + text + data[8 + length:]


def decode(path: str, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a convnet file: (tensors, config). ValueError naming the file for anything wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import load
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: not a file")
    with open(path, "rb") as stream:
        data = stream.read()
    metadata = _read_header(path, data)
    if metadata.get("convnet.format") != kind:
        found = metadata.get("convnet.format")
        raise ValueError(f"{path}: this is a convnet {found} file, not a {kind} file"
                         + ("; use model.load_weights() for weights files" if found == "weights" else ""))
    if metadata.get("convnet.version") != str(FORMAT_VERSION):
        raise ValueError(f"{path}: format version {metadata.get('convnet.version')!r} is not supported by this "
                         f"convnet (version {FORMAT_VERSION})")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path}: damaged tensor data ({error})") from None
    if _digest(tensors) != metadata.get("convnet.sha256"):
        raise ValueError(f"{path}: the weights do not match the file's checksum; the file was modified or damaged")
    text = metadata.get("convnet.config", "")
    expected = metadata.get("convnet.config_sha256")  # absent from files written before it was added
    if expected is not None and hashlib.sha256(str(text).encode("utf-8", "surrogatepass")).hexdigest() != expected:
        raise ValueError(f"{path}: the configuration does not match the file's checksum; the file was modified "
                         f"or damaged")
    try:
        config = json.loads(text)
    except (json.JSONDecodeError, TypeError, RecursionError) as error:
        raise ValueError(f"{path}: the configuration is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: the configuration must be a JSON object")
    return tensors, config


def _read_header(path: str, data: bytes) -> dict[str, str]:
    foreign = f"{path}: not a convnet file"
    if len(data) < 8:
        raise ValueError(f"{foreign} (only {len(data)} bytes; truncated or empty)")
    (length,) = struct.unpack("<Q", data[:8])
    if length > _MAX_HEADER or length == 0 or data[8:9] != b"{":
        raise ValueError(f"{foreign} (no safetensors header at the start; is it a pickle, HDF5 or other file?)")
    if 8 + length > len(data):
        raise ValueError(f"{path}: truncated file (the header announces {length} bytes, the file has "
                         f"{len(data) - 8} after the length field)")
    try:
        header = json.loads(data[8:8 + length])
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly deep nesting
        raise ValueError(f"{foreign} (the header is not JSON)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{foreign} (the header is not a JSON object)")
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or "convnet.format" not in metadata:
        raise ValueError(f"{foreign} (a safetensors file without convnet's metadata; load plain weights with "
                         f"model.load_weights only if they were saved by convnet)")
    for key, entry in header.items():
        offsets = entry.get("data_offsets") if key != "__metadata__" and isinstance(entry, dict) else None
        if isinstance(offsets, list) and offsets:  # anything malformed is left to safetensors to refuse
            end = offsets[-1]
            if isinstance(end, int) and 8 + length + end > len(data):
                raise ValueError(f"{path}: truncated file (tensor {key!r} ends past the end of the file)")
    return metadata


def save_model(model: Sequential, filepath: str | os.PathLike) -> None:
    path = _check_path(filepath)
    if not path.endswith(".convnet"):
        raise ValueError(f"model files end in '.convnet' (e.g. model.save('fashion.convnet')). Received: "
                         f"filepath={path!r}")
    if not model.built:
        raise ValueError("save: the model is not built; give it an input shape or train it first")
    config = {"model": model.get_config(), "compile": model.compile_config(), "metadata": model.metadata}
    try:
        json.dumps(model.metadata)
    except TypeError as error:
        raise ValueError(f"save: model.metadata must be JSON-serialisable ({error})") from None
    atomic_write(path, encode(_model_tensors(model), "model", config))


def check_tensors(path: str, expected: dict[str, tuple[int, ...]], tensors: dict[str, torch.Tensor],
                  what: str = "the architecture") -> None:
    """Every expected tensor present, none extra, each of its shape: else a ValueError naming the file."""
    missing = [key for key in expected if key not in tensors]
    extra = [key for key in tensors if key not in expected]
    if missing or extra:
        raise ValueError(f"{path}: the weights do not match {what} (missing: {missing or 'none'}; "
                         f"unexpected: {extra or 'none'})")
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != tuple(shape):
            raise ValueError(f"{path}: weight {key!r} has shape {tuple(tensors[key].shape)} in the file, {what} "
                             f"expects {tuple(shape)}")


def _keras_shapes(model: Sequential) -> dict[str, tuple[int, ...]]:
    return {f"{layer.name}/{name}": shape for layer in model.layers
            for name, shape in zip(layer.weight_names(), layer.keras_weight_shapes())}


def _assign(model: Sequential, tensors: dict[str, torch.Tensor], path: str) -> None:
    """Check every expected tensor is present with its shape, then set the weights."""
    check_tensors(path, _keras_shapes(model), tensors)
    for layer in model.layers:
        layer.set_weights([tensors[f"{layer.name}/{name}"].float().numpy() for name in layer.weight_names()])


def load_model(filepath: str | os.PathLike, device: Any = "auto", compile: bool = True) -> Sequential:
    from .models import Sequential
    path = _check_path(filepath)
    tensors, config = decode(path, "model")
    try:
        with torch.device("meta"):  # shapes only, no memory: a crafted file cannot make us allocate huge layers
            probe = Sequential.from_config(config.get("model"), device="meta")
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: invalid architecture: {error}") from None
    if not probe.built:
        raise ValueError(f"{path}: the architecture has no input shape")
    check_tensors(path, _keras_shapes(probe), tensors)
    model = Sequential.from_config(config["model"])
    _assign(model, tensors, path)
    model.metadata = config.get("metadata") or {}
    compile_config = config.get("compile")
    if compile and compile_config:
        try:
            model.compile(optimizer=compile_config["optimizer"], loss=compile_config["loss"],
                          metrics=compile_config["metrics"], device=device)
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(f"{path}: invalid training configuration: {error}") from None
    else:
        from .utils import resolve_device
        model.to(resolve_device(device))
    return model


def save_weights(model: Sequential, filepath: str | os.PathLike) -> None:
    path = _check_path(filepath)
    if not model.built:
        raise ValueError("save_weights: the model is not built")
    atomic_write(path, encode(_model_tensors(model), "weights", {"layers": [l.name for l in model.layers]}))


def load_weights(model: Sequential, filepath: str | os.PathLike) -> None:
    path = _check_path(filepath)
    if not model.built:
        raise ValueError("load_weights: the model is not built; give it an input shape first")
    tensors, _ = decode(path, "weights")
    _assign(model, tensors, path)
