"""The CLI's exit codes (one table, also in the README) and the errors that carry them.

Every error the CLI reports is a `LauncherError` carrying its `ExitCode`; the CLI prints its one
line and exits with that code. Messages are capped in length, kept on one line, and secret-looking
values are redacted as a last line of defence (the loaders already avoid echoing them).
"""

from __future__ import annotations

import difflib
import enum
import re
from typing import Iterable


class ExitCode(enum.IntEnum):
    """What `minitron` exits with. Scripts can rely on these."""

    OK = 0                # done: the command did what was asked; status: every stage is done
    CHECK_FAILED = 1      # check: at least one check failed
    USAGE = 2             # bad input (profile, recipe, --set, arguments): nothing was created or queued
    LIVE = 3              # status: stages are still pending or running
    FAILED = 4            # status: a stage failed, or the run was cancelled
    SLURM_DOWN = 5        # the scheduler did not answer
    BUSY = 6              # another minitron process holds the run
    SUBMIT_FAILED = 7     # a stage was refused, or what was queued could not be recorded: it was all cancelled
    NOT_SUBMITTED = 8     # status: the run was rendered (dry run) or its submission failed: nothing to wait for
    REMOTE = 9            # --remote: the login node could not be reached or logged in to, or its python cannot run us
    INTERNAL = 70         # a bug: the one-line guard caught an unexpected exception
    INTERRUPTED = 130     # Ctrl-C


MAX_MESSAGE_CHARS = 400
# Known credential shapes: Hugging Face, GitHub, GitLab, Slack, OpenAI-style, AWS, NGC keys, JWTs. The
# loaders refuse them in any file (launcher/config/yamlfile.py) and every message redacts them. Each must
# begin a word: inside a name ("tiny-disk-20261204-…", "monkeyJump…") "sk-" or "eyJ" is no key.
TOKEN_VALUE = re.compile(r"(?<![\w.-])(?:hf_[A-Za-z0-9]{30,}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{30,}"
                         r"|glpat-[\w-]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}|sk-[\w-]{20,}|AKIA[0-9A-Z]{16}"
                         r"|nvapi-[\w-]{20,}|eyJ[\w-]{20,}\.)")
# Broader, for deciding what a message may quote: also long mixed-case runs with digits (generic API
# keys; tried first, so such a run is redacted whole) and 40-hex keys (W&B; a git hash is hidden too).
# A run is only tried where it starts: redacting a long line (a log's) stays linear in its length.
SECRET_VALUE = re.compile(r"(?<![A-Za-z0-9_\-+])(?=[A-Za-z0-9_\-+]*\d)(?=[A-Za-z0-9_\-+]*[a-z])"
                          r"(?=[A-Za-z0-9_\-+]*[A-Z])[A-Za-z0-9_\-+]{32,}|" + TOKEN_VALUE.pattern + r"|\b[0-9a-f]{40}\b")
# NAME=value and NAME: value where the name ends in TOKEN, SECRET, … (an `S` or `_SUFFIX` at most: HF_TOKEN=,
# SECRETS:, TOKEN_2=; a word that only starts like one, `tokenizer:`, is left alone); tried only where a
# name starts (linear, as above).
_SECRET_ASSIGNMENT = re.compile(r"((?<![A-Z0-9_])[A-Z0-9_]*?(?:TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|CREDENTIAL)S?"
                                r"(?:_[A-Z0-9_]*)?\s*[=:]\s*)(['\"]?)[^\s'\",}\]]+", re.I)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A hint for a misspelt name: the closest of `choices`, if one is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def redact(text: str) -> str:
    """Replace anything that looks like a credential with `<redacted>`."""
    text = SECRET_VALUE.sub("<redacted>", text)
    return _SECRET_ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", text)


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A message safe to print: redacted, control bytes shown as escapes, one line, at most `limit` chars."""
    text = redact(text).replace("\r", "\\r").replace("\n", "\\n").replace("\t", " ")
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


class LauncherError(Exception):
    """Base of every error the CLI turns into one line and an exit code."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __str__(self) -> str:
        return one_line(super().__str__())


class UserError(LauncherError):
    """Bad input: names the file, the key and (where YAML gives it) the line."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None,
                 line: int | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.key = key
        self.line = line
        self.hint = hint

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(f"{self.file}:{self.line}" if self.line else self.file)
        if self.key:
            where.append(self.key)
        text = f"{': '.join(where)}: {self.message}" if where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return one_line(text)


class SlurmError(LauncherError):
    """A Slurm client call failed; carries Slurm's own message."""

    exit_code = ExitCode.SLURM_DOWN

    def __init__(self, command: list[str], returncode: int, stderr: str):
        super().__init__(f"Slurm is not answering: {command[0]} failed (exit {returncode}): {stderr.strip()}")
        self.command = command
        self.returncode = returncode
        self.stderr = stderr


class RemoteFailed(LauncherError):
    """`--remote`: the login node did not answer, refused the login, or its python lacks what the launcher
    needs. The command itself never ran there."""

    exit_code = ExitCode.REMOTE


class RunBusy(LauncherError):
    """Another minitron process holds the run's lock."""

    exit_code = ExitCode.BUSY


class SubmitFailed(LauncherError):
    """A submission failed part-way; everything it had queued was cancelled."""

    exit_code = ExitCode.SUBMIT_FAILED
    run_dir: str | None = None  # the run recorded as SUBMIT_FAILED, once the submission knows it

    def __init__(self, stage: str, message: str, cancelled: list[str]):
        super().__init__(f"submitting stage {stage} failed: {message}")
        self.stage = stage
        self.message = message
        self.cancelled = cancelled


class RecordNotSaved(SubmitFailed):
    """The jobs were queued but the run record could not be written (a full or read-only job_dir):
    they were cancelled, since a job no record knows of is one `cancel` and `status` cannot reach."""

    def __init__(self, path: str, error: OSError, cancelled: list[str], cancel_error: str | None = None):
        LauncherError.__init__(self, f"could not record the submission in {path} ({error.strerror or error}); "
                               + (f"cancelling its jobs failed too ({cancel_error}): scancel {' '.join(cancelled)}"
                                  if cancel_error else f"cancelled the {len(cancelled)} job(s) it had queued"
                                  + (f" ({', '.join(cancelled)})" if cancelled else "")))
        self.stage, self.message, self.cancelled = "", str(error), cancelled
