"""The bad-input corpus (bad_inputs/cases.yaml) through `minitron plan` and `minitron submit`.

Every malformed profile, recipe and --set override must give exit code 2 and exactly one
`minitron: error:` line naming the file, the key and (where YAML gives it) the line, with no
traceback, nothing queued (a tripwire shadows every Slurm client) and no run directory.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import pytest
import yaml

from launcher.core.errors import UserError
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
    return args + case.get("args", []), files


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


def test_control_good_inputs_reach_slurm_and_trip_the_wire(sandbox):
    """The good input passes every check of its own and reaches Slurm: the submit preflight's sinfo
    (partitions, GPUs) is the first client it calls. Slurm not answering there creates nothing."""
    args, _ = _arguments({}, sandbox)
    proc = run_cli("submit", *args, env=sandbox.env)
    assert proc.returncode == 5, proc.stderr
    assert sandbox.tripwire_calls() and sandbox.tripwire_calls()[0].startswith("sinfo ")
    assert "tripwire: no Slurm here" in proc.stderr  # Slurm's own error is shown
    assert sandbox.leftovers() == []


@pytest.mark.parametrize("change, env", [
    ({"containers": {"nemo": "@TMP@/plainfile"}}, {}),  # a squashfs image that is here
    ({"containers": {"nemo": "@TMP@/missing.sqsh"}, "check_mounts": False}, {}),  # only the compute nodes see it
    ({"env_vars": ["NCCL_DEBUG=WARN"]}, {}),  # the token set in the shell reaches sbatch's environment
    ({"env_vars": ["HF_TOKEN", "HF_HUB_OFFLINE=1"]}, {"HF_TOKEN": ""}),  # the gated model from HF_HOME's cache
    ({"env_vars": ["HF_HOME=/hf-cache/hub"], "mounts": ["@TMP@/mnt:/hf-cache"]}, {}),  # HF_HOME under a mount
    ({"mem_per_node": "480G"}, {}),
    ({"gpu": {"model": "RTX-4090", "memory_gib": 24, "achievable_tflops": 80}}, {}),  # unknown, with its speed
    ({"gpu": {"model": "NVIDIA A100-SXM4-40GB", "memory_gib": 39.4}, "max_continuations": 0}, {}),
])
def test_control_what_the_preflight_allows_reaches_slurm(sandbox, change, env):
    """Each preflight rule of the corpus lets through the input next to the one it refuses: the submit
    reaches Slurm (the tripwire's sinfo, exit 5), with a gated model (the recipe's source) throughout."""
    profile = yaml.safe_load(sandbox.substitute((CORPUS / "good" / "profile.yaml").read_text()))
    profile.update(yaml.safe_load(sandbox.substitute(yaml.safe_dump(change))))
    path = sandbox.root / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    args = ["--profile", str(path), "--recipe", str(CORPUS / "good" / "recipe.yaml"),
            "--set", "model.source=hf://meta-llama/Llama-3.1-8B"]
    shell = {**sandbox.env, "HF_TOKEN": "set-in-the-shell", "HUGGING_FACE_HUB_TOKEN": "", "HF_HUB_OFFLINE": "", **env}
    proc = run_cli("submit", *args, env=shell)
    assert proc.returncode == 5 and "tripwire: no Slurm here" in proc.stderr, proc.stderr
    assert sandbox.leftovers() == []


def _first_error(case: dict, sandbox, monkeypatch) -> UserError | None:
    """The error the launcher gives for `case` at load or plan time, found in-process."""
    from launcher.planning.planner import make_plan
    from launcher.runs.prepare import load_inputs

    args, _ = _arguments(case, sandbox)
    for name, value in {**sandbox.env, **{k: sandbox.substitute(v) for k, v in case.get("env", {}).items()}}.items():
        monkeypatch.setenv(name, value)
    extra = case.get("args", [])
    nodes = int(extra[extra.index("--nodes") + 1]) if "--nodes" in extra else None
    try:
        inputs = load_inputs(args[1], args[3], case.get("set", []), nodes)
        make_plan(inputs.profile, inputs.recipe)
    except UserError as exc:
        return exc
    return None


def _top_level_spans(text: str) -> dict[str, set[int]]:
    """Top-level key → the lines its entries span (each to the line before the next top-level key);
    read line by line, so a file that does not load (a duplicate key) still has spans."""
    starts = [(number, match.group(1).strip("'\"")) for number, line in enumerate(text.splitlines(), 1)
              if (match := re.match(r"([^\s#-][^:]*):", line))]
    spans: dict[str, set[int]] = {}
    for (line, key), (end, _) in zip(starts, starts[1:] + [(len(text.splitlines()) + 1, "")]):
        spans.setdefault(key, set()).update(range(line, end))
    return spans


def _hunks(good: str, bad: str) -> list[tuple[set[int], set[int]]]:
    """Each changed block: (1-based lines of the good file it replaces, lines of the case file it holds)."""
    matcher = difflib.SequenceMatcher(a=good.splitlines(), b=bad.splitlines(), autojunk=False)
    return [(set(range(i1 + 1, i2 + 1)), set(range(j1 + 1, j2 + 1)))
            for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]


# Cases whose defect shows only at submission (unset variable, missing mount source) or when the run
# directory is made (job_dir on disk, MINITRON_HOME): the CLI test above checks their message.
LATE_CASES = {"profile-job-dir-read-only", "profile-job-dir-under-a-file", "profile-job-dir-registry-is-a-file",
              "profile-job-dir-in-proc", "env-minitron-home-is-a-file", "profile-required-env-var-unset",
              "profile-mount-source-missing", "profile-image-squashfs-missing", "profile-gated-model-without-token",
              "profile-gated-tokenizer-token-unset"}


def test_control_every_case_file_is_bad_only_where_it_says(sandbox, monkeypatch):
    """The good files are accepted. Each case is refused with exactly the key and line it names (not
    merely a message containing them), and every block in which its file differs from the good one
    lies inside that key's top-level entry (or the cross-field partners its `also` lists): no case
    passes because of a second, unrelated defect."""
    assert _first_error({}, sandbox, monkeypatch) is None, "the good profile and recipe must be accepted"
    late, problems = [], []
    for case in CASES:
        error = _first_error(case, sandbox, monkeypatch)
        monkeypatch.undo()
        if error is None:
            late.append(case["id"])
            continue
        if error.key != case.get("key"):
            problems.append(f"{case['id']}: refused at {error.key!r}: {error}")
        if case.get("line") and case.get("names") in ("profile", "recipe") and error.line != case["line"]:
            problems.append(f"{case['id']}: refused at line {error.line}: {error}")
        for kind in ("profile", "recipe"):
            if not case.get(kind):
                continue
            good = sandbox.substitute((CORPUS / "good" / f"{kind}.yaml").read_bytes()).decode()
            bad = sandbox.substitute((CORPUS / case[kind]).read_bytes()).decode("utf-8", "replace")
            hunks = _hunks(good, bad)
            if not hunks:
                problems.append(f"{case['id']}: the case file is the good file")
            if not case.get("key"):  # a syntax error: the file is bad where the parser says
                if case.get("line") and not any(new and min(new) <= case["line"] for _, new in hunks):
                    problems.append(f"{case['id']}: line {case['line']} is before any line the case changed")
                continue
            tops = {case["key"].split(".")[0].split("[")[0], *case.get("also", [])}
            spans_good, spans_bad = _top_level_spans(good), _top_level_spans(bad)
            in_good = set().union(*(spans_good.get(top, set()) for top in tops))
            in_bad = set().union(*(spans_bad.get(top, set()) for top in tops))
            for old, new in hunks:
                if not ((old and old <= in_good) or (new and new <= in_bad)):
                    problems.append(f"{case['id']}: lines {sorted(new) or sorted(old)} differ from the good {kind} "
                                    f"outside {', '.join(sorted(tops))}")
    assert not problems, "\n".join(problems)
    assert set(late) <= LATE_CASES, f"accepted at load and plan: {sorted(set(late) - LATE_CASES)}"
