"""Helpers around the stage jobs: the tiny recipe's stage configs and the GPU smoke driver."""
