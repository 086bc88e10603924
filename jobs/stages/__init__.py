"""One entrypoint module per stage kind (jobs.contract.kinds) and the NeMo 2 building blocks they share."""
