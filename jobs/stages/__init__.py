"""One entrypoint module per stage kind (jobs.contract.kinds) and the NeMo 2 building blocks they share.

Importing the package installs the stand-ins for what newer megatron-core releases removed and NeMo 2 still
imports (drift.py): before any stage module imports NeMo, at no import cost of its own.
"""

from . import drift

drift.install_stand_ins()
