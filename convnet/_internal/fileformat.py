"""convnet's container format: a safetensors file whose header metadata carries JSON and digests.

Model files (`models/saving.py`) and training checkpoints (`training/checkpoint.py`) are both written
with `encode` and read with `decode`:
- header metadata "convnet.format" (the kind: "model", "weights", "checkpoint"), "convnet.version",
  "convnet.config" (JSON), "convnet.config_sha256" and "convnet.sha256" (a digest of the tensors), so a
  modified or damaged file is refused; the metadata is written in sorted order, so the same content gives
  the same bytes;
- reading parses JSON and raw tensors only: no pickle, nothing executed.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from typing import Any

import torch

FORMAT_VERSION = 1
_MAX_HEADER = 64 * 2**20  # a header beyond this is not ours


def digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].contiguous()
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # raw bytes, any dtype (bfloat16 too)
    return digest.hexdigest()


def encode(tensors: dict[str, torch.Tensor], kind: str, config: dict[str, Any]) -> bytes:
    """safetensors bytes with convnet's header metadata."""
    from safetensors.torch import save
    text = json.dumps(config)
    metadata = {"convnet.format": kind, "convnet.version": str(FORMAT_VERSION), "convnet.config": text,
                "convnet.config_sha256": hashlib.sha256(text.encode()).hexdigest(), "convnet.sha256": digest(tensors)}
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
    if digest(tensors) != metadata.get("convnet.sha256"):
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


