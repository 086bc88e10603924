"""The one place the jobs handle the continuation signal (jobs.contract.CONTINUE_SIGNAL, SIGUSR1).

Before training starts there is nothing new to save: the signal ends the task at once with
StageExit.CONTINUE (`exit_on_signal`). During training the trainer's own preemption callback is given
`CONTINUE_SIGNUM` and saves a checkpoint first (jobs/stages/nemo_parts.py). Once the entrypoint has
succeeded, a late signal is ignored (`ignore_signal`): it must not turn a finished task into a failed one.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from jobs.contract import CONTINUE_SIGNAL, StageExit

CONTINUE_SIGNUM = getattr(signal, f"SIG{CONTINUE_SIGNAL}")

log = logging.getLogger("jobs")


def _exit_for_continuation(signum: int, _frame: Any) -> None:
    log.warning("signal %d before training started: nothing new to save, exiting %d for requeue", signum,
                int(StageExit.CONTINUE))
    raise SystemExit(StageExit.CONTINUE)


def exit_on_signal() -> None:
    """The signal while a training stage loads: exit CONTINUE at once."""
    signal.signal(CONTINUE_SIGNUM, _exit_for_continuation)


def ignore_signal() -> None:
    """The entrypoint succeeded: Slurm's time-limit signal arriving now (teardown, interpreter exit, where
    Python has put back the default action, which kills) is ignored. SIG_IGN survives interpreter
    finalisation."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(CONTINUE_SIGNUM, signal.SIG_IGN)
