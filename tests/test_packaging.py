"""launcher.core.bundled finds every bundled file, and an installed layout (no checkout around it) works.

Cheap: no wheel is built (.ci/wheel-check builds and installs one); the installed layout is
simulated by copying the packages the way setup.py's build step lays them out.
"""

from __future__ import annotations

import configparser
import fnmatch
import json
import os
import shutil
import subprocess
import sys

import pytest

from launcher.core import bundled

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _names(directory: str, suffix: str) -> set[str]:
    return {name for name in os.listdir(directory) if name.endswith(suffix)}


def test_checkout_finds_every_bundled_file():
    assert os.path.samefile(bundled.profile_dir(), os.path.join(REPO, "cluster_profiles"))
    assert _names(bundled.profile_dir(), ".yaml") >= {"h100-1x8.yaml", "h100-4x8.yaml", "a100-40g-2x8.yaml",
                                                       "local.yaml", "device-h200.yaml"}
    assert _names(bundled.recipe_dir(), ".yaml") >= {"minitron-8b-wikitext.yaml", "tiny.yaml"}
    assert _names(bundled.template_dir(), ".j2") >= {"slurm_stage.sh.j2", "local_stage.sh.j2", "_markers.sh.j2"}
    jobs = bundled.jobs_dir()
    assert os.path.samefile(jobs, os.path.join(REPO, "jobs"))
    for rel in ("__init__.py", "contract/__init__.py", "contract/kinds.py", "runtime/task.py", "stages/data.py",
                "stages/distill.py"):
        assert os.path.isfile(os.path.join(jobs, rel)), rel
    assert not os.path.exists(os.path.join(jobs, "tools")), "development tools live in tools/, outside the packages"


def test_every_data_file_in_the_packages_is_package_data():
    """A data file added under launcher/ or jobs/ must be declared, or the wheel silently lacks it."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))
    declared = {pkg: [g.strip() for g in globs.replace("\n", ",").split(",") if g.strip()]
                for pkg, globs in cfg["options.package_data"].items()}
    missing = []
    for top in ("launcher", "jobs"):
        for root, dirs, files in os.walk(os.path.join(REPO, top)):
            dirs[:] = [d for d in dirs if d not in ("__pycache__", "_bundled", "tests")]
            package = os.path.relpath(root, REPO).replace(os.sep, ".")
            if not os.path.isfile(os.path.join(root, "__init__.py")):
                continue  # a data folder of its parent package: checked from there
            for path in _data_files(root):
                rel = os.path.relpath(path, root)
                if not any(fnmatch.fnmatch(rel, glob) for glob in declared.get(package, [])):
                    missing.append(f"{package}: {rel}")
    assert not missing, f"not in setup.cfg [options.package_data]: {missing}"


def _data_files(package_root: str):
    for root, dirs, files in os.walk(package_root):
        if root != package_root and os.path.isfile(os.path.join(root, "__init__.py")):
            dirs[:] = []  # a subpackage: walked on its own
            continue
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if not name.endswith((".py", ".pyc")):
                yield os.path.join(root, name)


@pytest.fixture
def installed_layout(tmp_path):
    """site-packages as the wheel lays it out: launcher/ with _bundled/cluster_profiles/, jobs/ beside it."""
    site = tmp_path / "site"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "_bundled")
    shutil.copytree(os.path.join(REPO, "launcher"), site / "launcher", ignore=ignore)
    shutil.copytree(os.path.join(REPO, "jobs"), site / "jobs", ignore=ignore)
    profiles = site / "launcher" / "_bundled" / "cluster_profiles"
    profiles.mkdir(parents=True)
    for name in _names(os.path.join(REPO, "cluster_profiles"), ".yaml"):
        shutil.copy(os.path.join(REPO, "cluster_profiles", name), profiles / name)
    work = tmp_path / "elsewhere"
    (work / "jobs").mkdir(parents=True)  # a user's own jobs/ folder must not become the run's code
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), MINITRON_HOME=str(tmp_path / "home"), HOME=str(tmp_path / "home"))
    return site, work, env


def test_installed_layout_finds_its_own_files(installed_layout):
    site, work, env = installed_layout
    code = "import json; from launcher.core import bundled; print(json.dumps(bundled.all_dirs()))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    dirs = json.loads(proc.stdout)
    assert dirs == {"profiles": str(site / "launcher" / "_bundled" / "cluster_profiles"),
                    "recipes": str(site / "launcher" / "recipes"),
                    "templates": str(site / "launcher" / "rendering" / "templates"), "jobs": str(site / "jobs")}


def test_installed_layout_plans_and_dry_runs_outside_the_checkout(installed_layout):
    """The reported bug: an install planned nothing, `cluster_profiles/` was not package data."""
    site, work, env = installed_layout

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "launcher.app.cli", *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=120)

    proc = cli("plan", "--json")
    assert proc.returncode == 0, proc.stderr
    proc = cli("submit", "--dry-run", "--json", "--profile", "h100-1x8", "--recipe", "tiny")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["run_dir"].startswith(env["HOME"])
    assert os.path.isfile(os.path.join(out["run_dir"], "code", "jobs", "runtime", "task.py"))
    assert all(os.path.isfile(script) for script in out["scripts"].values())
