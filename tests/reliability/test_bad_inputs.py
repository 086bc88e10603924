"""The bad-input corpus (bad_inputs/cases.yaml) through `minitron plan` and `minitron submit`.

Every malformed profile, recipe and --set override must give exit code 2 and exactly one
`minitron: error:` line naming the file, the key and (where YAML gives it) the line, with no
traceback, nothing queued (a tripwire shadows every Slurm client) and no run directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli
from tests.reliability.conftest import CORPUS

CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text())
RUNS_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _copy_in(sandbox, rel: str) -> Path:
    """The corpus file, with its placeholders filled in, under the same name in the sandbox."""
    target = sandbox.root / "case" / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(sandbox.substitute((CORPUS / rel).read_bytes()))
    return target


def _arguments(case: dict, sandbox) -> tuple[list[str], dict[str, Path]]:
    files = {}
    if "profile_arg" in case:
        profile = sandbox.substitute(case["profile_arg"])
    else:
        files["profile"] = _copy_in(sandbox, case.get("profile", "good/profile.yaml"))
        profile = str(files["profile"])
    if "recipe_arg" in case:
        recipe = case["recipe_arg"]
    else:
        files["recipe"] = _copy_in(sandbox, case.get("recipe", "good/recipe.yaml"))
        recipe = str(files["recipe"])
    args = ["--profile", profile, "--recipe", recipe]
    for override in case.get("set", []):
        args += ["--set", override]
    return args, files


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def test_the_corpus_is_big_and_covers_every_kind():
    assert len(CASES) >= 40
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    kinds = {c["id"].split("-")[0] for c in CASES}
    assert {"profile", "recipe", "set"} <= kinds
    for case in CASES:
        for rel in (case.get("profile"), case.get("recipe")):
            assert rel is None or (CORPUS / rel).is_file(), rel


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input_is_refused_cleanly(case, sandbox):
    if case.get("unless_root") and RUNS_AS_ROOT:
        pytest.skip("root writes into a mode-0555 directory; the file-in-the-way cases cover this as root")
    args, files = _arguments(case, sandbox)
    env = dict(sandbox.env)
    env.update({k: sandbox.substitute(v) for k, v in case.get("env", {}).items()})
    for command in case.get("commands", ["plan", "submit"]):
        proc = run_cli(command, *args, env=env)
        where = f"{case['id']} / minitron {command}:\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        assert proc.returncode == 2, where
        assert "Traceback" not in proc.stderr + proc.stdout, where
        assert proc.stdout == "", where
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("minitron: error: "), where
        message = lines[0]
        names = case.get("names")
        if names in ("profile", "recipe"):
            name = str(files[names])
            assert name in message, where
            if case.get("line"):
                assert f"{name}:{case['line']}: " in message, where
        elif names == "set":
            assert f"--set {_one_line(case['set'][0])}" in message, where
        elif names:
            assert names in message, where
        if case.get("key"):
            assert case["key"] in message, where
        assert case.get("says", "") in message, where
        assert sandbox.tripwire_calls() == [], f"a Slurm client was called: {sandbox.tripwire_calls()}\n{where}"
        assert sandbox.leftovers() == [], f"left behind: {sandbox.leftovers()}\n{where}"
    assert not (sandbox.root / "pwned").exists()


# -- controls: the checks above can fail ----------------------------------------------------------

def test_control_good_inputs_plan_and_dry_run(sandbox):
    args, _ = _arguments({}, sandbox)
    proc = run_cli("plan", *args, env=sandbox.env)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("submit", "--dry-run", *args, env=sandbox.env)
    assert proc.returncode == 0, proc.stderr
    assert sandbox.leftovers(), "a dry run writes a run directory: the leftovers check would see it"


def test_control_good_inputs_reach_sbatch_and_trip_the_wire(sandbox):
    args, _ = _arguments({}, sandbox)
    proc = run_cli("submit", *args, env=sandbox.env)
    assert proc.returncode == 7, proc.stderr
    assert sandbox.tripwire_calls() and sandbox.tripwire_calls()[0].startswith("sbatch ")
    assert "tripwire: no Slurm here" in proc.stderr  # Slurm's own error is shown


def test_control_every_case_file_is_bad_only_where_it_says(sandbox):
    """Each case file differs from the good file it was made from; the good files are good."""
    good_profile = (CORPUS / "good" / "profile.yaml").read_bytes()
    good_recipe = (CORPUS / "good" / "recipe.yaml").read_bytes()
    for case in CASES:
        for rel, good in ((case.get("profile"), good_profile), (case.get("recipe"), good_recipe)):
            if rel:
                assert (CORPUS / rel).read_bytes() != good, case["id"]
