"""What a container probe (jobs/stages/probe.py) found, against what the stage jobs need: one `Problem` per finding.

`STACKS` is the stack matrix (launcher/app/stacks.yaml): per software stack, the runs of the jobs on it (engine,
GPU or CPU, commit, date) and the stage kinds each proved or failed. `compare` turns one probe report into
problems, each with what to change: FAIL for what will break a stage (exit 1 from `minitron check --probe`),
warn for what is unproven or only limits what a run can do. Pure functions over the report's JSON and the
matrix; unit-tested on canned reports (tests/test_compat.py).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any, Optional, Sequence

import yaml

from jobs.contract import BY_NAME, PIPELINE_KINDS

CONTAINER = "nvcr.io#nvidia/nemo:26.02"
ALL_KINDS = tuple(k.name for k in PIPELINE_KINDS)
TRACKER_PACKAGES = {"wandb": "wandb", "mlflow": "mlflow-skinny"}  # what to install for each tracker


@dataclass(frozen=True)
class StackRun:
    """One run of the jobs on a stack: which kinds it proved (ran to DONE) or saw fail, with which engine."""

    te: str                       # the Transformer Engine version it had ("2.12" prefix), or "absent"
    gpu: bool                     # on a GPU (else the CPU tests)
    where: str
    proven: tuple[str, ...]
    failing: tuple[tuple[str, str], ...] = ()    # (kind, the error it met)
    commit: Optional[str] = None
    date: Optional[str] = None
    evidence: Optional[str] = None


@dataclass(frozen=True)
class Stack:
    name: str
    nemo: str                     # version prefixes: "2.7.3" matches 2.7.3 and 2.7.3rc1; "0.16" any 0.16.x
    megatron_core: str
    modelopt: str
    runs: tuple[StackRun, ...]
    pins: bool = False            # the versions requirements-jobs.txt pins


def load_stacks(text: str) -> tuple[Stack, ...]:
    """The matrix from its YAML (launcher/app/stacks.yaml); kinds it names must be the table's."""
    stacks = []
    for row in yaml.safe_load(text)["stacks"]:
        runs = []
        for run in row["runs"]:
            failing = tuple((kind, str(error)) for kind, error in (run.get("failing") or {}).items())
            unknown = (set(run["proven"]) | {kind for kind, _ in failing}) - set(ALL_KINDS)
            if unknown:
                raise ValueError(f"stacks.yaml: {row['name']}: unknown stage kind(s) {sorted(unknown)}")
            runs.append(StackRun(te=str(run["te"]), gpu=bool(run["gpu"]), where=run["where"],
                                 proven=tuple(run["proven"]), failing=failing, commit=run.get("commit"),
                                 date=str(run["date"]) if run.get("date") else None, evidence=run.get("evidence")))
        stacks.append(Stack(name=row["name"], nemo=str(row["nemo"]), megatron_core=str(row["megatron_core"]),
                            modelopt=str(row["modelopt"]), runs=tuple(runs), pins=bool(row.get("pins"))))
    return tuple(stacks)


STACKS: tuple[Stack, ...] = load_stacks(resources.files("launcher.app").joinpath("stacks.yaml").read_text())
PINS = next(s for s in STACKS if s.pins)


@dataclass(frozen=True)
class Problem:
    severity: str     # FAIL | warn
    probe: str        # the probe stage (which partition) it came from
    what: str
    fix: str

    def line(self) -> str:
        return f"{self.severity} {self.probe}: {self.what} -> {self.fix}"

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def version_tuple(text: Optional[str]) -> tuple[int, ...]:
    """The leading numeric components: '0.16.0rc0+git1a2b' -> (0, 16, 0)."""
    if not text:
        return ()
    parts = []
    for piece in re.split(r"[.+-]", text):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
        if match.group() != piece:
            break
    return tuple(parts)


def matches(version: Optional[str], prefix: str) -> bool:
    want, have = version_tuple(prefix), version_tuple(version)
    return bool(have) and have[:len(want)] == want


def stacks_matching(versions: dict[str, Any]) -> list[Stack]:
    return [s for s in STACKS if matches(versions.get("nemo"), s.nemo)
            and matches(versions.get("megatron-core"), s.megatron_core)
            and matches(versions.get("modelopt"), s.modelopt)]


