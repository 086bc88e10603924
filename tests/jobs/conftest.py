"""Shared setup of the stage-job tests.

Tests marked `nemo` import NeMo 2 (~27 s cold) and run its training code on the CPU through the
jobs' own CPU placement (jobs/runtime/cpu.py, what a stage planned without GPUs installs); they share
one import and one tiny pipeline run per session.
Deselect them with `-m "not nemo"`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # `import jobs` must find the real package, whatever pytest put on sys.path


def pytest_configure(config):
    config.addinivalue_line("markers", "nemo: imports NeMo 2 and runs stage jobs in-process on the CPU (slow)")


@pytest.fixture(scope="session")
def nemo_cpu():
    """NeMo imported once, with CUDA placement redirected to the CPU."""
    from jobs.runtime import cpu

    cpu.install()
    import nemo.collections.llm  # noqa: F401
