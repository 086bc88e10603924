"""Injection (hypothesis): hostile text in every value a user controls, through load → plan → render.

Each generated input is either refused with a UserError (one line: the CLI's exit-2 path) or every
rendered script passes `bash -n`, its #SBATCH header stays a header, paths survive the #SBATCH and
--container-mounts syntax, the stage configs carry the values verbatim, and running the data stage's
script (Slurm clients / python replaced by stubs that dump the environment) delivers each value
verbatim while the sentinel that `$(...)` and backticks would create never appears.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from launcher.core.errors import UserError
from launcher.planning.planner import make_plan
from launcher.runs.prepare import Inputs, render_run_files
from launcher.config.profile import load_profile
from launcher.config.recipe import RECIPE_DIR, load_recipe
from launcher.runs.registry import new_run_id, runs_root
from jobs.contract import RunLayout

WORK = Path(tempfile.mkdtemp(prefix="mt-inject-"))
SENTINEL = WORK / "pwned"
FRAGMENTS = [
    f"$(touch {SENTINEL})", f"`touch {SENTINEL}`", f";touch {SENTINEL};", f"\ntouch {SENTINEL}\n",
    f"' ; touch {SENTINEL} ; '", f'" ; touch {SENTINEL} ; "', "$HOME", "${PATH}", "$1", "$$", "*", "?", "[a-z]",
    "~", "{a,b}", "\\", "'", '"', "`", ";", "&&", "|", ">", "<", "#", "%j", "%x", "!", "!!", " ", "  ", "\t", "\n",
    "\r", "-", "--", "=", ",", ":", "/", "..", "(", ")", "é", "☃", "\u2028", "\x85",
]
NASTY = st.lists(st.sampled_from(FRAGMENTS) | st.text(min_size=1, max_size=4,
                 alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
                 min_size=1, max_size=6).map("".join)

UNSAFE_IN_SCRIPTS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

PROFILE_FIELDS = ["env_value", "env_name", "env_name_value", "mount", "job_dir", "partition", "cpu_partition",
                  "account", "qos", "mem_per_node", "python", "sbatch_arg", "srun_arg", "image", "container_workdir",
                  "timeouts_key", "gpu_model"]
RECIPE_FIELDS = ["name", "pruning_name", "student_name", "entrypoint", "stage_partition", "model_source",
                 "text_key", "hf_dataset", "tokenizer", "nemo_config", "override", "override_value"]
VERBATIM_IN_CONFIG = {  # field → where the value lands in stages/import.json (it reads model, tokenizer)
    "text_key": lambda c: c["text_key"], "hf_dataset": lambda c: c["source"]["hf_dataset"],
    "tokenizer": lambda c: c["tokenizer"]["path_or_id"], "nemo_config": lambda c: c["model"]["nemo_config"],
    "model_source": lambda c: c["model"]["source"],
}


def _stubs() -> Path:
    """srun/scontrol/python stand-ins: the stage 'command' dumps its environment, NUL-separated."""
    stub_dir = WORK / "stubs"
    if stub_dir.exists():
        return stub_dir
    stub_dir.mkdir()
    dump = '#!/bin/sh\nenv -0 > "$MT_ENV_DUMP"\n'
    (stub_dir / "srun").write_text(dump)
    (stub_dir / "fakepython").write_text(dump)
    (stub_dir / "scontrol").write_text('#!/bin/sh\ncase "$2" in hostnames) echo n1 ;; '
                                       'node) echo "NodeName=n1 NodeAddr=127.0.0.1 State=IDLE" ;; esac\n')
    for path in stub_dir.iterdir():
        path.chmod(0o755)
    return stub_dir


def _base_profile(executor: str, job_dir: str) -> dict:
    profile = {"executor": executor, "nodes": 2 if executor == "slurm" else 1, "gpus_per_node": 4,
               "gpu": {"model": "H100-80GB", "memory_gib": 80}, "job_dir": job_dir,
               "timeouts": {"gpu": "04:00:00", "cpu": "04:00:00"}, "default_time": "01:00:00",
               "env_vars": ["HF_TOKEN", "NCCL_DEBUG=WARN"], "mounts": [], "check_mounts": False,
               "python": str(_stubs() / "fakepython")}
    if executor == "slurm":
        profile.update(partition="gpu", cpu_partition="cpu", containers={"nemo": "nvcr.io/nvidia/nemo:26.02"},
                       container="nemo")
    else:
        profile.update(container="none")
    return profile


def _apply(field: str, value: str, profile: dict, recipe: dict, overrides: list[str], base: str) -> None:
    if field == "env_value":
        profile["env_vars"].append(f"ODD={value}")
    elif field == "env_name":
        profile["env_vars"].append(value)
    elif field == "env_name_value":
        profile["env_vars"].append(f"{value}=x")
    elif field == "mount":
        profile["mounts"].append(f"/data/{value}:/mnt/{value}")
    elif field == "job_dir":
        profile["job_dir"] = f"{base}/{value}"
    elif field in ("partition", "cpu_partition", "account", "qos", "mem_per_node", "python"):
        profile[field] = value
    elif field == "sbatch_arg":
        profile["sbatch_args"] = [f"--{value}"]
    elif field == "srun_arg":
        profile["srun_args"] = [value]
    elif field == "image":
        profile["containers"] = {"nemo": value}
        profile["container"] = "nemo"
    elif field == "container_workdir":
        profile["container_workdir"] = f"/workspace/{value}"
    elif field == "timeouts_key":
        profile["timeouts"][value] = "01:00:00"
    elif field == "gpu_model":
        profile["gpu"]["model"] = value
    elif field == "name":
        recipe["name"] = value
    elif field == "pruning_name":
        recipe["pruning"] = {value: {"drop_layers": [3]}}
        recipe["students"] = [value]
    elif field == "student_name":
        recipe["students"] = [value]
    elif field == "entrypoint":
        recipe["stages"]["data"]["entrypoint"] = value
    elif field == "stage_partition":
        recipe["stages"]["finetune"]["partition"] = value
    elif field == "model_source":
        recipe["model"]["source"] = f"hf://{value}"
        recipe["model"]["tokenizer"] = "some/tokenizer"
    elif field == "text_key":
        recipe["data"]["text_key"] = value
    elif field == "hf_dataset":
        recipe["data"]["source"] = {"hf_dataset": value}
    elif field == "tokenizer":
        recipe["model"]["tokenizer"] = value
    elif field == "nemo_config":
        recipe["model"]["nemo_config"] = value
    elif field == "override":
        overrides.append(value)
    elif field == "override_value":
        overrides.append(f"stages.finetune.partition={value}")
    else:
        raise AssertionError(field)


def _header_is_intact(script: str, name: str) -> None:
    lines = script.split("\n")
    assert lines[0] == "#!/bin/bash", name
    end = lines.index("set -uo pipefail")
    for line in lines[1:end]:
        assert line == "" or line.startswith("#"), f"{name}: a value broke out of the header: {line!r}"


def _sbatch_lines_are_safe(script: str, name: str, paths: RunLayout, stage: str) -> None:
    for line in script.split("\n"):
        if not line.startswith("#SBATCH"):
            continue
        match = re.fullmatch(r"#SBATCH (--[a-z-]+(?:=\S+)?)", line)
        assert match, f"{name}: malformed directive {line!r}"
        assert "#" not in match.group(1), f"{name}: sbatch cuts a directive at '#': {line!r}"
        if line.startswith("#SBATCH --output="):
            assert line == f"#SBATCH --output={paths.logs}/{stage}-%j.out", line
            assert "%" not in paths.logs, f"{name}: Slurm expands % in {line!r}"


def _mounts_round_trip(script: str, name: str, job_dir: str, mounts: list[str]) -> None:
    for line in script.split("\n"):
        if "--container-mounts=" in line:
            words = shlex.split(line.rstrip().removesuffix("\\"))  # drop the line continuation
            (word,) = [w for w in words if w.startswith("--container-mounts=")]
            parsed = [m.split(":") for m in word.split("=", 1)[1].split(",")]
            assert [p[:2] for p in parsed] == [[job_dir, job_dir]] + [m.split(":")[:2] for m in mounts], name


def _run_stage_script(script_path: Path, paths: RunLayout) -> dict[str, str]:
    dump = WORK / "env.dump"
    dump.unlink(missing_ok=True)
    os.makedirs(paths.markers, exist_ok=True)
    os.makedirs(paths.code, exist_ok=True)
    env = {"PATH": f"{_stubs()}:{os.environ['PATH']}", "MT_ENV_DUMP": str(dump), "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NODELIST": "n1", "HOME": os.environ.get("HOME", "/root"), "HF_TOKEN": "from-the-shell"}
    proc = subprocess.run(["bash", str(script_path)], env=env, capture_output=True, text=True, timeout=30,
                          cwd=WORK)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert dump.exists(), f"the stage command never ran: {proc.stdout}{proc.stderr}"
    return dict(item.split("=", 1) for item in dump.read_bytes().decode().split("\0") if "=" in item)


def check_input(field: str, value: str, executor: str) -> str:
    """Load, plan, render (and run the data stage with stubs): 'refused', 'rendered' or 'skipped'."""
    assert not SENTINEL.exists()
    if yaml.safe_load(yaml.safe_dump(value, allow_unicode=True)) != value:
        return "skipped"  # PyYAML itself mangles a lone \x85 on the way into the test's YAML file
    if field in ("job_dir", "mount") and ".." in value:
        return "skipped"  # a legal path, but one that would leave the sandbox
    base = str(WORK / "jobs")
    profile = _base_profile(executor, base)
    recipe = yaml.safe_load(Path(RECIPE_DIR, "tiny.yaml").read_text())
    overrides: list[str] = []
    _apply(field, value, profile, recipe, overrides, base)
    case = Path(tempfile.mkdtemp(dir=WORK))
    (case / "profile.yaml").write_text(yaml.safe_dump(profile, allow_unicode=True))
    (case / "recipe.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True))
    try:
        loaded = Inputs(load_profile(str(case / "profile.yaml")), load_recipe(str(case / "recipe.yaml"), overrides),
                        overrides)
        plan = make_plan(loaded.profile, loaded.recipe)
    except UserError as exc:
        assert "\n" not in str(exc) and "\r" not in str(exc), f"a multi-line error: {str(exc)!r}"
        return "refused"
    job_dir = loaded.profile.job_dir
    assert os.path.normpath(job_dir).startswith(base), f"job_dir escaped the sandbox: {job_dir!r}"
    run_id = new_run_id(loaded.recipe.name)
    paths = RunLayout(os.path.join(runs_root(job_dir), run_id))
    files = render_run_files(run_id, paths, loaded, plan)
    for stage in plan.stages:
        name = f"scripts/{stage.name}.sh"
        script = files[name]
        script_path = case / f"{stage.name}.sh"
        script_path.write_text(script)
        syntax = subprocess.run(["bash", "-n", str(script_path)], capture_output=True, text=True)
        assert syntax.returncode == 0, f"{name}: bash -n: {syntax.stderr}\n{script}"
        _header_is_intact(script, name)
        if executor == "slurm":
            _sbatch_lines_are_safe(script, name, paths, stage.name)
            _mounts_round_trip(script, name, job_dir, loaded.profile.mounts)
        config = json.loads(files[f"stages/{stage.name}.json"])
        assert config["run_dir"] == paths.run_dir
    if field in VERBATIM_IN_CONFIG:
        config = json.loads(files["stages/import.json"])
        config["text_key"], config["source"] = (json.loads(files["stages/data.json"])["data"][k]
                                                for k in ("text_key", "source"))
        expected = f"hf://{value}" if field == "model_source" else value
        assert VERBATIM_IN_CONFIG[field](config) == expected
    if field != "python" and not (field == "image" and executor == "local"):  # no docker here
        env = _run_stage_script(case / "data.sh", paths)
        assert env["MINITRON_RUN_DIR"] == paths.run_dir and env["MINITRON_STAGE"] == "data"
        assert env["NCCL_DEBUG"] == "WARN" and env["HF_TOKEN"] == "from-the-shell"
        if field == "env_value":
            assert env["ODD"] == value, (env.get("ODD"), value)
    assert not SENTINEL.exists(), f"{field}={value!r} executed a command"
    return "rendered"


@pytest.fixture(scope="module", autouse=True)
def _clean_work():
    yield
    subprocess.run(["rm", "-rf", str(WORK)], check=False)


SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PATHISH = st.text(alphabet="ab-_.()!{}[]~^=+@#%,:/é ", min_size=1, max_size=12)


@SETTINGS
@given(field=st.sampled_from(PROFILE_FIELDS + RECIPE_FIELDS), value=NASTY,
       executor=st.sampled_from(["slurm", "local"]))
@example(field="env_value", value=f"$(touch {SENTINEL}) ;'\"`touch {SENTINEL}` *\nline two", executor="slurm")
@example(field="stage_partition", value="gpu\ntouch " + str(SENTINEL), executor="slurm")
@example(field="override_value", value="'gpu\ntouch " + str(SENTINEL) + "'", executor="slurm")
@example(field="job_dir", value="runs#1", executor="slurm")
@example(field="job_dir", value="runs%x", executor="slurm")
@example(field="job_dir", value="a,b", executor="slurm")
@example(field="job_dir", value="odd(1)!{a}[b]~^=+@", executor="slurm")
def test_hostile_values_are_refused_or_rendered_safely(field, value, executor):
    result = check_input(field, value, executor)
    assume(result != "skipped")
    event(f"{field}: {result}")


@SETTINGS
@given(value=NASTY, executor=st.sampled_from(["slurm", "local"]))
def test_env_values_are_refused_only_for_control_bytes_and_arrive_verbatim(value, executor):
    """An env value is data: it is accepted and reaches the stage unchanged, unless it holds a byte
    that sbatch or bash read differently (a control character other than tab, or a Unicode line or
    bidi control), which is refused at load."""
    result = check_input("env_value", value, executor)
    assume(result != "skipped")
    assert result == ("refused" if UNSAFE_IN_SCRIPTS.search(value) else "rendered"), repr(value)


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(["job_dir", "mount", "container_workdir"]), value=PATHISH,
       executor=st.sampled_from(["slurm", "local"]))
def test_paths_with_odd_characters_survive_sbatch_and_mount_syntax(field, value, executor):
    """Paths: what is accepted must come out of #SBATCH --output and --container-mounts unchanged."""
    result = check_input(field, value, executor)
    assume(result != "skipped")
    event(f"{field}: {result}")


def test_the_checks_catch_an_unquoted_value(monkeypatch):
    """Control: with shell quoting switched off, the same checks see the injection."""
    import launcher.rendering.scripts as render

    original = render._environment

    def unquoted():
        env = original()
        env.filters["q"] = str
        return env

    monkeypatch.setattr(render, "_environment", unquoted)
    with pytest.raises(AssertionError):
        check_input("env_value", f"x; touch {SENTINEL}", "slurm")
    SENTINEL.unlink(missing_ok=True)
