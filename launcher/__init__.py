"""minitron-launcher: plan, render, submit and watch the Minitron prune+distill pipeline on Slurm.

Nothing imported from here may pull in torch or NeMo: the CLI must start fast on a login node.
"""

__version__ = "0.1.0"
