"""Errors a user can act on. The CLI prints them without a traceback and exits with their code."""

from __future__ import annotations

EXIT_USAGE = 2


class UserError(Exception):
    """Bad input: names the file, the key and (where YAML gives it) the line."""

    exit_code = EXIT_USAGE

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
        return text.replace("\r", "\\r").replace("\n", "\\n")  # one line, whatever the input held


class SlurmError(Exception):
    """A Slurm client call failed; carries Slurm's own message."""

    def __init__(self, command: list[str], returncode: int, stderr: str):
        super().__init__(f"{command[0]} failed (exit {returncode}): {stderr.strip()}")
        self.command = command
        self.returncode = returncode
        self.stderr = stderr


class RunBusy(Exception):
    """Another minitron process holds the run's lock."""