def _stack_text(versions: dict[str, Any]) -> str:
    te = versions.get("transformer-engine") or "absent"
    return (f"NeMo {versions.get('nemo') or '-'} + megatron-core {versions.get('megatron-core') or '-'} + "
            f"ModelOpt {versions.get('modelopt') or '-'} + TE {te}")


def _pins_text() -> str:
    return f"NeMo {PINS.nemo} + megatron-core {PINS.megatron_core} + ModelOpt {PINS.modelopt}"


def _engine_covers(run: StackRun, te: Optional[str]) -> bool:
    return run.te == "absent" if te is None else run.te != "absent" and matches(te, run.te)


def stage_proof(stacks: Sequence[Stack], kinds: Sequence[str], te: Optional[str], gpu: bool
                ) -> dict[str, tuple[str, str]]:
    """Per kind: ("proven" | "failing" | "unproven", the evidence or error) on these stacks with this engine,
    from the runs on a GPU (for GPU stages) or any run (CPU stages run the same code wherever they run)."""
    runs = [r for s in stacks for r in s.runs if (r.gpu or not gpu) and (not gpu or _engine_covers(r, te))]
    proof = {}
    for kind in kinds:
        proved = [r for r in runs if kind in r.proven]
        failed = [(r, error) for r in runs for k, error in r.failing if k == kind]
        if proved:
            r = proved[0]
            proof[kind] = ("proven", f"{r.where}" + (f", {r.commit} {r.date}" if r.commit else ""))
        elif failed:
            r, error = failed[0]
            proof[kind] = ("failing", f"{error} ({r.where}" + (f", {r.commit} {r.date})" if r.commit else ")"))
        else:
            proof[kind] = ("unproven", "")
    return proof


def summary(report: dict[str, Any]) -> str:
    """One line: where the probe ran and what it found."""
    v, caps = report.get("versions") or {}, report.get("capabilities") or {}
    gpus = caps.get("gpus_per_node")
    return (f"{report.get('stage')} on {report.get('host', '?')} (partition {report.get('partition') or '-'}, "
            f"image {report.get('image') or 'none'}): python {(report.get('python') or {}).get('version', '?')}, "
            f"torch {v.get('torch') or '-'} (CUDA {v.get('cuda') or 'none'}), NeMo {v.get('nemo') or '-'}, "
            f"megatron-core {v.get('megatron-core') or '-'}, ModelOpt {v.get('modelopt') or '-'}, "
            f"TE {v.get('transformer-engine') or '-'}, transformers {v.get('transformers') or '-'}; "
            f"{'?' if gpus is None else gpus} GPU(s) seen")


