"""The trust model's file helpers (docs/guarantees.md): the launcher's own directories and files.

The registry, the run index and the calibration store live in directories the user owns and nobody
else can write; nothing in them is followed through a symlink (lstat and O_NOFOLLOW); every directory
and file created gets its mode explicitly, whatever the umask.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any, Iterator, Optional

from jobs.contract import read_bounded, write_text_atomic

from .errors import UserError

DIR_MODE, FILE_MODE, SCRIPT_MODE = 0o700, 0o600, 0o700
# What a run needs free in job_dir before anything is queued: its rendered directory, records and first
# log lines. Checkpoints need far more; this floor only keeps a nearly full disk from failing mid-submit.
MIN_FREE_BYTES = 64 * 1024 * 1024


def free_bytes(path: str) -> Optional[int]:
    """Bytes this user may still write on `path`'s file system; None when it cannot be asked."""
    try:
        fs = os.statvfs(path)
    except OSError:
        return None
    return fs.f_bavail * fs.f_frsize


def minitron_home() -> str:
    """The user's own launcher directory: the run index and the calibration store."""
    return os.environ.get("MINITRON_HOME") or os.path.join(os.path.expanduser("~"), ".minitron")


def _refuse_untrusted(path: str, st: os.stat_result, what: str, key: str | None, source: str | None) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise UserError(f"{what} {path} is a symbolic link; minitron never follows links in its registry "
                        f"(point it at a real directory)", file=source, key=key)
    if not stat.S_ISDIR(st.st_mode):
        raise UserError(f"{what} {path} is not a directory", file=source, key=key)
    if st.st_uid != os.getuid():
        raise UserError(f"{what} {path} belongs to another user (uid {st.st_uid}); use a directory of your own",
                        file=source, key=key)
    if st.st_mode & 0o022:
        raise UserError(f"{what} {path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
                        f"fix it with: chmod go-w {path}", file=source, key=key)


def refuse_untrusted_file(path: str, st: os.stat_result, what: str, key: str | None) -> None:
    """A file of the launcher's own: regular, the user's, writable by nobody else (from an lstat)."""
    if stat.S_ISLNK(st.st_mode):
        raise UserError(f"{what} {path} is a symlink; minitron never reads its own files through a link "
                        f"(remove it: the launcher recreates it)", key=key)
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{what} {path} is not a regular file; remove it (the launcher recreates it)", key=key)
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise UserError(f"{what} {path} is not owned by you or is writable by others; remove it "
                        f"(the launcher recreates it with mode {FILE_MODE:o})", key=key)


def read_private_file(path: str, limit: int, what: str, key: str | None) -> Optional[str]:
    """The text of a file the launcher wrote (None when missing); refused when it is not ours
    (`refuse_untrusted_file`); OSError when it is over `limit` bytes or was swapped for a link meanwhile."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}", key=key) from None
    refuse_untrusted_file(path, st, what, key)
    return read_bounded(path, limit)


def private_dir(path: str, what: str, *, create: bool, key: str | None = None, source: str | None = None) -> str:
    """`path` as a directory only this user can write: created 0700 if `create`, else it must exist."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            raise UserError(f"{what} {path} does not exist", file=source, key=key) from None
        try:
            os.makedirs(path, mode=DIR_MODE, exist_ok=True)
            os.chmod(path, DIR_MODE, follow_symlinks=False)
            st = os.lstat(path)
        except OSError as exc:
            raise UserError(f"cannot create {what} {path}: {exc.strerror}", file=source, key=key) from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}", file=source, key=key) from None
    _refuse_untrusted(path, st, what, key, source)
    return path


def write_json(path: str, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n", FILE_MODE)


TAIL_BYTES = 256 * 1024
LOG_BLOCK = 64 * 1024       # one read of a log
LOG_LINE_BYTES = 64 * 1024  # the most of one log line that is kept (its end)


def open_log(path: str) -> int:
    """A stage log's descriptor: never through a symlink, and only a regular file (a FIFO planted in
    its place cannot block the reader). OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return fd


def read_tail(path: str, max_bytes: int = TAIL_BYTES) -> list[str]:
    """The last lines of a log (at most `max_bytes` of it), never through a symlink; [] when unreadable."""
    try:
        fd = open_log(path)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - max_bytes))
        data = handle.read(max_bytes)
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[1:] if size > max_bytes else lines


def tail_offset(fd: int, lines: int, block: int = LOG_BLOCK) -> int:
    """Where the last `lines` (>= 1) lines of a file begin, found reading backwards `block` bytes at a
    time: only newlines are counted, so the cost is what those lines hold, whatever lies before them."""
    end = os.fstat(fd).st_size
    if end and os.pread(fd, 1, end - 1) == b"\n":
        end -= 1  # the last newline ends the last line; it starts none
    while end > 0:
        start = max(0, end - block)
        data = os.pread(fd, end - start, start)
        cut = len(data)
        while (cut := data.rfind(b"\n", 0, cut)) >= 0:
            lines -= 1
            if lines == 0:
                return start + cut + 1
        end = start
    return 0


class LineReader:
    """The lines of a file, perhaps still growing, from `offset` on, read `block` bytes at a time. A line
    longer than `max_bytes` keeps only its end, with the count of bytes dropped: memory stays bounded
    whatever the lines hold."""

    def __init__(self, fd: int, offset: int, max_bytes: int = LOG_LINE_BYTES, block: int = LOG_BLOCK):
        self.fd, self.offset, self.max_bytes, self.block = fd, offset, max_bytes, block
        self._kept, self._dropped = b"", 0  # the line being read

    def lines(self) -> Iterator[tuple[bytes, int]]:
        """(line without its newline, bytes dropped from its start) for each line the file now completes."""
        while data := os.pread(self.fd, self.block, self.offset):
            self.offset += len(data)
            start = 0
            while (end := data.find(b"\n", start)) >= 0:
                self._add(data[start:end])
                yield self._kept, self._dropped
                self._kept, self._dropped = b"", 0
                start = end + 1
            self._add(data[start:])

    def unfinished(self) -> Optional[tuple[bytes, int]]:
        """The last line read when it has no newline yet (the writer is mid-line, or died there)."""
        if not (self._kept or self._dropped):
            return None
        line, self._kept, self._dropped = (self._kept, self._dropped), b"", 0
        return line

    def _add(self, piece: bytes) -> None:
        kept = self._kept + piece
        if len(kept) > self.max_bytes:
            self._dropped += len(kept) - self.max_bytes
            kept = kept[-self.max_bytes:]
        self._kept = kept
