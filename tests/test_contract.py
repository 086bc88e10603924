"""The contract both sides import (jobs/contract/, docs/stage-config.md): the launcher's
stage configs read back through the jobs' reader for the tutorial and the tiny recipe on Slurm and
local profiles; markers are never followed through links nor trusted when oversized; progress
lines carry their time so status can tell a stall."""

import json
import os
import subprocess
import sys

import pytest

from jobs.contract import (BY_NAME, SCHEMA_VERSION, SECTION_KEYS, Marker, RunLayout, parse_progress, progress_line, read_markers,
                           read_stage_config, validate, write_complete, write_failure)
from jobs.contract.markers import MAX_MARKER_BYTES
from tests.conftest import REPO, run_cli


@pytest.mark.parametrize("profile, recipe", [("h100-1x8", "minitron-8b-wikitext"), ("h100-4x8", "minitron-8b-wikitext"),
                                             ("local", "tiny"), ("a100-40g-2x8", "tiny")])
def test_every_stage_config_satisfies_the_jobs_validator(tmp_path, profile, recipe):
    env = {"MINITRON_HOME": str(tmp_path / "home"), "HOME": str(tmp_path), "USER": "ci"}
    extra = ["--set", "stages.export.enabled=true"]
    proc = run_cli("submit", "--dry-run", "--json", "--profile", profile, "--recipe", recipe, *extra, env=env)
    if profile == "h100-4x8":  # its job_dir is under /lustre: point it somewhere writable
        text = open(os.path.join(os.path.dirname(__file__), "..", "cluster_profiles", "h100-4x8.yaml")).read()
        path = tmp_path / "p.yaml"
        path.write_text(text.replace("/lustre/fsw/$USER/minitron-runs", str(tmp_path / "jobs")))
        proc = run_cli("submit", "--dry-run", "--json", "--profile", str(path), "--recipe", recipe, *extra, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    run_dir = out["run_dir"]
    names = sorted(os.listdir(os.path.join(run_dir, "stages")))
    named = out["rendered_for"] or run_dir  # a /lustre job_dir seen from here: the files name it, not run_dir
    assert "export.json" in names and "report.json" in names
    for name in names:
        config = read_stage_config(os.path.join(run_dir, "stages", name))  # validates: ConfigError on disagreement
        assert config.work_dir == os.path.join(named, "work") and config.schema_version == SCHEMA_VERSION
        validate(config.to_json())
    report = json.load(open(os.path.join(run_dir, "stages", "report.json")))
    assert report["inputs"]["teacher"] == os.path.join(named, "work", "import", "model")
    for name in names:  # a stage's config holds the sections its kind reads, and no other
        config = json.load(open(os.path.join(run_dir, "stages", name)))
        sections = set(config) & set(SECTION_KEYS) - {"runtime"}
        assert sections == set(BY_NAME[config["kind"]].sections), name


def test_a_config_with_a_section_its_kind_does_not_read_is_refused(tmp_path):
    env = {"MINITRON_HOME": str(tmp_path / "home"), "HOME": str(tmp_path), "USER": "ci"}
    proc = run_cli("submit", "--dry-run", "--json", "--profile", "local", "--recipe", "tiny", env=env)
    config = json.load(open(os.path.join(json.loads(proc.stdout)["run_dir"], "stages", "data.json")))
    validate(config)
    with pytest.raises(ValueError, match="does not read the section"):
        validate({**config, "train": {"steps": 1}})
    with pytest.raises(ValueError, match="needs the 'data' section"):
        validate({k: v for k, v in config.items() if k != "data"})


def test_markers_are_never_read_through_a_link_nor_when_oversized(tmp_path):
    layout = RunLayout(str(tmp_path))
    os.makedirs(layout.markers)
    outputs = tmp_path / "out"
    outputs.mkdir()
    write_complete(layout, "data", {"data": str(outputs)})
    assert read_markers(layout, "data").complete
    elsewhere = tmp_path / "planted.json"
    elsewhere.write_text(json.dumps({"outputs": {"data": str(outputs)}, "finished_at": 1}))
    os.symlink(elsewhere, layout.marker("import", Marker.COMPLETE))
    assert not read_markers(layout, "import").complete
    with open(layout.marker("finetune", Marker.STARTED), "w") as handle:
        handle.write("1 n1 100 0 " + "x" * MAX_MARKER_BYTES)
    assert read_markers(layout, "finetune").started is None


def test_failure_marker_first_writer_wins(tmp_path):
    layout = RunLayout(str(tmp_path))
    os.makedirs(layout.markers)
    assert write_failure(layout, "s", 3, "ValueError: x", rank=4, host="n2", job_id="9")
    assert not write_failure(layout, "s", 1, None, rank=0, host="n1", job_id="9")
    failure = read_markers(layout, "s").failure
    assert (failure.exit_code, failure.rank, failure.exception) == (3, 4, "ValueError: x")


def test_progress_lines_round_trip_with_step_time():
    lines = [progress_line(step, 10, 1.0 / step, now=1000.0 + 2.0 * step) for step in range(1, 6)]
    lines.insert(2, "MINITRON_PROGRESS step=x total=y")  # malformed: skipped
    progress = parse_progress(lines + [progress_line(5, 10, val_loss=0.7, now=1011.0)])
    assert (progress.step, progress.total, progress.val_loss, progress.time) == (5, 10, 0.7, 1011.0)
    assert progress.train_loss == pytest.approx(0.2) and progress.step_time_s == pytest.approx(2.0)


def test_the_contract_imports_only_the_standard_library():
    code = ("import sys, jobs.contract, jobs.runtime.task; mods = set(sys.modules); "
            "sys.exit(bool({'torch', 'nemo', 'yaml', 'launcher'} & {m.split('.')[0] for m in mods}))")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_the_launchers_choices_are_the_contracts():
    """A precision or attention path the launcher accepts is one the jobs' validator accepts, and back."""
    from typing import get_args, get_type_hints

    from jobs.contract import ATTENTION, PRECISIONS
    from launcher.config.profile import ClusterProfile
    from launcher.config.recipe import Precision

    assert get_args(Precision) == PRECISIONS
    assert get_args(get_type_hints(ClusterProfile)["attention"]) == ATTENTION
