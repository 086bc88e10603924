"""Injection and secrets on the real testbed: one small run (students=[depth]) whose profile carries
hostile env values and a job_dir full of odd (but legal) characters, submitted from a shell that
holds HF_TOKEN and WANDB_API_KEY. Its stages run `envdump`, which records every task's environment
(secrets only as sha256).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from helpers import Cli, write_test_profile, write_test_recipe


def _odd_values(sentinel: Path) -> dict[str, str]:
    return {
        "ODD_SUBST": f"$(touch {sentinel}) ;'\"`touch {sentinel}.2` *",
        "ODD_LINES": "line one\ttabbed $HOME ${PATH} ~ ?[a] \\ !! %j %x",
        "ODD_SPACES": "  leading and trailing  ",
        "ODD_FLAGS": f"--partition=cpu;&&||>out<in #not a comment; touch {sentinel}.3",
        "ODD_EMPTY": "",
        "ODD_UNICODE": "ünïcödé ☃ — “quotes”",
        "ODD_QUOTES": "x'y'\"z\"'\"'\\'",
        "ODD_GLOB": "*",
    }


@pytest.fixture(scope="module")
def odd_run(slurm, tmp_path_factory):
    root = tmp_path_factory.mktemp("inject")
    sentinel = root / "pwned"
    values = _odd_values(sentinel)
    secrets = {"HF_TOKEN": f"hf_secret_{os.urandom(8).hex()}", "WANDB_API_KEY": f"wandb_{os.urandom(8).hex()}"}
    job_dir = root / "jobs(1)!{a}[b]~^=+@-x"
    base_env = ["PYTHONPATH=" + str(Path(__file__).resolve().parent), "MT_STEP_SECONDS", "MT_SECRET_NAMES"]
    profile = write_test_profile(root / "profile.yaml", job_dir,
                                 env_vars=base_env + [f"{k}={v}" for k, v in values.items()] + list(secrets),
                                 required_env_vars=list(secrets))
    recipe = write_test_recipe(root / "recipe.yaml", entrypoint="envdump", finetune={"steps": 3},
                               distill={"steps": 3})
    cli = Cli(slurm, root / "home", {"MT_STEP_SECONDS": "0.05", "MT_SECRET_NAMES": ",".join(secrets), **secrets})
    proc = cli("submit", "--json", "--profile", profile, "--recipe", recipe, "--set", "students=[depth]")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    sub = json.loads(proc.stdout)
    code, report = cli.wait(sub["run_id"], timeout=240)
    human = cli("status", sub["run_id"])
    return {"sub": sub, "code": code, "report": report, "values": values, "sentinel": sentinel,
            "secrets": secrets, "root": root, "home": root / "home", "job_dir": job_dir,
            "outputs": proc.stdout + proc.stderr + human.stdout + human.stderr}


def _env_dumps(run_dir: str) -> dict[str, list[dict]]:
    dumps: dict[str, list[dict]] = {}
    work = Path(run_dir, "work")
    for stage_dir in sorted(work.iterdir()):
        files = sorted(stage_dir.glob("env-*.json"))
        dumps[stage_dir.name] = [json.loads(f.read_text()) for f in files]
    return dumps


def test_the_run_completes(odd_run):
    assert odd_run["code"] == 0, json.dumps(odd_run["report"], indent=1)
    assert all(s["state"] == "DONE" for s in odd_run["report"]["stages"])


def test_env_values_and_paths_arrive_verbatim_and_nothing_else_runs(odd_run):
    run_dir = odd_run["sub"]["run_dir"]
    assert run_dir.startswith(str(odd_run["job_dir"]))
    dumps = _env_dumps(run_dir)
    assert set(dumps) == {s["name"] for s in odd_run["report"]["stages"]}
    assert len(dumps["finetune"]) == 8, "the 4-node fine-tune: every task's environment"
    for stage, tasks in dumps.items():
        assert tasks, f"{stage}: no task recorded its environment"
        for env in tasks:
            for name, value in odd_run["values"].items():
                assert env.get(name) == value, (stage, name, env.get(name), value)
            assert env["MINITRON_RUN_DIR"] == run_dir and env["MINITRON_STAGE"] == stage
    for stage in odd_run["report"]["stages"]:  # the #SBATCH --output path under the odd job_dir works
        assert stage["log_path"] and Path(stage["log_path"]).parent == Path(run_dir, "logs"), stage
    assert not list(odd_run["root"].glob("pwned*")), "a value was executed"
    assert not list(Path(run_dir, "code").glob("out")) and not list(Path(run_dir).rglob("pwned*"))


def test_secrets_are_seen_by_the_job_and_never_written(odd_run):
    run_dir = Path(odd_run["sub"]["run_dir"])
    secrets = odd_run["secrets"]
    for stage, tasks in _env_dumps(str(run_dir)).items():
        for env in tasks:
            for name, value in secrets.items():
                assert env[name] == "sha256:" + hashlib.sha256(value.encode()).hexdigest(), (stage, name)
    scanned = 0
    for top in (run_dir, odd_run["home"]):
        for path in top.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                scanned += 1
                for name, value in secrets.items():
                    assert value.encode() not in data, f"{name}'s value written to {path}"
    assert scanned > 40 and any(run_dir.joinpath("logs").iterdir())
    for name, value in secrets.items():
        assert value not in odd_run["outputs"], f"{name}'s value printed by minitron"
    scripts = "".join(p.read_text() for p in run_dir.joinpath("scripts").iterdir())
    assert "HF_TOKEN" in scripts and "WANDB_API_KEY" in scripts  # by name only
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(run_dir.parent.stat().st_mode) == 0o700  # the registry
    for rel in ("state.json", "plan.json", "profile.yaml", "recipe.yaml", "inputs.json"):
        assert stat.S_IMODE(run_dir.joinpath(rel).stat().st_mode) == 0o600, rel


def test_a_missing_secret_stops_the_submission_before_anything_is_queued(odd_run, slurm):
    """The profile requires both secrets: without one, submit refuses (exit 2) and queues nothing: Slurm
    holds no job it did not hold before (every job slurmctld knows, in any state, is compared)."""
    cli = Cli(slurm, odd_run["home"], {"HF_TOKEN": odd_run["secrets"]["HF_TOKEN"], "WANDB_API_KEY": ""})
    runs_before = sorted(Path(odd_run["job_dir"], "runs").iterdir())

    def known_jobs() -> set[str]:
        proc = slurm.run(["squeue", "--noheader", "--states=all", "--format=%i"])
        assert proc.returncode == 0, proc.stderr
        return set(proc.stdout.split())

    jobs_before = known_jobs()
    next_id = slurm.run(["sbatch", "--parsable", "--wrap=true", "--output=/dev/null"]).stdout.strip()
    proc = cli("submit", "--profile", str(odd_run["root"] / "profile.yaml"),
               "--recipe", str(odd_run["root"] / "recipe.yaml"))
    probe = slurm.run(["sbatch", "--parsable", "--wrap=true", "--output=/dev/null"]).stdout.strip()
    assert int(probe) == int(next_id) + 1, "Slurm handed out job ids in between: something was submitted"
    assert known_jobs() - jobs_before <= {next_id, probe}
    assert proc.returncode == 2 and "WANDB_API_KEY" in proc.stderr, proc.stderr
    assert sorted(Path(odd_run["job_dir"], "runs").iterdir()) == runs_before
