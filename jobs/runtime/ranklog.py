"""Each rank's own log beside the stage's combined one: `minitron logs RUN STAGE --rank N`.

srun (and torchrun) send every rank's output to one file, which status reads and which stays as it
was. A rank of a stage with several writes the same bytes to RUN_DIR/logs/ too (RunLayout.rank_log):
its stdout and stderr (file descriptors 1 and 2, so what C code, NCCL and faulthandler write is
caught) go through pipes to a child process forked before anything else starts, which copies each
chunk to the original descriptor and to the rank's file. A child, not a thread: what a rank wrote
before it crashed or was killed is still copied, since the child reads until the pipes close. It
ignores the signals that stop a stage (the rank decides how to end; the child ends on end of file).
At exit the rank closes its ends and waits for the child to drain, so the combined log is complete
when srun sees the rank end. Standard library only.
"""

from __future__ import annotations

import atexit
import os
import selectors
import signal
import sys
import time

from jobs.contract import CONTINUE_SIGNAL

CHUNK = 64 * 1024
DRAIN_S = 30.0   # at exit, how long a rank waits for the copy to finish (a process it started may hold a pipe)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _copy(pipes: dict[int, int], log_fd: int) -> None:
    """The child: each pipe's chunks to its original descriptor and to the log, until every pipe is closed."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, getattr(signal, f"SIG{CONTINUE_SIGNAL}")):
        signal.signal(sig, signal.SIG_IGN)
    selector = selectors.DefaultSelector()
    for read_end, original in pipes.items():
        selector.register(read_end, selectors.EVENT_READ, original)
    while selector.get_map():
        for key, _ in selector.select():
            chunk = os.read(key.fd, CHUNK)
            if not chunk:
                selector.unregister(key.fd)
                continue
            for fd in (key.data, log_fd):
                try:
                    _write_all(fd, chunk)
                except OSError:
                    pass  # one destination gone (a full disk): the other still gets the output


def tee_output(path: str) -> bool:
    """From now on, copy this process's stdout and stderr to `path` (appended) as well. False, with a note
    on stderr, when the file cannot be opened: the rank then runs as it would without."""
    try:
        log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        print(f"minitron: no per-rank log ({path}: {exc.strerror or exc})", file=sys.stderr, flush=True)
        return False
    pipes = {}  # read end -> the descriptor it stands in for
    writers = {}
    for original in (1, 2):
        read_end, write_end = os.pipe()
        pipes[read_end], writers[original] = original, write_end
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        for write_end in writers.values():
            os.close(write_end)
        try:
            _copy(pipes, log_fd)
        finally:
            os._exit(0)
    os.close(log_fd)
    saved = {original: os.dup(original) for original in writers}
    for original, write_end in writers.items():
        os.dup2(write_end, original)
        os.close(write_end)
    for read_end in pipes:
        os.close(read_end)
    atexit.register(_drain, child, saved)
    return True


def _drain(child: int, saved: dict[int, int]) -> None:
    """At exit (after an uncaught exception's traceback is printed): close the pipes, wait for the copy."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    for original, fd in saved.items():
        os.dup2(fd, original)  # our write ends close; the child sees end of file once it has read them
        os.close(fd)
    deadline = time.monotonic() + DRAIN_S
    try:
        while os.waitpid(child, os.WNOHANG) == (0, 0) and time.monotonic() < deadline:
            time.sleep(0.01)
    except ChildProcessError:  # reaped already (SIGCHLD ignored)
        pass
