"""Two users' clicks at once on the real testbed (issue 24): two `submit` of the same profile and recipe
in the same instant, two `resume` of one run at once, and readers of the run record while `resume` and
`cancel` rewrite it. Slurm, the CLI and the record are the real ones; only the timing is forced.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

from helpers import REPO, Cli, stages, write_test_profile, write_test_recipe


def _cli_process(cli: Cli, *args: str) -> subprocess.Popen:
    env = {**os.environ, **cli.env, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "launcher.app.cli", *args], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _together(cli: Cli, *commands: list[str]) -> list[tuple[int, str, str]]:
    """Start every command, then wait for all: they overlap in time, as two terminals would."""
    procs = [_cli_process(cli, *command) for command in commands]
    outputs = [p.communicate(timeout=120) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]


def _dependencies(slurm, job_id: str) -> set[str]:
    """The job ids a queued job depends on, as slurmctld holds them."""
    proc = slurm.run(["scontrol", "show", "job", job_id])
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"Dependency=(\S+)", proc.stdout)
    return set(re.findall(r":(\d+)", match.group(1))) if match and match.group(1) != "(null)" else set()


class RecordReader(threading.Thread):
    """Reads state.json as fast as it can until stopped; every read must be one whole JSON record."""

    def __init__(self, path: str):
        super().__init__(daemon=True)
        self.path, self.reads, self.torn, self.stop = path, 0, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            text = Path(self.path).read_text()
            try:
                json.loads(text)
            except ValueError:
                self.torn.append(text[:200])
            self.reads += 1


def test_two_submits_at_once_make_two_runs_that_never_wait_on_each_other(slurm, tmp_path):
    profile = write_test_profile(tmp_path / "profile.yaml", tmp_path / "jobs")
    recipe = write_test_recipe(tmp_path / "recipe.yaml", finetune={"steps": 3}, distill={"steps": 3})
    cli = Cli(slurm, tmp_path / "home")
    extra = ["--set", "students=[depth]", "--json"]
    results = _together(cli, ["submit", "--profile", profile, "--recipe", recipe, *extra],
                        ["submit", "--profile", profile, "--recipe", recipe, *extra])
    for code, _, err in results:
        assert code == 0, err
    subs = [json.loads(out) for _, out, _ in results]
    assert subs[0]["run_id"] != subs[1]["run_id"] and subs[0]["run_dir"] != subs[1]["run_dir"]
    jobs = [set(sub["jobs"].values()) for sub in subs]
    assert not jobs[0] & jobs[1], "every job belongs to one run"
    for own, other in ((jobs[0], jobs[1]), (jobs[1], jobs[0])):
        for job in own:
            if slurm.job_info(job):
                assert not _dependencies(slurm, job) & other, f"job {job} waits on the other run"
    for sub in subs:
        code, report = cli.wait(sub["run_id"], timeout=240)
        assert code == 0, json.dumps(report, indent=1)
    assert sorted(r["run_id"] for r in json.loads(cli("runs", "--json").stdout)) == \
        sorted(sub["run_id"] for sub in subs)


def test_two_resumes_at_once_queue_each_stage_once_and_readers_never_see_a_torn_record(slurm, tmp_path):
    profile = write_test_profile(tmp_path / "profile.yaml", tmp_path / "jobs")
    recipe = write_test_recipe(tmp_path / "recipe.yaml", finetune={"steps": 3}, distill={"steps": 3})
    cli = Cli(slurm, tmp_path / "home")
    sub = cli.submit(profile, recipe, "--set", "students=[depth]")
    run_id, run_dir = sub["run_id"], sub["run_dir"]
    failing = Path(run_dir, "fail-distill_depth")
    failing.touch()
    code, report = cli.wait(run_id, timeout=240)
    assert code == 4 and stages(report)["distill_depth"]["state"] == "FAILED", json.dumps(report, indent=1)
    failing.unlink()
    reader = RecordReader(os.path.join(run_dir, "state.json"))
    reader.start()
    try:
        results = _together(cli, ["resume", run_id], ["resume", run_id])
        codes = sorted(code for code, _, _ in results)
        # one resumes; the other finds the run busy (6) or, once the first is done, nothing to resume (0)
        assert codes in ([0, 0], [0, 6]), results
        assert sum("nothing to resume" in out for _, out, _ in results) == (1 if codes == [0, 0] else 0), results
        held = Path(run_dir, "hold-report")
        held.touch()
        cli.wait(run_id, timeout=120, until=lambda c, r: stages(r)["report"]["state"] == "RUNNING")
        cancels = _together(cli, ["cancel", run_id, "report"], ["status", run_id, "--json"], ["cancel", run_id])
        assert sorted(code for code, _, _ in cancels[::2]) in ([0, 0], [0, 6]), cancels
        assert cancels[1][0] in (3, 4), cancels[1]
        json.loads(cancels[1][1])
        held.unlink()
    finally:
        reader.stop.set()
        reader.join(timeout=10)
    assert reader.reads > 100 and reader.torn == [], (reader.reads, reader.torn[:3])
    state = json.loads(Path(run_dir, "state.json").read_text())
    for name in ("distill_depth", "report"):
        assert len(state["stages"][name]["attempts"]) == 2, (name, state["stages"][name])
    for name in ("data", "import", "finetune", "prune_depth", "prune_width"):
        assert len(state["stages"][name]["attempts"]) == 1, (name, state["stages"][name])
    code, report = cli.wait(run_id, timeout=60, until=lambda c, r: stages(r)["report"]["state"] != "CANCELLING")
    assert code == 4 and stages(report)["report"]["state"] == "CANCELLED", json.dumps(report, indent=1)
