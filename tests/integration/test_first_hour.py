"""The README's first hour, command by command, on the Slurm testbed: `minitron init` writes the profile from
what Slurm says, `check` passes, `submit --smoke` queues the bundled tiny recipe with the real stage jobs
(every model stage one fp32 process on a node's CPUs), `status --watch` follows it to DONE and `report` prints
its losses; at COLUMNS=100 every table fits and no cell is cut to '…'.

The commands are read from the README's block marked `first-hour`, so the README and this test cannot drift:
its `minitron` lines run here as written (through bash, so `$MT` and `$JOBS_PYTHON` expand as in the user's
shell), with MT a directory of this test's own, JOBS_PYTHON this Python (it has the jobs' stack) and the
testbed of the `slurm` fixture; its set-up lines (the launcher's venv, the testbed's up and down) are checked
to be there, and the fixture stands in for them. The README's recorded tables must have the headers the
commands print today. About 3-5 minutes on the 2-core CI machine (the smoke run is most of it).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from launcher.config.profile import load_profile

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MARKER = "<!-- first-hour:"
COLUMNS = 100
TABLE_ROW = re.compile(r"^[│┃]")
TABLE_LINE = re.compile(r"^[┏┃┡│├└╭╰]")  # a table's borders and rows (a long path in plain text may wrap)
WATCH_TIMEOUT_S = 1200


def first_hour_block(text: str) -> list[tuple[str, list[str]]]:
    """(command, the output the README shows under it) for each `$ ` line of the marked block."""
    start = text.index(MARKER)
    fence = text.index("```console\n", start) + len("```console\n")
    body = text[fence:text.index("\n```", fence)]
    steps: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    return steps


def width(line: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line.rstrip())


def headers(lines: list[str]) -> list[tuple[str, ...]]:
    """The header rows of the tables in `lines` (┃ … ┃) as their cells' text (widths follow the contents)."""
    return [tuple(cell.strip() for cell in line.strip().strip("┃").split("┃")) for line in lines
            if line.startswith("┃")]


def test_first_hour_commands_of_the_readme(slurm, tmp_path):
    steps = first_hour_block(README.read_text())
    commands = [command for command, _ in steps]
    minitron = [(command, shown) for command, shown in steps if command.startswith("minitron ")]
    setup = [command for command in commands if not command.startswith("minitron ")]
    # The set-up the fixture stands in for: a fresh venv with the launcher alone, MT and JOBS_PYTHON, the testbed.
    assert any(c.startswith("python3.11 -m venv ") and "pip install" in c and " -e ." in c for c in setup), setup
    assert any(c.startswith("export ") and "MT=" in c and "JOBS_PYTHON=" in c for c in setup), setup
    assert any(c.startswith("bash .ci/slurm-testbed up --dir $MT") and "source $MT/env.sh" in c for c in setup), setup
    assert any(c.startswith("bash .ci/slurm-testbed down --dir $MT") for c in setup), setup
    assert [c.split()[1] for c, _ in minitron] == ["init", "check", "submit", "status", "report"], commands

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "minitron"
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m launcher.app.cli \"$@\"\n")
    shim.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in slurm.env.items() if k not in ("COLUMNS", "MINITRON_PROFILE", "MINITRON_HOME")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", COLUMNS=str(COLUMNS), MT=str(tmp_path / "mt"),
               JOBS_PYTHON=sys.executable, MINITRON_HOME=str(tmp_path / "home"),
               PYTHONPATH=f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}")
    (tmp_path / "mt").mkdir()

    outputs: dict[str, str] = {}
    for command, shown in minitron:
        name = command.split()[1]
        timeout = WATCH_TIMEOUT_S if name == "status" else 300
        proc = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True,
                              timeout=timeout)
        out = proc.stdout
        outputs[name] = out
        assert proc.returncode == 0, f"$ {command}\nexit {proc.returncode}\n{proc.stderr}\n{out[-4000:]}"
        for line in out.splitlines():
            if TABLE_LINE.match(line):
                assert width(line) <= COLUMNS, f"$ {command}: a table wider than {COLUMNS} columns:\n{line}"
            if TABLE_ROW.match(line):
                assert "…" not in line, f"$ {command}: a cell cut to '…':\n{line}"
        # The README's recorded tables have today's headers (the status block shows the last refresh).
        printed = headers(out.splitlines())
        for header in headers(shown):
            assert header in printed, f"$ {command}: the README shows a header this command no longer prints: " \
                                      f"{header}; printed: {printed}"

    profile = load_profile(str(tmp_path / "mt" / "profile.yaml"))
    assert (profile.gpus_per_node, profile.container, profile.python, profile.job_dir) == \
        (0, "none", sys.executable, str(tmp_path / "mt" / "runs"))
    assert outputs["status"].rstrip().endswith("smoke run DONE: cluster ready for the real recipe"), \
        outputs["status"][-3000:]
    assert "Validation loss" in outputs["report"] and "teacher" in outputs["report"]
    final = subprocess.run([sys.executable, "-m", "launcher.app.cli", "status", "--json"], env=env, cwd=work,
                          capture_output=True, text=True, timeout=120)
    report = json.loads(final.stdout)
    assert report["overall"] == "DONE" and {s["state"] for s in report["stages"]} == {"DONE"}
    steps_done = {s["name"]: s.get("step") for s in report["stages"]}
    assert steps_done["finetune"] == 30 and steps_done["distill_depth"] == steps_done["distill_width"] == 20


@pytest.mark.parametrize("text, expected", [
    ("x\n<!-- first-hour: y -->\n```console\n$ a b\nout 1\nout 2\n$ c\n```\n$ not this\n",
     [("a b", ["out 1", "out 2"]), ("c", [])]),
])
def test_the_block_parser(text, expected):
    assert first_hour_block(text) == expected