def compare(report: dict[str, Any], expect: dict[str, Any]) -> list[Problem]:
    """Problems of one probe report. `expect`: role (gpu|cpu), kinds (the stage kinds that run where this
    probe ran), gpus_per_node, gpu_memory_gib, attention (fused|unfused), hf_model (the hub id the
    default recipe imports, or None), tracking (the trackers the profile turns on: the training kinds need
    their packages, named as the probe reports them)."""
    name = str(report.get("stage") or expect.get("stage") or "probe")
    problems: list[Problem] = []

    def fail(what: str, fix: str) -> None:
        problems.append(Problem("FAIL", name, what, fix))

    def warn(what: str, fix: str) -> None:
        problems.append(Problem("warn", name, what, fix))

    if not report.get("finished"):
        fail(f"the probe stopped during '{report.get('step', '?')}' (the process died there: a crash in that "
             f"import or a kill)", "see the probe's log (minitron logs RUN STAGE); fix or remove the package named")
    role = expect.get("role", report.get("role") or "gpu")
    kinds = tuple(k for k in expect.get("kinds") or ALL_KINDS if k in BY_NAME)
    versions = report.get("versions") or {}
    imports = report.get("imports") or {}
    caps = report.get("capabilities") or {}
    gpus = report.get("gpus") or {}
    container_fix = (f"run the stages in the NeMo container (containers: {{nemo: {CONTAINER}}}, container: nemo) "
                     f"or point the profile's python at an environment with requirements-jobs.txt")

    def broken(key: str) -> Optional[str]:
        entry = imports.get(key)
        return None if entry is None or entry.get("ok") else entry.get("error") or "not importable"

    needed = list(dict.fromkeys(package for name in kinds for package in BY_NAME[name].packages))
    unusable = {key for key in needed if broken(key)}
    if unusable:  # one line for the environment, however many packages it lacks
        fail("not importable in the job: " + "; ".join(f"{key} ({broken(key)})" for key in needed if key in unusable),
             container_fix)
    trains = [k for k in kinds if BY_NAME[k].trains]
    for tracker in (expect.get("tracking") or ()) if trains else ():
        if broken(tracker):
            fail(f"the profile's tracking.{tracker} is on, but {tracker} is not importable in the job "
                 f"({broken(tracker)}): stages {', '.join(trains)} would stop before their first step",
                 f"add {TRACKER_PACKAGES.get(tracker, tracker)} to the image (requirements-jobs.txt has it), "
                 f"or remove tracking.{tracker} from the profile")

    # -- GPUs ------------------------------------------------------------------------------------
    if role == "gpu" and "torch" not in unusable:
        want = int(expect.get("gpus_per_node") or 0)
        seen = gpus.get("torch_device_count")
        if want and not gpus.get("cuda"):
            fail(f"torch {versions.get('torch')} is a CPU build (torch.version.cuda is None)",
                 f"use a CUDA build of torch: {container_fix}")
        elif want and (seen or 0) < want:
            smi = (gpus.get("nvidia_smi") or {}).get("count")
            fail(f"the job sees {seen or 0} GPU(s) (torch.cuda.device_count(); nvidia-smi lists {smi or 0}); the "
                 f"profile plans gpus_per_node={want}",
                 "set gpus_per_node to what the nodes have, or gpu_request: gres if the cluster allocates GPUs as GRES")
        memory = [m for m in gpus.get("memory_gib") or [] if m]
        planned = expect.get("gpu_memory_gib")
        if memory and planned and min(memory) < 0.95 * float(planned):
            fail(f"the GPUs have {min(memory):g} GiB ({(gpus.get('names') or ['?'])[0]}); the profile plans "
                 f"{planned:g} GiB per GPU", f"set gpu.memory_gib: {min(memory):g} (and gpu.model) in the profile")

    # -- the stack -------------------------------------------------------------------------------
    nemo = versions.get("nemo")
    if "nemo" in needed and "nemo" not in unusable and nemo:
        if version_tuple(nemo)[:1] != (2,):
            fail(f"NeMo {nemo}: the jobs are built on NeMo 2's nemo.collections.llm (2.7.x), which NeMo 3 dropped",
                 f"use {CONTAINER} (NeMo 2.7.0) or nemo_toolkit==2.7.3")
        if caps.get("optimizer_api_ok") is False:  # the jobs' own check (jobs/stages/drift.py), made in the job
            fail(f"{_stack_text(versions)}: megatron-core's get_megatron_optimizer takes neither the keywords NeMo's "
                 f"optimizer setup passes nor the config_overrides that replaced them (checked in the job): "
                 f"fine-tune and distillation stop before training",
                 f"pin megatron-core=={PINS.megatron_core} (requirements-jobs.txt) or use {CONTAINER} as shipped")
        found = stacks_matching(versions)
        te = versions.get("transformer-engine") if caps.get("te_importable") else None
        engine = f"TE {te}" if te else "no TE"
        if not found:
            warn(f"{_stack_text(versions)} is not in the stack matrix (launcher/app/stacks.yaml: "
                 f"{', '.join(s.name for s in STACKS)})",
                 f"use {CONTAINER} or the pins of requirements-jobs.txt, and run `minitron submit --smoke` first")
        else:
            proof = stage_proof(found, kinds, te, gpu=role == "gpu")
            failing = [k for k, (state, _) in proof.items() if state == "failing"]
            unproven = [k for k, (state, _) in proof.items() if state == "unproven"]
            for kind in failing:
                fail(f"{found[0].name} with {engine}: stage {kind} failed: {proof[kind][1]}",
                     f"pin {_pins_text()} (requirements-jobs.txt) or use another container")
            if unproven:
                where = "on a GPU" if role == "gpu" else "here"
                proven = [k for k, (state, _) in proof.items() if state == "proven"]
                warn(f"{found[0].name} with {engine}: unproven {where}: stages {', '.join(unproven)}"
                     + (f" (proven: {', '.join(proven)})" if proven else " (no stage has run on it)"),
                     "run `minitron submit --smoke` on this cluster before the real recipe")

    if role == "gpu" and gpus.get("cudnn_error"):
        warn(f"torch cannot use its cuDNN in the job ({gpus['cudnn_error']})",
             "another cuDNN is loaded first (LD_LIBRARY_PATH, or a library such as Transformer Engine built against "
             "another cuDNN): make the image's cuDNN the one torch was built with (the NeMo container's is)")

    # -- Transformer Engine ----------------------------------------------------------------------
    if role == "gpu" and "torch" not in unusable:
        te_error = broken("transformer-engine")
        if te_error:
            if expect.get("attention", "fused") == "fused":
                fail(f"Transformer Engine is not importable ({te_error}): the profile plans fused attention, which "
                     f"needs TE", f"run in {CONTAINER}, or set attention: unfused in the profile (megatron-core's "
                     f"local spec, slower)")
            else:
                warn(f"Transformer Engine is not importable ({te_error}): the stages run megatron-core's local spec "
                     f"(unfused attention, slower than the container's TE path)",
                     f"run in {CONTAINER} for the tutorial's speed")
        elif broken("transformer-engine.pytorch"):
            fail(f"transformer_engine imports but transformer_engine.pytorch does not "
                 f"({broken('transformer-engine.pytorch')}): the jobs would take the TE path and fail",
                 "repair the Transformer Engine install (its torch extension) or uninstall it")

    # -- every function the jobs call ----------------------------------------------------------------
    package_of = {"nemo": "nemo", "megatron": "megatron-core", "modelopt": "modelopt", "lightning": "lightning",
                  "fiddle": "fiddle", "datasets": "datasets", "tokenizers": "tokenizers",
                  "transformers": "transformers", "tensorboard": "tensorboard"}
    for entry in report.get("functions") or []:
        if entry.get("present") or not set(entry.get("used_by") or ()) & set(kinds):
            continue
        package = package_of.get(str(entry.get("name", "")).split(".")[0])
        if package in unusable or (package and broken(package)):
            continue  # its package's own line covers it
        private = any(part.startswith("_") for part in str(entry["name"]).split("."))
        fail(f"{entry['name']} is missing ({entry.get('error') or 'not found'}), used by "
             f"{', '.join(k for k in entry.get('used_by') or () if k in kinds)}"
             + (" (a private NeMo/ModelOpt function)" if private else ""),
             f"use the stack the jobs were tested on ({_pins_text()}) or {CONTAINER}")

    # -- file system and token -------------------------------------------------------------------
    job_dir = caps.get("job_dir") or {}
    if not caps.get("job_dir_writable", job_dir.get("writable")):
        fail(f"job_dir is not writable from inside the job ({job_dir.get('path') or job_dir.get('job_dir')}: "
             f"{job_dir.get('error') or 'no report'})",
             "put job_dir on a file system the compute nodes mount read-write (it is mounted at the same path "
             "into the container)")
    hf_home = caps.get("hf_home") or {}
    if not caps.get("hf_home_writable", hf_home.get("writable")):
        fail(f"HF_HOME ({hf_home.get('path') or '?'}, {hf_home.get('from') or '?'}) is not writable from inside the "
             f"job ({hf_home.get('error') or 'no report'})",
             "set HF_HOME=<a shared, writable directory> in env_vars and add it to mounts")
    hf_model = expect.get("hf_model")
    if role == "gpu" and hf_model and not caps.get("token_present") and not caps.get("hf_offline"):
        warn(f"no Hugging Face token inside the job (HF_TOKEN, HUGGING_FACE_HUB_TOKEN or $HF_HOME/token), and the "
             f"default recipe imports {hf_model}, a gated model",
             "add HF_TOKEN to env_vars and required_env_vars, and set it in your shell before submit")
    for error in report.get("errors") or []:
        warn(f"the probe itself hit an error: {error}", "see the probe's log; the rest of the report stands")
    return problems


def worst(problems: Sequence[Problem]) -> Optional[str]:
    if any(p.severity == "FAIL" for p in problems):
        return "FAIL"
    return "warn" if problems else None
