"""What runs inside the container: the launcher ↔ jobs contract (jobs.contract, standard library only,
imported by both sides), how every rank starts and ends (jobs.runtime), and one entrypoint per stage
kind (jobs.stages), started as `python -m jobs.runtime.task <entrypoint> --config RUN_DIR/stages/<stage>.json`.
The contract is docs/stage-config.md.
"""
