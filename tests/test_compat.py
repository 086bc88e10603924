"""The container probe's comparison (launcher/app/compat.py) on canned reports, the probe's function list
against the jobs' own imports, and the probe job in a Python that has none of the packages."""

from __future__ import annotations

import ast
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.stages import probe as job_probe
from jobs.contract import SCHEMA_VERSION, ConfigError, RunLayout, StageConfig, read_markers, validate, write_stage_config
from launcher.app import compat

REPO = Path(__file__).resolve().parents[1]


def _functions(missing=()):
    return [{"name": f"{m}.{a}", "used_by": list(k), "present": f"{m}.{a}" not in missing,
             **({"error": f"{m} has no attribute {a}"} if f"{m}.{a}" in missing else {})}
            for m, a, k in job_probe.FUNCTIONS]


def canned(**versions) -> dict:
    """A finished report from the CPU test stack (.venv): everything importable but TE, no GPU."""
    v = {"torch": "2.13.0+cpu", "transformer-engine": None, "megatron-core": "0.15.3", "modelopt": "0.37.0",
         "nemo": "2.7.3", "lightning": "2.4.0", "transformers": "4.57.6", "tokenizers": "0.22.2",
         "datasets": "5.0.1", "fiddle": "0.3.1", "tensorboard": "2.20.0", "matplotlib": "3.11.2", "cuda": None}
    v.update(versions)
    imports = {key: {"module": mod, "ok": True} for key, _, mod in job_probe.PACKAGES}
    imports["transformer-engine"] = {"ok": False, "error": "ModuleNotFoundError: No module named 'transformer_engine'"}
    imports["transformer-engine.pytorch"] = dict(imports["transformer-engine"])
    return {"stage": "probe_gpu", "role": "gpu", "host": "n1", "partition": "gpu", "finished": True, "step": "done",
            "python": {"version": "3.11.7"}, "versions": v, "imports": imports, "functions": _functions(),
            "gpus": {"torch_device_count": 0, "cuda": None, "names": [], "memory_gib": [],
                     "nvidia_smi": {"count": 0}},
            "capabilities": {"te_importable": False, "gpus_per_node": 0, "functions_missing": [],
                             "job_dir": {"path": "/j/runs/r/work/probe_gpu", "writable": True},
                             "hf_home": {"path": "/hf", "from": "HF_HOME", "writable": True},
                             "token": {"present": True, "source": "HF_TOKEN"},
                             "job_dir_writable": True, "hf_home_writable": True, "token_present": True},
            "errors": []}


def with_gpus(report: dict, count: int = 8, memory: float = 79.6, te: str | None = "2.12.0") -> dict:
    report = copy.deepcopy(report)
    report["gpus"].update(torch_device_count=count, cuda="12.9", names=["NVIDIA H100 80GB HBM3"] * count,
                          memory_gib=[memory] * count, nvidia_smi={"count": count, "driver": "575.57"})
    report["versions"]["cuda"] = "12.9"
    report["versions"]["torch"] = "2.8.0a0+5228986c39.nv25.6"
    report["capabilities"]["gpus_per_node"] = count
    if te:
        report["versions"]["transformer-engine"] = te
        report["imports"]["transformer-engine"] = {"ok": True}
        report["imports"]["transformer-engine.pytorch"] = {"ok": True}
        report["capabilities"]["te_importable"] = True
    return report


GPU = {"role": "gpu", "kinds": list(compat.ALL_KINDS), "gpus_per_node": 8, "gpu_memory_gib": 80,
       "attention": "fused", "hf_model": "meta-llama/Llama-3.1-8B"}
CPU = {"role": "cpu", "kinds": ["data"], "gpus_per_node": 0, "attention": "fused", "hf_model": None}


def lines(problems):
    return [p.line() for p in problems]


