"""How a stage process ends, and the signal that asks it to checkpoint before its time limit."""

from __future__ import annotations

import enum


class StageExit(enum.IntEnum):
    """The exit codes a stage process may use; anything else non-zero is a failure too."""

    OK = 0
    FAILED = 1         # an exception escaped the stage
    CONFIG = 2         # the stage config breaks this contract, or the stack cannot do what the plan says
    CONTINUE = 85      # a checkpoint was saved before the time limit (or a stall): continue the stage


# Sent before the time limit (sbatch --signal, the local script's trap): checkpoint, then exit CONTINUE.
CONTINUE_SIGNAL = "USR1"
