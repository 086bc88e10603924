"""Runs on disk and in the scheduler: the registry, the state machine, status, submission."""
