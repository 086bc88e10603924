"""Reading and writing the run's files safely: bounded reads never through a symlink, atomic writes."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any


def read_bounded(path: str | Path, limit: int) -> str:
    """A regular file's text, never through a symlink; OSError if it is anything else or over `limit` bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise OSError(f"{path} is larger than {limit} bytes")
    return b"".join(chunks).decode("utf-8", "replace")


def write_text_atomic(path: str | Path, text: str, mode: int = 0o644) -> None:
    """Temp file in the same directory (O_EXCL), its mode set explicitly, fsync, rename over the
    target (a link there is replaced, never followed), fsync the directory: a reader never sees half a
    file, and the rename survives a power cut."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json_atomic(path: str | Path, obj: Any, mode: int = 0o644) -> None:
    """JSON through write_text_atomic, creating the directory if need be (jobs write into the run's)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n", mode)