def test_version_prefixes():
    assert compat.version_tuple("0.16.0rc0+git1a2b") == (0, 16, 0)
    assert compat.version_tuple("2.8.0a0+5228986c39.nv25.6") == (2, 8, 0)
    assert compat.version_tuple(None) == ()
    assert compat.matches("0.16.1", "0.16") and compat.matches("2.7.3", "2.7.3") and compat.matches("0.37.0", "0.37")
    assert not compat.matches("0.15.3", "0.16") and not compat.matches("2.7.30", "2.7.3") and not compat.matches(None, "2")


def test_the_matrix_names_the_pins_the_container_stacks_and_what_each_run_proved():
    assert (compat.PINS.nemo, compat.PINS.megatron_core, compat.PINS.modelopt) == ("2.7.3", "0.15.3", "0.37")
    rows = {(s.nemo, s.megatron_core, s.modelopt): s for s in compat.STACKS}
    assert set(rows) == {("2.7.3", "0.15.3", "0.37"), ("2.7.0", "0.16", "0.41"), ("2.6.0", "0.15", "0.37"),
                         ("2.5.0", "0.14", "0.35")}
    assert rows["2.6.0", "0.15", "0.37"].runs == () and rows["2.5.0", "0.14", "0.35"].runs == ()
    gpu_runs = [r for r in rows["2.7.0", "0.16", "0.41"].runs if r.gpu]
    assert {r.te: set(r.proven) for r in gpu_runs} == {
        "2.12": {"data", "import", "finetune", "prune", "distill", "report"},
        "absent": {"data", "import", "finetune", "prune", "distill", "export"}}
    assert all(r.commit and r.date and r.evidence for r in gpu_runs)


MATRIX = """
stacks:
  - name: a stack
    nemo: "2.7.3"
    megatron_core: "0.15.3"
    modelopt: "0.37"
    runs:
      - {te: "2.12", gpu: true, where: a GPU, commit: abc1234, date: 2026-12-01, proven: [data, finetune],
         failing: {distill: "RuntimeError: Missing key"}}
      - {te: absent, gpu: false, where: the CPU tests, proven: [data, finetune, distill, report]}
"""


def test_stage_proof_per_kind_engine_and_device():
    stacks = compat.load_stacks(MATRIX)
    proof = compat.stage_proof(stacks, ["data", "finetune", "distill", "report"], "2.12.0", gpu=True)
    assert {k: state for k, (state, _) in proof.items()} == {
        "data": "proven", "finetune": "proven", "distill": "failing", "report": "unproven"}
    assert proof["distill"][1] == "RuntimeError: Missing key (a GPU, abc1234 2026-12-01)"
    assert compat.stage_proof(stacks, ["finetune"], None, gpu=True) == {"finetune": ("unproven", "")}, \
        "a TE run proves nothing without TE"
    assert compat.stage_proof(stacks, ["finetune"], "2.9.0", gpu=True)["finetune"][0] == "unproven"
    assert compat.stage_proof(stacks, ["report"], None, gpu=False)["report"][0] == "proven", "CPU stages: any run"
    with pytest.raises(ValueError, match="unknown stage kind"):
        compat.load_stacks(MATRIX.replace("[data, finetune]", "[data, finetuning]"))


def test_the_cpu_test_stack_on_the_cpu_partition_has_no_problem():
    report = canned()
    report.update(stage="probe_cpu", role="cpu")
    assert compat.compare(report, CPU) == []


def test_the_tested_stack_on_eight_gpus_with_te_has_no_problem():
    assert compat.compare(with_gpus(canned()), GPU) == []


def test_te_missing_fails_with_fused_attention_and_warns_with_unfused():
    report = with_gpus(canned(), te=None)
    problems = compat.compare(report, GPU)
    assert [p.severity for p in problems] == ["FAIL"]
    assert "Transformer Engine is not importable" in problems[0].what and "attention: unfused" in problems[0].fix
    problems = compat.compare(report, {**GPU, "attention": "unfused"})
    assert [p.severity for p in problems] == ["warn"] and "local spec" in problems[0].what
    assert "HF import" not in problems[0].what  # HF import runs on the local spec too (jobs/stages/import_ckpt.py)


