"""Huge and hostile stage logs (issue 24): `minitron logs` and `minitron status` stay bounded.

A stage log is written by the job, so it can be anything: 100+ MB, one line of tens of MB, a
progress bar that never printed a newline, binary junk, terminal escapes. Each test runs the real
CLI in a fresh process on such a log and on a tiny one, and bounds the difference of their peak
RSS far below the file's size; the output is checked too: the right lines, every control byte
escaped, secret-shaped values redacted, as everywhere minitron prints.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.app.views import log_line
from launcher.core.files import LOG_LINE_BYTES, LineReader, open_log, read_tail, tail_offset
from launcher.runs.registry import open_run
from tests.conftest import REPO
from tests.reliability.conftest import Sandbox
from tests.reliability.test_markers import forgetful_slurm

MiB = 1024 * 1024
# What reading a huge log may add to the CLI's peak RSS. Below the long line alone: holding that one
# line whole, or the whole file, breaks it.
MAX_EXTRA_RSS = 32 * MiB
SECRET = "hf_Zq8xVw3LmN0pRt5sUy7KbC2dEf4GhJ6a"  # fake, shaped like a Hugging Face token
RUN_ID_IN_LOG = "tiny-disk-20261204-210724-57f4"  # not a secret: a run id whose recipe ends in "sk"
TAIL = [  # the huge log's last lines as written, and as `minitron logs` must print them
    (b"MINITRON_PROGRESS step=1000 total=2000 train_loss=2.5000 time=1764600000.0",
     "MINITRON_PROGRESS step=1000 total=2000 train_loss=2.5000 time=1764600000.0"),
    (b"\x1b]0;owned\x07\x1b[2J\x1b[31mred alert\x9b\xff\xfe \xc2\x9b2J ok",
     "\\x1b]0;owned\\x07\\x1b[2J\\x1b[31mred alert\ufffd\ufffd\ufffd \\x9b2J ok"),
    (b"loss is\tfine\r", "loss is fine\\r"),
    (f"HF_TOKEN={SECRET} for run {RUN_ID_IN_LOG}".encode(), f"HF_TOKEN=<redacted> for run {RUN_ID_IN_LOG}"),
    (b"Traceback (most recent call last): boom", "Traceback (most recent call last): boom"),
]
BAR = b"\r 50%|#####     | 5/10 [00:01<00:01,  4.20it/s]"  # a progress bar that never printed a newline
LONG_LINE = 82 * MiB // len(BAR) * len(BAR)  # the bar's line: more than MAX_EXTRA_RSS


def _ordinary(count: int, first: int) -> bytes:
    """`count` log lines as a training job prints them, a progress line every 100th."""
    lines = []
    for i in range(first, first + count):
        if i % 100 == 0:
            lines.append(f"MINITRON_PROGRESS step={i // 100} total=2000 train_loss=3.0000 time={1764500000 + i}.0")
        else:
            lines.append(f"2026-12-04 21:07:13 INFO rank 0: step {i // 100}, loaded shard {i % 100} of the data")
    return ("\n".join(lines) + "\n").encode()


def _junk(size: int) -> bytes:
    """Binary junk (invalid UTF-8, NULs, C1 bytes), with terminal escapes that would retitle and clear."""
    data = bytearray(random.Random(24).randbytes(size))
    for at in range(0, size - 16, 4096):
        data[at:at + 16] = b"\x1b]0;pwned\x07\x1b[2J\x1bc"
    return bytes(data)


def _write_huge_log(path: Path) -> int:
    """The huge log (> 100 MB); returns how many lines it has."""
    with open(path, "wb") as out:
        ordinary = _ordinary(100_000, 0)
        for _ in range(3):
            out.write(ordinary)
        out.write(_junk(2 * MiB) + b"\n")
        out.write(BAR * (LONG_LINE // len(BAR)) + b"\n")
        out.write(_ordinary(1000, 100_000))
        out.write(b"\n".join(raw for raw, _ in TAIL) + b"\n")
    data_lines = 0
    with open(path, "rb") as handle:
        while block := handle.read(MiB):
            data_lines += block.count(b"\n")
    assert path.stat().st_size > 100 * MiB
    return data_lines


def _failed_finetune(sandbox: Sandbox, env: dict[str, str], exit_code: int | None = 3) -> tuple[str, Path]:
    """A run whose finetune (job 101) started and failed with `exit_code` (None: has not finished):
    its id and where its log goes."""
    info = sandbox.dry_run(env)
    run = open_run(info["run_dir"])
    state = run.load_record()
    state.stages["finetune"].job_id = "101"
    run.save_record(state)
    markers = Path(run.layout.markers)
    (markers / "finetune.started").write_text("101 n1 1700000000 0\n")
    if exit_code is not None:
        (markers / "finetune.finished").write_text(f"{exit_code}\n")
    return run.id, Path(run.layout.slurm_log("finetune", "101"))


class Logs:
    """Two runs with a failed finetune: one with a tiny log (the baseline), one with the huge log."""

    def __init__(self, root: Path):
        self.sandbox = Sandbox(root)
        self.env = forgetful_slurm(self.sandbox)
        self.tiny_run, tiny_log = _failed_finetune(self.sandbox, self.env)
        tiny_log.write_bytes(b"\n".join(raw for raw, _ in TAIL) + b"\n")
        self.huge_run, self.huge_log = _failed_finetune(self.sandbox, self.env)
        self.huge_lines = _write_huge_log(self.huge_log)


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    made = Logs(tmp_path_factory.mktemp("huge-logs"))
    yield made
    made.huge_log.unlink()  # pytest keeps the last runs' temporary directories: not this
    (made.sandbox.root / "readonly").chmod(0o755)


# The CLI runs as the child of a small Python of its own, which reports its child's peak RSS: Linux
# counts a process's peak from before its exec too, so a direct child of this test (which held the
# huge log's lines while writing them) would report the test's own peak.
_PEAK = ("import resource, subprocess, sys\n"
         "code = subprocess.call(sys.argv[2:])\n"
         "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
         "sys.exit(code)\n")


def _measured(args: list[str], env: dict[str, str], consume=None) -> tuple[int, int, bytes, str]:
    """Run `python -m launcher.app.cli ARGS`: its exit code, its peak RSS in bytes, its stdout (or b""
    when `consume` takes it in chunks) and its stderr."""
    full_env = dict(os.environ, **env)
    full_env["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as scratch, open(os.path.join(scratch, "err"), "w+b") as err:
        peak = os.path.join(scratch, "peak")
        proc = subprocess.Popen([sys.executable, "-c", _PEAK, peak, sys.executable, "-m", "launcher.app.cli", *args],
                                stdout=subprocess.PIPE, stderr=err, env=full_env, cwd=REPO)
        kept = []
        while chunk := proc.stdout.read(MiB):
            if consume is None:
                kept.append(chunk)
            else:
                consume(chunk)
        proc.stdout.close()
        code = proc.wait()
        err.seek(0)
        with open(peak) as handle:
            return code, int(handle.read()) * 1024, b"".join(kept), err.read().decode(errors="replace")


def _extra_rss(logs: Logs, *args: str) -> tuple[int, bytes, str]:
    """How much more the command's peak RSS is on the huge run than on the tiny one; its output there."""
    code, tiny, _, err = _measured([args[0], logs.tiny_run, *args[1:]], logs.env)
    assert code in (0, 4), err
    code, huge, out, err = _measured([args[0], logs.huge_run, *args[1:]], logs.env)
    assert code in (0, 4), err
    return huge - tiny, out, err


