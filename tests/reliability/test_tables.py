"""Tables for people at the widths terminals have (issue 23): at COLUMNS=80, 100 and 200 `plan`, `status` and
`runs` fit every line in the width, cut no cell to nothing or to '…', keep their key columns and name the ones
left out; `--wide` shows every column; `--json` does not depend on the width."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rich.cells import cell_len

from tests.conftest import run_cli
from tests.reliability.test_markers import EXPECTED, forgetful_slurm, forgotten_run

WIDTHS = (80, 100, 200)
PLAN = ("stage", "after", "nodes×GPUs", "TP/PP/CP/DP", "MBS/GBS ×acc", "engine", "steps", "tokens", "mem/GPU GiB",
        "partition", "image", "limit", "est", "GPU·h")
STATUS = ("stage", "state", "job", "reason", "elapsed/limit", "est", "nodes", "exit", "progress", "loss (train/val)",
          "ETA")
RUNS = ("run", "state", "executor", "created", "stages", "directory")


def _table(stdout: str, width: int | None, bounded: str = "") -> tuple[list[str], list[list[str]]]:
    """The headers and the rows (each row's first line) of the one table in `stdout`, after checking that every
    line fits `width` and that no header or cell is empty or cut to an ellipsis (what rich does to a column
    that does not fit; a folded cell goes on in the next lines instead). `bounded`: a column whose long values
    views.text() ends with its own '…'."""
    lines = stdout.splitlines()
    if width is not None:
        too_long = [line for line in lines if cell_len(line) > width]
        assert not too_long, "\n".join(too_long)
    header = next(line for line in lines if line.startswith("┃"))
    headers = [cell.strip() for cell in header.split("┃")[1:-1]]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
    firsts = [row for row in rows if row[0]]  # a folded cell's further lines leave the others blank
    for row in [headers, *firsts]:
        assert len(row) == len(headers) and all(row), (headers, row)
        assert not any(cell.endswith("…") for h, cell in zip(headers, row) if h != bounded), (headers, row)
    return headers, firsts


def _left_out(stdout: str) -> list[str]:
    """The columns the caption under the table names as not shown."""
    found = re.search(r"not shown: (.*?) \(--wide shows them\)", " ".join(stdout.split()))
    return found.group(1).split(", ") if found else []


def _same_json(*args: str, env: dict) -> str:
    """`--json` of a command, checked to be the same bytes at every width and with --wide."""
    outputs = {run_cli(*args, "--json", *wide, env={**env, **columns}).stdout
               for columns in ({}, *({"COLUMNS": str(w)} for w in WIDTHS)) for wide in ((), ("--wide",))}
    assert len(outputs) == 1
    return outputs.pop()


@pytest.fixture
def failed_run(sandbox):
    """A run with stages DONE, INCOMPLETE, FAILED, LOST and CANCELLED, and the environment to ask about it."""
    env = forgetful_slurm(sandbox)
    return forgotten_run(sandbox, env).id, env


@pytest.mark.parametrize("width", WIDTHS)
def test_plan_fits_the_terminal(sandbox, width):
    env = {**sandbox.env, "COLUMNS": str(width)}
    proc = run_cli("plan", env=env)
    assert proc.returncode == 0, proc.stderr
    headers, rows = _table(proc.stdout, width)
    assert {"stage", "nodes×GPUs", "TP/PP/CP/DP", "mem/GPU GiB", "est"} <= set(headers)
    planned = json.loads(run_cli("plan", "--json", env=env).stdout)["stages"]
    assert [row[0] for row in rows] == [s["name"] for s in planned]
    left_out = [h for h in PLAN if h not in headers]
    assert _left_out(proc.stdout) == left_out and bool(left_out) == (width < 200)
    wide = run_cli("plan", "--wide", env=env)
    assert _table(wide.stdout, None)[0] == list(PLAN) and not _left_out(wide.stdout)


@pytest.mark.parametrize("width", WIDTHS)
def test_status_of_a_failed_run_fits_the_terminal(failed_run, width):
    run_id, env = failed_run
    proc = run_cli("status", run_id, env={**env, "COLUMNS": str(width)})
    assert proc.returncode == 4, proc.stderr
    headers, rows = _table(proc.stdout, width)
    assert {"stage", "state", "job", "elapsed/limit", "ETA"} <= set(headers)
    column = {h: [row[i] for row in rows] for i, h in enumerate(headers)}
    assert dict(zip(column["stage"], column["state"])) == {name: state for name, (state, _) in EXPECTED.items()}
    assert column["job"] == [str(100 + i) for i in range(len(rows))]
    assert "exit" in headers  # a failed run's exit codes outrank its empty progress and loss columns
    assert "ValueError: rank 3 had a bad shard" in " ".join(proc.stdout.split())
    left_out = [h for h in STATUS if h not in headers]
    assert sorted(_left_out(proc.stdout)) == sorted(left_out) and bool(left_out) == (width < 200)
    wide = run_cli("status", run_id, "--wide", env={**env, "COLUMNS": str(width)})
    headers, rows = _table(wide.stdout, None)
    assert headers == list(STATUS) and not _left_out(wide.stdout)
    assert "the scheduler no longer knows the job and it wrote no finish marker" in wide.stdout


def test_status_of_a_dry_run_fits_80_columns(sandbox):
    run = sandbox.dry_run(sandbox.env)
    proc = run_cli("status", run["run_id"], env={**sandbox.env, "COLUMNS": "80"})
    assert proc.returncode == 8, proc.stderr  # nothing submitted
    headers, rows = _table(proc.stdout, 80)
    assert {"stage", "state", "job", "elapsed/limit", "ETA"} <= set(headers)
    assert {row[headers.index("state")] for row in rows} == {"NOT_SUBMITTED"}


@pytest.mark.parametrize("width", WIDTHS)
def test_runs_fits_the_terminal(failed_run, sandbox, width):
    run_id, env = failed_run
    unreadable = sandbox.dry_run(env)
    state = Path(unreadable["run_dir"], "state.json")
    state.write_bytes(state.read_bytes()[:40])
    proc = run_cli("runs", env={**env, "COLUMNS": str(width)})
    assert proc.returncode == 0, proc.stderr
    headers, rows = _table(proc.stdout, width, bounded="state")
    assert {"run", "state", "created"} <= set(headers)
    assert {row[0] for row in rows} == {run_id, unreadable["run_id"]}  # whole, never folded
    assert {row[1].split()[0] for row in rows} == {"FAILED", "UNREADABLE"}
    wide = run_cli("runs", "--wide", env={**env, "COLUMNS": str(width)})
    assert _table(wide.stdout, None, bounded="state")[0] == list(RUNS)
    assert str(Path(unreadable["run_dir"]).parent) in wide.stdout


def test_json_is_the_same_at_every_width(failed_run):
    run_id, env = failed_run
    assert json.loads(_same_json("plan", env=env))["stages"]
    report = json.loads(_same_json("status", run_id, env=env))
    assert {s["name"]: s["state"] for s in report["stages"]} == {n: state for n, (state, _) in EXPECTED.items()}
    assert [row["run_id"] for row in json.loads(_same_json("runs", env=env))] == [run_id]


def test_runs_calls_a_run_slurm_cannot_tell_about_unknown_not_unreadable(sandbox):
    from launcher.runs.registry import open_run

    run = open_run(sandbox.dry_run(sandbox.env)["run_dir"])
    record = run.load_record()
    for index, stage in enumerate(record.stages.values()):
        stage.job_id = str(500 + index)
    run.save_record(record)
    proc = run_cli("runs", env={**sandbox.env, "COLUMNS": "80"})  # every Slurm client is a failing tripwire
    assert proc.returncode == 0, proc.stderr
    headers, rows = _table(proc.stdout, 80, bounded="state")
    assert rows[0][headers.index("state")].startswith("UNKNOWN") and "UNREADABLE" not in proc.stdout
    wide = run_cli("runs", "--wide", env=sandbox.env)
    assert "UNKNOWN Slurm is not answering" in wide.stdout and "UNREADABLE" not in wide.stdout