def test_an_engine_no_run_had_leaves_every_stage_unproven():
    report = with_gpus(canned(), te="2.9.0")
    problems = compat.compare(report, GPU)
    assert [p.line() for p in problems] == [
        "warn probe_gpu: NeMo 2.7.3 pins (requirements-jobs.txt) with TE 2.9.0: unproven on a GPU: stages data, "
        "import, finetune, prune, distill, report, export (no stage has run on it) -> run `minitron submit --smoke` "
        "on this cluster before the real recipe"], lines(problems)


def test_the_pinned_container_stack_names_its_unproven_stages_per_engine():
    with_te = with_gpus(canned(nemo="2.7.0", **{"megatron-core": "0.16.0rc0", "modelopt": "0.41.0",
                                                "transformer-engine": "2.12.0"}))
    with_te["capabilities"]["te_importable"] = True
    problems = compat.compare(with_te, GPU)
    assert [(p.severity, p.what) for p in problems] == [
        ("warn", "nemo:26.02 stack (rebuilt from wheels, tools/device/stacks/26.02.txt) with TE 2.12.0: unproven on "
                 "a GPU: stages export (proven: data, import, finetune, prune, distill, report)")], lines(problems)
    assert compat.compare(with_te, {**GPU, "kinds": [k for k in compat.ALL_KINDS if k != "export"]}) == [], \
        "a recipe without the export stage runs only proven stages"
    without_te = with_gpus(canned(nemo="2.7.0", **{"megatron-core": "0.16.0", "modelopt": "0.41.0"}), te=None)
    problems = compat.compare(without_te, {**GPU, "attention": "unfused"})
    assert [p.what for p in problems if "unproven" in p.what] == [
        "nemo:26.02 stack (rebuilt from wheels, tools/device/stacks/26.02.txt) with no TE: unproven on a GPU: "
        "stages report (proven: data, import, finetune, prune, distill, export)"], lines(problems)
    report = with_gpus(canned(nemo="2.6.0", **{"megatron-core": "0.15.0", "modelopt": "0.37.0"}))
    problems = compat.compare(report, GPU)
    assert [p.severity for p in problems] == ["warn"], lines(problems)
    assert "nemo:25.11 stack" in problems[0].what and "(no stage has run on it)" in problems[0].what
    assert "--smoke" in problems[0].fix
    problems = compat.compare(with_gpus(canned(nemo="2.4.0")), GPU)
    assert [p.severity for p in problems] == ["warn"] and "is not in the stack matrix" in problems[0].what


def test_an_optimizer_call_the_job_cannot_fit_fails_and_nemo_3_fails():
    # megatron-core 0.16 alone is no longer a failure: the jobs adapt NeMo's call (jobs/stages/drift.py)
    problems = compat.compare(with_gpus(canned(**{"megatron-core": "0.16.0"})), GPU)
    assert not [p for p in problems if p.severity == "FAIL"], lines(problems)
    # what the job measured decides
    report = with_gpus(canned(nemo="2.7.0", **{"megatron-core": "0.16.1", "modelopt": "0.41.0"}))
    report["capabilities"]["optimizer_api_ok"] = False
    problems = [p for p in compat.compare(report, GPU) if p.severity == "FAIL"]
    assert len(problems) == 1 and "checked in the job" in problems[0].what
    assert "megatron-core==0.15.3" in problems[0].fix
    report["capabilities"]["optimizer_api_ok"] = True
    assert not [p for p in compat.compare(report, GPU) if p.severity == "FAIL"]
    problems = compat.compare(with_gpus(canned(nemo="3.0.0")), GPU)
    assert any(p.severity == "FAIL" and "NeMo 3 dropped" in p.what for p in problems), lines(problems)


def test_a_missing_private_function_is_named_with_its_stages():
    report = with_gpus(canned())
    name = "nemo.collections.llm.modelopt.model_utils._set_gpt_mamba_modelopt_spec"
    report["functions"] = _functions(missing=(name,))
    problems = compat.compare(report, GPU)
    assert len(problems) == 1 and problems[0].severity == "FAIL"
    assert name in problems[0].what and "used by prune" in problems[0].what and "private" in problems[0].what
    # on the CPU partition only the data stage runs: the prune function is not its problem
    report.update(stage="probe_cpu", role="cpu")
    assert compat.compare(report, CPU) == []


