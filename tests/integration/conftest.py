"""Fixtures for the integration tests that run against a real Slurm testbed.

CI starts a cluster before pytest (``.ci/slurm-testbed up --dir DIR``) and sets
``MINITRON_TEST_SLURM_DIR=DIR``; the ``slurm`` fixture then reuses it. Without a
running cluster there, the fixture starts its own in a short temp dir (on a free
port block) and stops it at the end of the session.

Environment:
  MINITRON_TEST_SLURM_DIR       reuse the cluster in this directory if it is up
  MINITRON_TEST_SLURM_ACCT      none (default) or slurmdbd, for a cluster started here
  MINITRON_TEST_SLURM_REQUIRED  1: fail instead of skip when Slurm is not installed
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from slurm_cluster import SlurmTestbed, find_port_base, slurm_installed  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slurm: needs the real single-host Slurm testbed (.ci/slurm-testbed)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            under_here = Path(str(item.fspath)).resolve().is_relative_to(HERE)
        except (OSError, ValueError):
            under_here = False
        if under_here:
            item.add_marker(pytest.mark.slurm)
    # The fault tests stop and kill testbed daemons: run them after everything else.
    items.sort(key=lambda item: Path(str(item.fspath)).name == "test_faults.py")


@pytest.fixture(scope="session")
def slurm():
    """A running SlurmTestbed (reused from CI, or started for this session)."""
    if not slurm_installed():
        msg = "Slurm is not installed (slurmctld not found); run: bash .ci/slurm-testbed install"
        if os.environ.get("MINITRON_TEST_SLURM_REQUIRED") == "1":
            pytest.fail(msg)
        pytest.skip(msg)

    shared = os.environ.get("MINITRON_TEST_SLURM_DIR")
    if shared:
        testbed = SlurmTestbed(shared)
        if testbed.is_up():
            testbed.wait_idle(timeout=30)
            yield testbed
            return  # not ours: CI stops it

    tmp = tempfile.mkdtemp(prefix="mts", dir="/tmp")  # short: unix socket paths
    acct = os.environ.get("MINITRON_TEST_SLURM_ACCT", "none")
    testbed = SlurmTestbed(tmp, acct=acct, port_base=find_port_base())
    try:
        testbed.up()
        yield testbed
    finally:
        try:
            testbed.down()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
