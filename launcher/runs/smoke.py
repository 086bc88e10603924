"""Smoke runs (`minitron submit --smoke`): the bundled tiny recipe on the user's own profile, every stage
on one node, with short limits; their runs are named `smoke-…` and `minitron status` ends with a verdict."""

from __future__ import annotations

from typing import Optional, Sequence

from .state import LIVE, RunState, StageState

# `minitron submit --smoke`: the bundled tiny recipe, one node per stage, short steps and limits. The
# user's own --set overrides come after these, so any of them can be changed.
SMOKE_RECIPE = "tiny"
SMOKE_NAME = "smoke"
SMOKE_OVERRIDES = (
    f"name={SMOKE_NAME}",
    "stages.finetune.nodes=1", "stages.finetune.steps=30", "stages.finetune.val_check_interval=10",
    "stages.finetune.ckpt_every_n_steps=10", "stages.finetune.time=00:15:00",
    "stages.distill.nodes=1", "stages.distill.steps=20", "stages.distill.val_check_interval=10",
    "stages.distill.ckpt_every_n_steps=10", "stages.distill.time=00:15:00",
    "stages.data.time=00:10:00", "stages.import.time=00:10:00", "stages.prune.time=00:10:00",
    "stages.report.time=00:10:00",
)


def smoke_inputs(overrides: list[str]) -> tuple[str, list[str]]:
    """The recipe and overrides `submit --smoke` plans with."""
    return SMOKE_RECIPE, [*SMOKE_OVERRIDES, *overrides]


def smoke_verdict(plan_recipe: Optional[str], overall: RunState, stages: Sequence) -> Optional[str]:
    """The last line of `minitron status` for a smoke run (None for any other run, or while it runs)."""
    if plan_recipe != SMOKE_NAME:
        return None
    if overall == RunState.DONE:
        return "smoke run DONE: cluster ready for the real recipe"
    if overall in (RunState.PENDING, RunState.RUNNING):
        return None
    settled = {StageState.DONE, StageState.NOT_SUBMITTED} | LIVE
    bad = next((s for s in stages if s.state not in settled), None)
    if bad is None and overall == RunState.RENDERED:
        return ("smoke run RENDERED (a dry run): nothing ran, the cluster is not proven ready yet "
                "(`minitron resume RUN --submit` submits it)")
    if bad is None:
        return (f"smoke run {overall}: no stage failed, but not every stage ran: the cluster is not proven ready yet "
                f"(`minitron resume` the smoke run)")
    cause = f": {bad.exception}" if bad.exception else (f" (exit {bad.exit_code})" if bad.exit_code is not None else "")
    return (f"smoke run {overall}: stage {bad.name} {bad.state}{cause}; the cluster is NOT ready for the real "
            f"recipe: fix this, then `minitron resume` the smoke run")