def test_a_missing_package_is_one_line_not_one_per_function():
    report = with_gpus(canned(nemo=None))
    report["imports"]["nemo"] = {"ok": False, "error": "ModuleNotFoundError: No module named 'nemo'"}
    report["functions"] = _functions(missing=tuple(f"{m}.{a}" for m, a, _ in job_probe.FUNCTIONS
                                                   if m.startswith("nemo")))
    problems = compat.compare(report, GPU)
    assert len(problems) == 1 and problems[0].what.startswith("not importable in the job: nemo ("), lines(problems)
    assert "nemo:26.02" in problems[0].fix


def test_gpus_memory_and_cpu_torch():
    problems = compat.compare(with_gpus(canned(), count=4), GPU)
    assert len(problems) == 1 and "sees 4 GPU(s)" in problems[0].what and "gpus_per_node=8" in problems[0].what
    problems = compat.compare(with_gpus(canned(), memory=39.4), GPU)
    assert len(problems) == 1 and "39.4 GiB" in problems[0].what and "gpu.memory_gib: 39.4" in problems[0].fix
    problems = compat.compare(canned(), GPU)  # the CPU wheel of torch on a GPU partition
    assert any(p.severity == "FAIL" and "CPU build" in p.what for p in problems), lines(problems)


def test_file_system_token_and_an_unfinished_probe():
    report = with_gpus(canned())
    report["capabilities"].update(job_dir={"path": "/j", "writable": False, "error": "PermissionError: denied"},
                                  job_dir_writable=False, hf_home_writable=False, token_present=False,
                                  hf_home={"path": "/root/.cache/huggingface", "from": "default", "writable": False,
                                           "error": "OSError: read-only file system"})
    problems = compat.compare(report, GPU)
    assert [p.severity for p in problems] == ["FAIL", "FAIL", "warn"], lines(problems)
    assert "job_dir is not writable" in problems[0].what and "HF_HOME" in problems[1].fix
    assert "gated" in problems[2].what and "HF_TOKEN" in problems[2].fix
    report = with_gpus(canned())
    report.update(finished=False, step="import transformer_engine")
    problems = compat.compare(report, GPU)
    assert len(problems) == 1 and "stopped during 'import transformer_engine'" in problems[0].what


# ---------------------------------------------------------------------------------------------- the list
def _is_module(dotted: str) -> bool:
    """Whether `a.b.c` is a module file of an installed package, without importing anything heavy."""
    import importlib.util

    spec = importlib.util.find_spec(dotted.split(".")[0])
    if spec is None or not spec.submodule_search_locations:
        return False
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*dotted.split(".")[1:])
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _used_by_jobs() -> set[tuple[str, str]]:
    """(module, name) of every NeMo / megatron-core / ModelOpt / Lightning / fiddle name jobs/stages/*.py use:
    `from M import N`, `alias.X` on a module imported under any name (`llm`, `nl`, `nemo_io`, ...), and
    `nemo_parts.private("M", "N")` lookups."""
    modules = {("nemo.collections", "llm"), ("nemo", "lightning"), ("nemo.lightning", "io"),
               ("nemo.collections.llm.gpt.model", "llama"), ("megatron.core", "optimizer"),
               ("nemo.lightning", "_strategy_lib")}
    roots = ("nemo", "megatron", "modelopt", "lightning", "fiddle")
    used = set()
    for path in sorted((REPO / "jobs" / "stages").glob("*.py")):
        if path.name == "probe.py":
            continue
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in roots:
                for a in node.names:
                    if (node.module, a.name) in modules or _is_module(f"{node.module}.{a.name}"):
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                    else:
                        used.add((node.module, a.name))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] in roots:
                        aliases[a.asname or a.name] = a.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                used.add((aliases[node.value.id], node.attr))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "private"
                  and len(node.args) >= 2 and all(isinstance(a, ast.Constant) for a in node.args[:2])):
                used.add((node.args[0].value, node.args[1].value))
    return used


