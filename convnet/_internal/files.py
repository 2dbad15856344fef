"""Writing files so that a crash or a full disk never leaves half a file, and probing folders before
long work starts.
"""
from __future__ import annotations

import os
import tempfile


def atomic_write(path: str, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder, fsync, then rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(handle, file_mode(path))  # mkstemp makes 0600; keep the mode open() would give
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


def file_mode(path: str) -> int:
    """The mode of the file being replaced, else what open() would create under the current umask."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask



def probe_folder(folder: str, what: str = "folder") -> None:
    """Create `folder` if needed and check a file can be written in it; ValueError naming it otherwise
    (fail now, not after an hour of training)."""
    probe = os.path.join(folder, ".write-test")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(probe, "wb") as stream:
            stream.write(b"ok")
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"the {what} {folder!r} is not writable: {error.strerror or error}") from None