def test_logs_prints_the_last_lines_of_a_huge_log_in_bounded_memory(logs):
    extra, out, _ = _extra_rss(logs, "logs", "finetune", "-n", str(len(TAIL)))
    assert extra < MAX_EXTRA_RSS, f"{extra / MiB:.0f} MiB more than on a tiny log"
    assert out.decode().split("\n") == [shown for _, shown in TAIL] + [""]


def test_logs_with_more_lines_than_the_log_prints_it_all(logs):
    code, _, out, err = _measured(["logs", logs.tiny_run, "finetune", "-n", "1000"], logs.env)
    assert code == 0, err
    assert out.decode().split("\n") == [shown for _, shown in TAIL] + [""]


class _Lines:
    """Takes the whole log's output in chunks: counts its lines, keeps the longest, finds the cut one."""

    def __init__(self):
        self.count, self.longest, self.cut, self.raw_escape, self.rest = 0, 0, [], False, b""

    def __call__(self, chunk: bytes) -> None:
        self.raw_escape |= b"\x1b" in chunk or b"\x07" in chunk
        lines = (self.rest + chunk).split(b"\n")
        self.rest = lines.pop()
        self.count += len(lines)
        self.longest = max([self.longest, *map(len, lines)])
        self.cut += [line for line in lines if line.startswith(b"[first ")]


