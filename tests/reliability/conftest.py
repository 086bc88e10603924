"""Fixtures for the reliability tests (no Slurm needed): a sandbox with a tripwire PATH.

The tripwire directory shadows every Slurm client (sbatch, squeue, ...) with a script that records
its call and fails, so a test can prove that nothing was (or tried to be) queued.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.conftest import run_cli

CORPUS = Path(__file__).resolve().parent / "bad_inputs"

SLURM_CLIENTS = ("sbatch", "squeue", "scancel", "sacct", "srun", "scontrol", "sinfo")


class Sandbox:
    def __init__(self, root: Path):
        self.root = root
        self.job_dir = root / "jobs"
        self.home = root / "mthome"
        self.tripwire_log = root / "tripwire.log"
        self.bin = root / "tripwire-bin"
        self.bin.mkdir()
        for name in SLURM_CLIENTS:
            path = self.bin / name
            path.write_text(f'#!/bin/sh\necho "{name} $*" >> {self.tripwire_log}\n'
                            f'echo "{name}: tripwire: no Slurm here" >&2\nexit 1\n')
            path.chmod(0o755)
        (root / "plainfile").write_text("a file where a directory is expected\n")
        (root / "registry_is_file").mkdir()
        (root / "registry_is_file" / "runs").write_text("a file where the run registry should be\n")
        (root / "readonly").mkdir()
        (root / "readonly").chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
        (root / "mnt").mkdir()

    @property
    def env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
                "MINITRON_HOME": str(self.home), "SLURM_CONF": str(self.root / "no-slurm.conf")}

    def substitute(self, data: bytes | str) -> bytes | str:
        if isinstance(data, bytes):
            return data.replace(b"@JOB_DIR@", str(self.job_dir).encode()).replace(b"@TMP@", str(self.root).encode())
        return data.replace("@JOB_DIR@", str(self.job_dir)).replace("@TMP@", str(self.root))

    def dry_run(self, env: dict[str, str]) -> dict:
        """`minitron submit --dry-run --json` of the corpus' good profile and recipe: a rendered run."""
        profile = self.root / "profile.yaml"
        profile.write_text(self.substitute((CORPUS / "good" / "profile.yaml").read_text()))
        proc = run_cli("submit", "--dry-run", "--json", "--profile", str(profile),
                       "--recipe", str(CORPUS / "good" / "recipe.yaml"), env=env)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def tripwire_calls(self) -> list[str]:
        return self.tripwire_log.read_text().splitlines() if self.tripwire_log.exists() else []

    def leftovers(self) -> list[str]:
        """Run directories (finished, hidden temporary or half-made) and index entries left behind."""
        found = []
        for registry in (self.job_dir / "runs", self.home / "runs"):
            if registry.is_dir():
                found += [str(p) for p in registry.iterdir()]
        return found


@pytest.fixture
def sandbox(tmp_path):
    box = Sandbox(tmp_path)
    yield box
    (tmp_path / "readonly").chmod(0o755)  # let pytest clean up
