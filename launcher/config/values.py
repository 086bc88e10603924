"""Value checks the profile and the recipe share: Slurm time limits and values that land in #SBATCH lines."""

from __future__ import annotations

import os
import re

from .yamlfile import shown

# Values that land in #SBATCH lines are parsed by sbatch, not by a shell: keep them to a safe set.
SAFE_DIRECTIVE = re.compile(r"^[A-Za-z0-9._:/@+,=%-]+$")
TIME_FORMAT = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
MAX_TIME_MINUTES = 365 * 1440
# sbatch --mem and its kin take an integer with an optional K, M, G or T suffix, megabytes without one;
# anything else (500GiB, 1.5T, 500 GB) is refused by sbatch at submission, after earlier stages were queued.
MEMORY = re.compile(r"^(\d+)([KMGT]?)$", re.I)
MEMORY_UNITS = "KMGTP"
MAX_MEMORY = "1024T"  # far above any node's memory


def parse_time_minutes(value: str) -> int:
    """Slurm time (`MM`, `HH:MM:SS`, `D-HH:MM:SS`, ...) to whole minutes; ValueError if malformed."""
    match = TIME_FORMAT.match(value.strip())
    if not match:
        raise ValueError(value)
    days, a, b, c = match.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-HH[:MM[:SS]]
        parts += [0] * (3 - len(parts))
        hours, minutes, seconds = parts
        return int(days) * 1440 + hours * 60 + minutes + (1 if seconds else 0)
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:  # MM:SS
        return parts[0] + (1 if parts[1] else 0)
    hours, minutes, seconds = parts
    return hours * 60 + minutes + (1 if seconds else 0)


def format_minutes(minutes: int) -> str:
    """Minutes as Slurm's HH:MM:00 or D-HH:MM:00."""
    days, rest = divmod(minutes, 1440)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{text}" if days else text


def check_time(value: str) -> str | None:
    """Why `value` is not a usable Slurm time limit, or None."""
    try:
        minutes = parse_time_minutes(value)
    except ValueError:
        return f"not a Slurm time limit (HH:MM:SS or D-HH:MM:SS): {shown(value)}"
    if not 1 <= minutes <= MAX_TIME_MINUTES:
        return f"a time limit is between 1 minute and 365 days, got {shown(value)}"
    return None


def check_directive(value: str) -> str | None:
    """Why `value` cannot go into an #SBATCH line, or None."""
    if not SAFE_DIRECTIVE.match(value):
        return f"{shown(value)} has characters Slurm directives cannot carry safely (allowed: letters, digits, ._:/@+,=%-)"
    return None


def memory_megabytes(value: str) -> float:
    """A size Slurm takes (`480G`, `500`) in megabytes; ValueError if it is not one."""
    match = MEMORY.match(value)
    if not match:
        raise ValueError(value)
    return int(match.group(1)) * 1024.0 ** (MEMORY_UNITS.index((match.group(2) or "M").upper()) - 1)


def check_memory(value: str) -> str | None:
    """Why `value` is not a size for sbatch --mem, or None; the message says how to write it."""
    try:
        megabytes = memory_megabytes(value)
    except ValueError:
        return (f"{shown(value)} is not a size Slurm takes: an integer with an optional K, M, G or T suffix "
                f"(megabytes without one) ({_as_slurm_size(value)})")
    if megabytes > memory_megabytes(MAX_MEMORY):
        return f"{shown(value)} is more than any node has; at most {MAX_MEMORY}"
    return None


def _as_slurm_size(value: str) -> str:
    """The fix: `500GiB` → write 500G, `1.5T` → write 1536G, `0.5 GB` → write 512M, else an example."""
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?\s*$", value, re.I)
    if not match:
        return "for example 480G"
    number, unit = float(match.group(1)), (match.group(2) or "M").upper()
    while not number.is_integer() and unit != "K":
        number, unit = number * 1024, MEMORY_UNITS[MEMORY_UNITS.index(unit) - 1]
    while unit == "P":
        number, unit = number * 1024, "T"
    return f"write {round(number)}{unit}"


def lies_under(path: str, roots: list[str]) -> bool:
    """Whether `path` is one of `roots` or inside one (normalised, no file system access)."""
    path = os.path.normpath(path)
    return any(os.path.commonpath([path, os.path.normpath(root)]) == os.path.normpath(root) for root in roots)