def test_logs_of_the_whole_huge_log_streams_it_escaped(logs):
    seen = _Lines()
    code, huge, _, err = _measured(["logs", logs.huge_run, "finetune", "-n", "0"], logs.env, seen)
    assert code == 0, err
    _, tiny, _, _ = _measured(["logs", logs.tiny_run, "finetune", "-n", "0"], logs.env)
    assert huge - tiny < MAX_EXTRA_RSS, f"{(huge - tiny) / MiB:.0f} MiB more than on a tiny log"
    assert seen.count == logs.huge_lines and seen.rest == b"", "one printed line per line of the log"
    assert not seen.raw_escape, "a control byte reached the terminal"
    assert len(seen.cut) == 1, "only the progress bar's line is longer than a line may be shown"
    bar = seen.cut[0].decode()
    cut = int(bar.split()[1])
    assert bar.startswith(f"[first {cut} bytes of this line not shown] ")
    assert cut >= LONG_LINE - LOG_LINE_BYTES and bar.endswith(BAR.decode().replace("\r", "\\r"))
    assert seen.longest < 4 * LOG_LINE_BYTES + 100, "a line is shown with at most 4 characters per byte"


def test_a_last_line_of_tens_of_mb_without_a_newline_is_shown_cut(logs):
    """The job died while writing one huge line: the end of that line is shown, the rest never read."""
    run_id, log = _failed_finetune(logs.sandbox, logs.env)
    with open(log, "wb") as out:
        out.write(b"starting\nsecond line\n")
        out.write(b"\x1b[2J junk \xff" * (50 * MiB // 11))
    try:
        _, tiny, _, _ = _measured(["logs", logs.tiny_run, "finetune", "-n", "2"], logs.env)
        code, huge, out, err = _measured(["logs", run_id, "finetune", "-n", "2"], logs.env)
    finally:
        log.unlink()
    assert code == 0, err
    assert huge - tiny < MAX_EXTRA_RSS, f"{(huge - tiny) / MiB:.0f} MiB more than on a tiny log"
    second, cut, end = out.decode().split("\n")
    assert second == "second line" and end == ""
    assert cut.startswith("[first ") and cut.endswith("\\x1b[2J junk \ufffd")
    assert len(cut) < 4 * LOG_LINE_BYTES + 100 and "\x1b" not in cut


def test_status_reads_only_the_tail_of_a_huge_log(logs):
    extra, out, _ = _extra_rss(logs, "status", "--json")
    assert extra < MAX_EXTRA_RSS, f"{extra / MiB:.0f} MiB more than on a tiny log"
    finetune = next(s for s in json.loads(out)["stages"] if s["name"] == "finetune")
    assert finetune["state"] == "FAILED" and finetune["exit_code"] == 3
    assert (finetune["step"], finetune["total_steps"], finetune["train_loss"]) == (1000, 2000, 2.5)
    assert finetune["log_tail"][-1] == "Traceback (most recent call last): boom"


def test_status_for_people_shows_the_huge_log_s_tail_escaped(logs):
    extra, out, _ = _extra_rss(logs, "status")
    assert extra < MAX_EXTRA_RSS, f"{extra / MiB:.0f} MiB more than on a tiny log"
    text = out.decode()
    assert "Traceback (most recent call last): boom" in text and "\\x1b]0;owned\\x07" in text
    assert "\x1b" not in text and "\x07" not in text and SECRET not in text
    assert RUN_ID_IN_LOG in text


def test_follow_prints_each_line_once_complete_until_the_run_ends(sandbox):
    """--follow, driven by the scheduler's answers rather than a clock: the first squeue call appends
    a line and half of another (the job still RUNNING), the second the rest and an unfinished last line
    (COMPLETED). Each line is printed once complete, the unfinished one when the run has ended."""
    run_id, log = _failed_finetune(sandbox, sandbox.env, exit_code=None)
    log.write_bytes(b"starting\n")
    bin_dir = sandbox.root / "following-slurm"
    bin_dir.mkdir()
    calls = sandbox.root / "squeue-calls"
    (bin_dir / "squeue").write_text(
        f'#!/bin/sh\necho call >> {calls}\n'
        f'if [ "$(wc -l < {calls})" -eq 1 ]; then\n'
        f'  printf "written while followed\\nhalf " >> {log}; echo "101|RUNNING|None|0:10|10:00|1|n1|N/A"\n'
        f'else\n'
        f'  printf "a line\\n\\033[2Jbye" >> {log}; echo "101|COMPLETED|None|0:11|10:00|1|n1|N/A"\n'
        f'fi\n')
    (bin_dir / "squeue").chmod(0o755)
    env = dict(sandbox.env, PATH=f"{bin_dir}{os.pathsep}{sandbox.env['PATH']}")
    code, _, out, err = _measured(["logs", run_id, "finetune", "--follow"], env)
    assert code == 0, err
    assert out.decode().split("\n") == ["starting", "written while followed", "half a line", "\\x1b[2Jbye", ""]
    assert calls.read_text().count("call") == 2


def test_logs_help_says_how_long_lines_are_shown():
    code, _, out, err = _measured(["logs", "--help"], {})
    assert code == 0, err
    help_text = " ".join(out.decode().split())  # argparse wraps it
    assert f"over {LOG_LINE_BYTES // 1024} KiB" in help_text and "[first N bytes of this line not shown]" in help_text


def test_a_cut_line_is_shown_from_after_a_whitespace():
    """The cut may fall inside a secret: its end, too short to be recognised, is not shown."""
    assert log_line(b"def ghi", 0) == "def ghi"
    assert log_line(b"c def\x1bghi", 5) == "[first 7 bytes of this line not shown] def\\x1bghi"
    assert log_line(b"dEf4GhJ6a HF_TOKEN=x", 30) == "[first 40 bytes of this line not shown] HF_TOKEN=<redacted>"
    assert log_line(b"no-whitespace-at-all", 100) == "[first 120 bytes of this line not shown] "


def _lines_of(content: bytes, max_bytes: int) -> list[tuple[bytes, int]]:
    """What a line reader must give: bytes.split on the whole file, each line cut to its end."""
    lines = content.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the file ends with a newline, or is empty
    return [(line[-max_bytes:], max(0, len(line) - max_bytes)) for line in lines]


def _read(reader: LineReader) -> list[tuple[bytes, int]]:
    got = list(reader.lines())
    last = reader.unfinished()
    return got + ([last] if last else [])


LOG_TEXT = st.lists(st.binary(max_size=9), max_size=12).map(b"\n".join) | st.binary(max_size=40)


@settings(max_examples=300, deadline=None)
@given(content=LOG_TEXT, count=st.integers(1, 15), block=st.integers(1, 8), max_bytes=st.integers(1, 6))
def test_the_last_lines_are_what_splitting_the_whole_file_gives(content, count, block, max_bytes):
    """tail_offset then LineReader, at every block size and line cap, against bytes.split."""
    with tempfile.TemporaryFile() as handle:
        os.write(handle.fileno(), content)
        got = _read(LineReader(handle.fileno(), tail_offset(handle.fileno(), count, block), max_bytes, block))
    assert got == _lines_of(content, max_bytes)[-count:]


@settings(max_examples=300, deadline=None)
@given(content=LOG_TEXT, split=st.integers(0, 120), block=st.integers(1, 8), max_bytes=st.integers(1, 6))
def test_a_log_read_while_it_grows_gives_the_same_lines(content, split, block, max_bytes):
    """--follow: a line the writer is in the middle of is given once complete, whole."""
    with tempfile.TemporaryFile() as handle:
        os.write(handle.fileno(), content[:split])
        reader = LineReader(handle.fileno(), 0, max_bytes, block)
        got = list(reader.lines())
        os.write(handle.fileno(), content[split:])
        got += _read(reader)
    assert got == _lines_of(content, max_bytes)


def test_a_log_that_is_not_a_regular_file_is_never_read(tmp_path):
    """A FIFO planted where a log goes (after the layout looked) neither blocks nor crashes a reader."""
    fifo = tmp_path / "finetune-101.out"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        open_log(str(fifo))
    assert read_tail(str(fifo)) == []
