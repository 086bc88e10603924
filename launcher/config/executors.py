"""What each executor is, as data the profile checks and the planner read without importing a backend.

The backends (launcher/backends) implement the Executor protocol and point at their entry here; this
is the one place that says what differs between them for planning: partitions, node counts, the
container start, the time limit and its pre-limit checkpoint signal, and how stages share the profile's GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class ExecutorTraits:
    name: str
    uses_partitions: bool        # Slurm partitions, accounts and qos mean something here
    max_nodes: Optional[int]     # None: as many as the profile says
    container_start_s: float     # starting a stage's container (image cached), for the time model
    signals_before_limit: bool   # training stages get the checkpoint signal before their time limit
    ends_at_limit: bool          # a stage is ended at its time limit (the planner refuses one that cannot finish)
    parallel_always: bool        # independent stages run side by side (else only with `local_parallel`)
    exclusive_nodes: bool        # a multi-GPU stage holds its nodes alone when the profile says `exclusive`

    def stages_side_by_side(self, profile: Any) -> bool:
        """Whether independent stages may run at the same time on the profile's GPUs."""
        return self.parallel_always or bool(profile.local_parallel)

    def takes_whole_nodes(self, profile: Any) -> bool:
        """Whether a multi-GPU stage holds its nodes alone (the time model's scheduling)."""
        return self.exclusive_nodes and bool(profile.exclusive)


EXECUTORS: dict[str, ExecutorTraits] = {
    "slurm": ExecutorTraits("slurm", uses_partitions=True, max_nodes=None, container_start_s=60.0,
                            signals_before_limit=True, ends_at_limit=True, parallel_always=True, exclusive_nodes=True),
    "local": ExecutorTraits("local", uses_partitions=False, max_nodes=1, container_start_s=15.0,
                            signals_before_limit=False, ends_at_limit=False, parallel_always=False,
                            exclusive_nodes=False),
}


def traits(name: str) -> ExecutorTraits:
    try:
        return EXECUTORS[name]
    except KeyError:
        raise ValueError(f"unknown executor {name!r} (known: {', '.join(EXECUTORS)})") from None
