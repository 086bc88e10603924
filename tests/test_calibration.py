"""Calibration storage: measured stage times recorded under $MINITRON_HOME, read back by the planner."""

import json
import os
import stat

import pytest

from launcher.planning import calibration
from launcher.core.errors import UserError
from launcher.planning.planner import make_plan
from launcher.config.profile import load_profile
from launcher.config.recipe import load_recipe


def tiny_plan():
    return make_plan(load_profile("device-h200"), load_recipe("tiny"))


def record_finetune(startup_s=20.0, step_s=0.01):
    stage = tiny_plan().stage("finetune")
    calibration.record([calibration.Measurement(*calibration.stage_keys(stage), startup_s=startup_s, step_s=step_s,
                                                steps=stage.steps)])
    return stage


def test_plan_uses_recorded_times_and_says_so(minitron_home):
    model = tiny_plan().stage("finetune")
    assert model.calibrated_runs == 0 and "calibrated" not in model.why
    record_finetune(20.0, 0.01)
    record_finetune(30.0, 0.03)
    record_finetune(25.0, 0.02)
    plan = tiny_plan()
    s = plan.stage("finetune")
    assert s.calibrated_runs == 3 and "calibrated from 3 runs" in s.why
    assert s.est_startup_s == 25.0 and s.est_step_s == 0.02  # medians
    assert s.est_hours == pytest.approx((25.0 + 300 * 0.02) / 3600, abs=1e-3)
    assert plan.to_json()["stages"][2]["calibrated_runs"] == 3
    other = plan.stage("distill_depth")  # another key: still the model
    assert other.calibrated_runs == 0


def test_file_is_private_and_written_whole(minitron_home):
    record_finetune()
    path = minitron_home / "calibration.json"
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    data = json.loads(path.read_text())
    [runs] = data["records"].values()
    assert runs[0]["startup_s"] == 20.0 and runs[0]["steps"] == 300
    assert sorted(p.name for p in minitron_home.iterdir()) == ["calibration.json", "calibration.lock"]


def test_keeps_the_newest_runs_per_key(minitron_home):
    for i in range(calibration.MAX_RUNS_PER_KEY + 5):
        calibration.record([calibration.Measurement("p", "s", "l", startup_s=float(i))])
    [runs] = json.loads((minitron_home / "calibration.json").read_text())["records"].values()
    assert len(runs) == calibration.MAX_RUNS_PER_KEY and runs[-1]["startup_s"] == calibration.MAX_RUNS_PER_KEY + 4


def test_symlinked_file_is_never_followed(minitron_home, tmp_path):
    minitron_home.mkdir(mode=0o700)
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    os.symlink(target, minitron_home / "calibration.json")
    with pytest.raises(UserError, match="symlink"):
        tiny_plan()
    with pytest.raises(UserError, match="symlink"):
        calibration.record([calibration.Measurement("p", "s", "l", startup_s=1.0)])
    assert target.read_text() == "{}"


def test_file_writable_by_others_is_refused(minitron_home):
    record_finetune()
    os.chmod(minitron_home / "calibration.json", 0o666)
    with pytest.raises(UserError, match="writable by others"):
        tiny_plan()


def test_damaged_file_is_ignored_then_replaced(minitron_home):
    minitron_home.mkdir(mode=0o700)
    path = minitron_home / "calibration.json"
    path.write_text('{"version": 1, "records": {"x": ')
    os.chmod(path, 0o600)
    assert tiny_plan().stage("finetune").calibrated_runs == 0
    record_finetune()
    assert tiny_plan().stage("finetune").calibrated_runs == 1


@pytest.mark.parametrize("kwargs", [dict(startup_s=-1.0), dict(startup_s=float("nan")), dict(step_s="fast"),
                                    dict(profile_key=""), dict(layout_key="a|b")])
def test_bad_measurements_are_rejected(minitron_home, kwargs):
    args = dict(profile_key="p", shape_key="s", layout_key="l", startup_s=1.0, step_s=None, steps=None) | kwargs
    with pytest.raises(ValueError):
        calibration.record([calibration.Measurement(**args)])
    assert not (minitron_home / "calibration.json").exists()


def test_a_batch_is_one_write_and_a_known_source_is_not_counted_twice(minitron_home):
    first = [calibration.Measurement("p", "s", f"l{i}", startup_s=float(i), source=f"run/stage{i}/1") for i in range(3)]
    assert calibration.record(first) == 3
    assert calibration.recorded_sources() == {"run/stage0/1", "run/stage1/1", "run/stage2/1"}
    before = os.stat(minitron_home / "calibration.json")
    assert calibration.record(first) == 0  # nothing new: the file is not rewritten
    after = os.stat(minitron_home / "calibration.json")
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    again = [*first, calibration.Measurement("p", "s", "l0", startup_s=9.0, source="run/stage0/2")]
    assert calibration.record(again) == 1
    [runs] = [r for k, r in json.loads((minitron_home / "calibration.json").read_text())["records"].items()
              if k.endswith("|l0")]
    assert [r["startup_s"] for r in runs] == [0.0, 9.0]


def test_a_bad_measurement_in_a_batch_records_none(minitron_home):
    batch = [calibration.Measurement("p", "s", "l", startup_s=1.0), calibration.Measurement("p", "s", "", startup_s=1.0)]
    with pytest.raises(ValueError):
        calibration.record(batch)
    assert not (minitron_home / "calibration.json").exists()
