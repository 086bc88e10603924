"""The profile's `tracking` block (W&B, MLflow): validated where it is read, refused with file, key and line,
carried by the plan into the configs of the training stages only, checked against this shell before submit and
against what the container offers. Logging itself runs in tests/jobs/test_stages.py (a real CPU training)."""

from __future__ import annotations

import copy
import json
import os
import re

import pytest

from jobs.contract import BY_NAME, ConfigError, validate
from launcher.app import compat
from launcher.config.profile import load_profile
from launcher.core.errors import UserError
from launcher.planning.planner import make_plan
from launcher.runs.prepare import load_inputs, preflight
from tests.conftest import run_cli, write_profile
from tests.rendered import local_profile, render_run, stage_configs
from tests.test_compat import GPU, canned, with_gpus

WANDB_OFFLINE = {"project": "minitron", "entity": "my-team", "mode": "offline"}


def test_a_tracking_block_loads_and_the_stages_get_what_it_turns_on(tmp_path):
    profile = load_profile(write_profile(tmp_path / "p.yaml", env_vars=["WANDB_API_KEY"], tracking={
        "wandb": {"project": "minitron"}, "mlflow": {"tracking_uri": f"file://{tmp_path}/jobdir/mlruns"}}))
    assert profile.tracking.for_stages() == {
        "wandb": {"project": "minitron", "entity": None, "mode": "online"},
        "mlflow": {"tracking_uri": f"file://{tmp_path}/jobdir/mlruns", "experiment": "minitron"}}
    assert load_profile(write_profile(tmp_path / "q.yaml")).tracking.for_stages() is None
    server = load_profile(write_profile(tmp_path / "r.yaml", tracking={
        "mlflow": {"tracking_uri": "https://mlflow.example.com:5000", "experiment": "kd"}}))
    assert server.tracking.mlflow.experiment == "kd"


@pytest.mark.parametrize("tracking, extra, key, says", [
    ({"wandb": {"project": "minitron"}}, {}, "tracking.wandb.mode",
     "logs in with WANDB_API_KEY, which env_vars does not list"),
    ({"wandb": {**WANDB_OFFLINE, "projekt": "x"}}, {}, "tracking.wandb.projekt", "unknown key"),
    ({"wandb": {**WANDB_OFFLINE, "mode": "sometimes"}}, {}, "tracking.wandb.mode", "expected one of"),
    ({"wandb": {**WANDB_OFFLINE, "project": "team/minitron"}}, {}, "tracking.wandb.project", "is not a W&B name"),
    ({"mflow": {}}, {}, "tracking.mflow", "unknown key"),
    ({"mlflow": {"tracking_uri": "file:mlruns"}}, {}, "tracking.mlflow.tracking_uri", "not an absolute path"),
    ({"mlflow": {"tracking_uri": "file://mlruns/minitron"}}, {}, "tracking.mlflow.tracking_uri",
     "not an absolute path"),
    ({"mlflow": {"tracking_uri": "sqlite:////lustre/mlflow.db"}}, {}, "tracking.mlflow.tracking_uri",
     "mlflow-skinny writes to file:, http:, https:"),
    ({"mlflow": {"tracking_uri": "https://"}}, {}, "tracking.mlflow.tracking_uri", "names no server"),
    ({"mlflow": {"tracking_uri": "https://me:hunter2@mlflow.example.com"}}, {}, "tracking.mlflow.tracking_uri",
     "holds credentials"),
    ({"mlflow": {"tracking_uri": "file:///scratch/mlruns"}}, {"mounts": ["/lustre/cache:/cache"]},
     "tracking.mlflow.tracking_uri", "under no path the container mounts"),
])
def test_a_bad_tracking_block_is_refused_naming_file_key_and_line(tmp_path, tracking, extra, key, says):
    path = write_profile(tmp_path / "p.yaml", tracking=tracking, **extra)
    with pytest.raises(UserError) as info:
        load_profile(path)
    err = info.value
    assert (err.file, err.key) == (path, key) and err.line is not None and says in str(err), str(err)
    assert "hunter2" not in str(err) + (err.hint or "")