def test_the_probe_checks_every_function_the_jobs_use():
    listed = {(m, a) for m, a, _ in job_probe.FUNCTIONS}
    missing = _used_by_jobs() - listed
    assert not missing, f"add to jobs/stages/probe.py FUNCTIONS: {sorted(missing)}"
    for name in ("import_ckpt", "export_ckpt", "PreTrainingDataModule", "train"):
        assert ("nemo.collections.llm", name) in listed
    assert ("nemo.lightning", "MegatronStrategy") in listed


def test_the_probe_config_is_part_of_the_contract(tmp_path):
    raw = {"schema_version": SCHEMA_VERSION, "run_id": "r", "run_dir": str(tmp_path), "stage": "probe", "kind": "probe",
           "markers_dir": str(tmp_path / "markers"), "work_dir": str(tmp_path / "work"), "inputs": {},
           "outputs": {"report": str(tmp_path / "work" / "probe" / "probe.json")},
           "probe": {"role": "gpu", "job_dir": str(tmp_path)}}
    validate(raw)
    for bad in ({"role": "tpu", "job_dir": str(tmp_path)}, {"role": "gpu", "job_dir": "rel"}, {"role": "gpu"}):
        with pytest.raises(ConfigError):
            validate({**raw, "probe": bad})
    with pytest.raises(ConfigError):
        validate({**raw, "outputs": {}})


def test_the_probe_job_survives_a_python_without_any_package(tmp_path):
    """`python -S` (no site-packages: no torch, no NeMo, no yaml): the job still reports, exits 0, completes."""
    run_dir = tmp_path / "run"
    layout = RunLayout(str(run_dir))
    for sub in ("markers", "work", "stages"):
        (run_dir / sub).mkdir(parents=True)
    config = StageConfig(run_id="r", run_dir=str(run_dir), stage="probe", kind="probe", markers_dir=layout.markers,
                         work_dir=layout.work, inputs={},
                         outputs={"report": os.path.join(layout.work, "probe", "probe.json")},
                         probe={"role": "gpu", "job_dir": str(tmp_path)})
    write_stage_config(layout.stage_config("probe"), config)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_"))}
    env.update(MINITRON_RUN_DIR=str(run_dir), MINITRON_STAGE="probe", HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.run([sys.executable, "-S", "-m", "jobs.runtime.task", "jobs.stages.probe", "--config",
                           layout.stage_config("probe")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(Path(config.outputs["report"]).read_text())
    assert report["finished"] and report["step"] == "done"
    assert not report["imports"]["torch"]["ok"] and "torch" in report["imports"]["torch"]["error"]
    assert report["capabilities"]["functions_missing"] and report["capabilities"]["job_dir_writable"]
    assert report["capabilities"]["hf_home_writable"] and report["capabilities"]["token_present"] is False
    assert read_markers(layout, "probe").complete
    problems = compat.compare(report, GPU)
    assert problems[0].severity == "FAIL" and problems[0].what.startswith("not importable in the job: torch (")
    assert [p.severity for p in problems] == ["FAIL", "warn"], lines(problems)  # the packages, the token


def test_a_shadowing_cudnn_is_named_with_its_fix():
    """Seen on the GPU device with a carried TE: torch finds another cuDNN than the one it was built with."""
    report = with_gpus(canned())
    report["gpus"]["cudnn_error"] = ("RuntimeError: cuDNN version incompatibility: PyTorch was compiled against "
                                    "(9, 19, 0) but found runtime version (9, 14, 0).")
    problems = compat.compare(report, GPU)
    assert [p.severity for p in problems] == ["warn"], lines(problems)
    assert "cannot use its cuDNN" in problems[0].what and "(9, 14, 0)" in problems[0].what
    assert "LD_LIBRARY_PATH" in problems[0].fix
