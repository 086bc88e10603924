"""Shared fixtures: an isolated MINITRON_HOME and job_dir per test, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def minitron_home(tmp_path, monkeypatch):
    home = tmp_path / "mthome"
    monkeypatch.setenv("MINITRON_HOME", str(home))
    return home


def run_cli(*args: str, env: dict | None = None, cwd: str | None = None, timeout: float = 120):
    """Run `python -m launcher.app.cli ARGS` in a fresh process, as a user would (its tables as wide as a pipe
    gets, whatever COLUMNS the tests were started with, unless `env` sets COLUMNS)."""
    full_env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    full_env["PYTHONPATH"] = REPO + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "launcher.app.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or REPO, timeout=timeout)


def write_profile(path, **overrides) -> str:
    """A Slurm profile for tests, as YAML; keys can be overridden."""
    import yaml

    profile = {
        "executor": "slurm", "nodes": 1, "gpus_per_node": 8,
        "gpu": {"model": "H100-80GB", "memory_gib": 80},
        "partition": "batch", "cpu_partition": "cpu", "job_dir": str(path.parent / "jobdir"),
        "containers": {"nemo": "nvcr.io/nvidia/nemo:26.02"}, "container": "nemo",
    }
    profile.update(overrides)
    path.write_text(yaml.safe_dump(profile))
    return str(path)


def pytest_terminal_summary(terminalreporter, config):
    """The random order's seed also under -q (pytest-randomly prints it only in the header), so a failure
    seen once, in CI, can be replayed with --randomly-seed."""
    seed = getattr(config.option, "randomly_seed", None)
    if seed is not None:
        terminalreporter.write_line(f"random order: --randomly-seed={seed}")


def api_doc_steps() -> dict[str, str]:
    """docs/api.md's example cells by step name (the `<!-- step: NAME -->` before each python block), in order:
    the tests run the documented example itself, so it cannot go stale."""
    import re

    with open(os.path.join(REPO, "docs", "api.md"), encoding="utf-8") as handle:
        doc = handle.read()
    return dict(re.findall(r"<!-- step: ([\w-]+) -->\n```python\n(.*?)```", doc, re.S))


def run_api_steps(names, namespace: dict) -> dict:
    """Run docs/api.md's cells `names` in `namespace`, each compiled under its own name for tracebacks."""
    steps = api_doc_steps()
    for name in names:
        exec(compile(steps[name], f"docs/api.md[{name}]", "exec"), namespace)  # noqa: S102 - the doc's own code
    return namespace