def test_the_cli_refuses_a_bad_block_with_one_line_and_exit_2(tmp_path, minitron_home):
    path = write_profile(tmp_path / "p.yaml", tracking={"wandb": {"project": "minitron", "mode": "on"}})
    proc = run_cli("submit", "--dry-run", "--profile", path, env={"MINITRON_HOME": str(minitron_home)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert path in proc.stderr and "tracking.wandb.mode" in proc.stderr and "line" in proc.stderr
    assert not (tmp_path / "jobdir").exists()  # nothing created


def test_a_file_store_without_a_container_is_not_checked_against_mounts(tmp_path):
    load_profile(write_profile(tmp_path / "p.yaml", container="none",
                               tracking={"mlflow": {"tracking_uri": "file:///scratch/mlruns"}}))


def test_only_the_training_stages_carry_tracking_one_run_name_each(tmp_path):
    run = render_run(tmp_path, tracking={"wandb": WANDB_OFFLINE,
                                         "mlflow": {"tracking_uri": f"file://{tmp_path}/mlruns"}})
    configs = stage_configs(run)
    training = {name for name, cfg in configs.items() if BY_NAME[cfg["kind"]].trains}
    assert training == {"finetune", "distill_width"}
    assert {name for name, cfg in configs.items() if "tracking" in cfg} == training
    for name in training:
        tracking = configs[name]["tracking"]
        assert tracking["run_name"] == f"{run.id}/{name}"
        assert tracking["wandb"] == {**WANDB_OFFLINE, "id": f"{run.id}-{name}", "group": run.id,
                                     "job_type": configs[name]["kind"]}
        assert tracking["mlflow"] == {"tracking_uri": f"file://{tmp_path}/mlruns", "experiment": "minitron"}
    plan = json.loads(open(run.layout.plan).read())
    assert {s["name"] for s in plan["stages"] if s["tracking"]} == training


def test_the_contract_keeps_tracking_to_training_kinds_and_known_values(tmp_path):
    configs = stage_configs(render_run(tmp_path, tracking={"wandb": WANDB_OFFLINE}))
    validate(configs["finetune"])
    broken = {"kind data does not train": ("data", lambda c: None),
              "run_name must be": ("finetune", lambda c: c["tracking"].update(run_name="a run'/x")),
              "wandb.mode must be": ("finetune", lambda c: c["tracking"]["wandb"].update(mode="dryrun")),
              "unknown key(s) neptune": ("finetune", lambda c: c["tracking"].update(neptune={})),
              "expected an absolute path": ("finetune", lambda c: c["tracking"].update(
                  mlflow={"tracking_uri": "file:mlruns", "experiment": "e"}))}
    for says, (stage, change) in broken.items():
        raw = copy.deepcopy(configs[stage])
        raw.setdefault("tracking", copy.deepcopy(configs["finetune"]["tracking"]))
        change(raw)
        with pytest.raises(ConfigError, match=re.escape(says)):
            validate(raw)


def test_preflight_wants_the_wandb_key_in_this_shell_for_online_mode(tmp_path, monkeypatch):
    path = local_profile(tmp_path, env_vars=["WANDB_API_KEY"], tracking={"wandb": {"project": "minitron"}})
    inputs = load_inputs(path, "tiny", [])
    plan = make_plan(inputs.profile, inputs.recipe)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with pytest.raises(UserError) as info:
        preflight(inputs, plan)
    assert (info.value.key, info.value.file) == ("env_vars", path) and "not set in this shell" in str(info.value)
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    preflight(inputs, plan)
    offline = load_inputs(local_profile(tmp_path, tracking={"wandb": WANDB_OFFLINE}), "tiny", [])
    monkeypatch.delenv("WANDB_API_KEY")
    preflight(offline, plan)  # offline: no key, no network


def test_a_tracker_the_container_lacks_fails_the_probe_only_when_turned_on():
    report = with_gpus(canned())
    report["imports"]["mlflow"] = {"ok": False, "error": "ModuleNotFoundError: No module named 'mlflow'"}
    assert compat.compare(report, GPU) == []
    problems = compat.compare(report, {**GPU, "tracking": ["mlflow", "wandb"]})
    assert len(problems) == 1 and problems[0].severity == "FAIL", [p.line() for p in problems]
    assert "tracking.mlflow" in problems[0].what and "finetune, distill" in problems[0].what
    assert "mlflow-skinny" in problems[0].fix
    data_only = {**GPU, "kinds": ["data"], "tracking": ["mlflow"]}
    assert compat.compare(report, data_only) == []


def test_the_bundled_profile_s_commented_example_loads_once_uncommented(tmp_path, monkeypatch):
    monkeypatch.setenv("USER", "me")
    bundled = os.path.join(os.path.dirname(__file__), "..", "cluster_profiles", "h100-4x8.yaml")
    text = open(bundled).read()
    start = text.index("# tracking:")
    block = [line[2:] for line in text[start:].splitlines() if line.startswith("# ")]
    (tmp_path / "p.yaml").write_text(text + "\n".join(block) + "\n")
    profile = load_profile(str(tmp_path / "p.yaml"))
    assert profile.tracking.wandb.mode == "online" and profile.tracking.wandb.entity == "my-team"
    assert profile.tracking.mlflow.tracking_uri == "file:///lustre/fsw/me/minitron-runs/mlruns"
    assert load_profile("h100-4x8").tracking.for_stages() is None  # as bundled: off
