"""Cluster profiles: what a cluster offers and how to ask it for resources (NeMo-Skills' YAML shape)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal, Optional


from ..core import bundled
from ..core.errors import UserError, did_you_mean
from . import gpus
from .executors import traits
from .remote import RemoteSettings
from .schema import build, field
from .tracking import TrackingSpec, check_tracking
from .values import check_directive, check_memory, check_time, lies_under, parse_time_minutes
from .yamlfile import (Located, control_problem, load_yaml_file, looks_like_token, looks_secret,
                       resolve_named_file, shown)

PROFILE_DIR = bundled.profile_dir()
DEFAULT_PROFILE = "h100-1x8"

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|_KEY$|CREDENTIAL)", re.I)
MAX_ENV_VALUE = 32 * 1024  # Linux takes 128 KiB per variable; a stage's whole environment stays far below
MAX_ENV_TOTAL = 128 * 1024
MAX_JOB_DIR = 512  # run directories nest ~150 characters deeper; PATH_MAX is 4096
MAX_PATH_PART = 255  # NAME_MAX
JOB_DIR_SPECIAL = "#%,:"  # safe in a shell word, not in #SBATCH --output nor --container-mounts
_NAME = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REF = re.compile(
    rf"^(?:(?P<user>[A-Za-z0-9._-]+)@)?(?:(?P<registry>[A-Za-z0-9.-]+(?::\d+)?)#)?"
    rf"(?P<name>{_NAME}(?:/{_NAME})*)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}))?"
    rf"(?:@(?P<digest>sha256:[0-9a-f]{{64}}))?$")
_SIZES = "the plan sizes each stage; set nodes, gpus_per_node, gpu_request, cpus_per_node, mem_per_node or exclusive"
_LOGS = "remove it; `minitron logs` and status read the launcher's one log per stage"
# The sbatch options the launcher sets for every stage, in its script (rendering/templates/slurm_stage.sh.j2) or
# on sbatch's command line (backends/slurm.py), and what a profile does instead. sbatch keeps the last of a
# repeated option, so one in sbatch_args would silently replace the launcher's. --comment is merged instead.
LAUNCHER_SBATCH = {
    **dict.fromkeys(("nodes", "ntasks", "ntasks-per-node", "gpus", "gpus-per-node", "gpus-per-task", "gpus-per-socket",
                     "gres", "cpus-per-task", "cpus-per-gpu", "mem", "mem-per-cpu", "mem-per-gpu", "exclusive",
                     "oversubscribe"), _SIZES),
    "time": "set timeouts or default_time, or a recipe stage's time_limit",
    "partition": "set partition or cpu_partition",
    "account": "set account",
    "qos": "set qos",
    **dict.fromkeys(("requeue", "no-requeue", "signal"), "set signal_lead_s or max_continuations"),
    **dict.fromkeys(("output", "error", "open-mode"), _LOGS),
    **dict.fromkeys(("job-name", "dependency", "kill-on-invalid-dep", "parsable", "array", "wrap"),
                    "remove it; the launcher names, chains and tracks one job per stage"),
    "export": "remove it; stages get env_vars, and the names listed there from the submitting shell",
}


def _check_absolute(value: str) -> str | None:
    if not os.path.isabs(value):
        return f"must be an absolute path on the shared file system, got {shown(value)}"
    if any(ch in value for ch in "\n\r\t \"'`$\\;&|<>*?") or control_problem(value):
        return f"path {shown(value)} contains whitespace or shell metacharacters (or control characters)"
    if any(len(part) > MAX_PATH_PART for part in value.split("/")):
        return f"path {shown(value)} has a component longer than {MAX_PATH_PART} characters"
    return None


def _check_gpu_memory(value: float) -> str | None:
    if value > 300:
        hint = f" (that looks like MiB: {value:g} MiB = {value / 1024:.0f} GiB)" if value >= 1024 else ""
        return f"must be at most 300 GiB (the largest GPUs have 288), got {value:g}{hint}"
    return None


def normalize_image(ref: str) -> str:
    """An image reference in the form every enroot understands: `[USER@][REGISTRY#]IMAGE[:TAG]` or an
    absolute squashfs path. Raises ValueError with the reason when the reference is malformed."""
    ref = ref.strip()
    if ref.startswith(("/", "./", "../")) or ref.endswith(".sqsh"):
        if not ref.startswith("/"):
            raise ValueError(f"squashfs image {shown(ref)} must be an absolute path (pyxis would read a "
                             f"relative name as a Docker Hub image)")
        if _check_absolute(ref):
            raise ValueError(f"squashfs path {shown(ref)} contains whitespace or shell metacharacters")
        return ref
    for prefix in ("docker://", "dockerd://"):
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
    if "#" not in ref:
        user, at, rest = ref.rpartition("@") if "@" in ref.split("/")[0] else ("", "", ref)
        first, slash, remainder = rest.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            rest = f"{first}#{remainder}"
        ref = f"{user}@{rest}" if at else rest
    if not IMAGE_REF.match(ref):
        raise ValueError(f"malformed image reference {shown(ref)} (expected [USER@][REGISTRY#]IMAGE[:TAG] "
                         f"such as nvcr.io#nvidia/nemo:25.11, or an absolute .sqsh path)")
    return ref


@dataclass
class GpuSpec:
    model: str = field(doc="GPU model, e.g. H100-80GB: a family config/gpus.py knows, or give achievable_tflops")
    memory_gib: float = field(min=8, check=_check_gpu_memory, doc="memory of one GPU in GiB; must fit the model")
    achievable_tflops: Optional[float] = field(None, min=1, max=10000,
                                               doc="bf16 model TFLOP/s one GPU sustains in training; "
                                                   "default: the model's family")


@dataclass
class ClusterProfile:
    executor: Literal["slurm", "local"]
    nodes: int = field(min=1, max=10000, doc="nodes one stage may use")
    gpus_per_node: int = field(min=0, max=64, doc="0: no GPUs, every stage runs on the nodes' CPUs")
    job_dir: str = field(doc="run directories are created here; $VARS are expanded")
    gpu: Optional[GpuSpec] = field(None, doc="the GPU's model and memory; required when gpus_per_node > 0")
    max_nodes: Optional[int] = field(None, min=1, max=10000,
                                     doc="the most nodes any stage takes (`--nodes` replaces it); default: nodes")
    cpus_per_node: int = field(0, min=0, max=4096, doc="0: let Slurm decide")
    mem_per_node: str = field("0", check=check_memory, doc="sbatch --mem: N[K|M|G|T], M if none; 0 = all of it")
    partition: Optional[str] = field(None, check=check_directive)
    cpu_partition: Optional[str] = field(None, check=check_directive,
                                         doc="CPU-only stages go here; default: partition")
    account: Optional[str] = field(None, check=check_directive)
    qos: Optional[str] = field(None, check=check_directive)
    timeouts: dict[str, str] = field({}, check=lambda m: next(filter(None, map(check_time, m.values())), None),
                                     doc="longest time limit per partition (MaxTime): planned limits stop there")
    default_time: str = field("04:00:00", check=check_time,
                              doc="the longest planned limit in a partition that timeouts names no limit for")
    containers: dict[str, str] = field({}, doc="named container images")
    container: str = field("nemo", doc="which entry of containers the stages run in; 'none': bare metal")
    container_workdir: Optional[str] = field(None, check=_check_absolute)
    mounts: list[str] = field([], doc="SRC:DST[:FLAGS] bind mounts for the container")
    check_mounts: bool = field(True, doc="fail when a mount source or the squashfs image does not exist here")
    env_vars: list[str] = field([], max_len=2 * MAX_ENV_VALUE, max_items=256,
                                doc="NAME=value to set, or NAME to pass through from the shell")
    required_env_vars: list[str] = field([], max_items=256)
    mpi: Literal["pmix", "pmi2", "none"] = "pmix"
    gpu_request: Literal["gpus-per-node", "gres"] = "gpus-per-node"
    exclusive: bool = True
    sbatch_args: list[str] = field([], doc="extra --flag=value lines for #SBATCH, none the launcher sets itself "
                                           "(LAUNCHER_SBATCH); a --comment is appended to the launcher's tag")
    srun_args: list[str] = field([], doc="extra srun flags")
    setup: list[str] = field([], max_len=4096, max_items=256,
                             doc="shell lines run before the stage command (module load, ...)")
    python: str = field("python", check=check_directive)
    dependency_type: Literal["afterok", "afterany"] = "afterok"
    attention: Literal["fused", "unfused"] = field("fused", doc="unfused where Transformer Engine is missing")
    signal_lead_s: int = field(300, min=30, max=3600,
                               doc="seconds before the time limit the job is told to checkpoint")
    max_continuations: int = field(10, min=0, max=1000, doc="time-limit continuations of one training stage")
    stall_timeout_s: Optional[int] = field(None, min=10, max=7 * 86400,
                                           doc="a training stage whose progress stops this long exits for requeue")
    master_port: int = field(29500, min=1024, max=65535 - 1000,
                             doc="the Slurm script adds SLURM_JOB_ID % 1000, so at most 64535")
    local_parallel: bool = field(False, doc="local executor: run independent stages at once when GPUs are free")
    tracking: TrackingSpec = field(TrackingSpec(), doc="W&B and MLflow the training stages log to (config/tracking.py)")
    remote: Optional[RemoteSettings] = field(None, doc="submit from another machine: the login node to run on "
                                                       "over SSH (docs/remote.md)")

    # filled in by load_profile
    source: str = field("")

    def error(self, key: str, message: str, hint: str | None = None) -> UserError:
        """An error at `key` of the profile's file, with its line (checks after loading use it)."""
        return self.located.error(key, message, hint)

    @property
    def hardware(self) -> str:
        """`2 × 8 H100-80GB`, or `1 node, CPUs only` for a profile without GPUs."""
        if not self.gpus_per_node or self.gpu is None:
            return f"{self.nodes} node{'s' if self.nodes != 1 else ''}, CPUs only"
        return f"{self.nodes} × {self.gpus_per_node} {self.gpu.model}"

    @property
    def image(self) -> str | None:
        return None if self.container == "none" else self.containers[self.container]

    def env_values(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.env_vars if "=" in item)

    def env_passthrough(self) -> list[str]:
        return [item for item in self.env_vars if "=" not in item]

    def sbatch_extras(self) -> tuple[list[str], list[str]]:
        """(the --comment values, the other options) of sbatch_args: the script appends the first to the
        launcher's own comment tag and writes the others after the launcher's options."""
        comments = [arg.partition("=")[2] for arg in self.sbatch_args if arg.startswith("--comment=")]
        return comments, [arg for arg in self.sbatch_args if not arg.startswith("--comment=")]

    @property
    def node_cap(self) -> int:
        """The most nodes one stage may take: max_nodes (or `--nodes`), else every node of the profile."""
        return self.max_nodes or self.nodes

    def time_limit_minutes(self, partition: str | None) -> int | None:
        limit = self.timeouts.get(partition or "")
        return parse_time_minutes(limit) if limit else None


def cap_nodes(profile: ClusterProfile, nodes: int) -> None:
    """`--nodes N`: every stage takes at most N of the profile's nodes. It replaces max_nodes, so the
    run directory's resolved profile records it."""
    if nodes > profile.nodes:
        raise UserError(f"{nodes} is more than the {profile.nodes} node(s) of profile {profile.source}",
                        key="--nodes", hint=f"give at most {profile.nodes}, or raise nodes in the profile")
    profile.max_nodes = nodes


def _expand(value: str, key: str, src: Located) -> str:
    if "$USER" in value or "${USER}" in value:
        import getpass
        value = value.replace("${USER}", "$USER").replace("$USER", os.environ.get("USER") or getpass.getuser())
    expanded = os.path.expanduser(os.path.expandvars(value))
    if "$" in expanded:
        raise src.error(key, f"{shown(value)} uses an environment variable that is not set")
    problem = control_problem(expanded, allow_newline=False)
    if problem:
        raise src.error(key, f"after expanding its variables, the path {problem}")
    return expanded


def resolve_profile_path(name_or_path: str | None) -> str:
    name = name_or_path or os.environ.get("MINITRON_PROFILE") or DEFAULT_PROFILE
    return resolve_named_file(name, PROFILE_DIR, "profile", "--profile")


def load_profile(name_or_path: str | None = None) -> ClusterProfile:
    path = resolve_profile_path(name_or_path)
    return profile_from_located(load_yaml_file(path), os.path.abspath(path))


def profile_from_located(src: Located, source: str) -> ClusterProfile:
    _check_env_shapes(src)
    profile = build(ClusterProfile, src.data, src)
    profile.source = source
    profile.located = src  # not a field: lets preflight and the planner name the line
    validate_profile(profile, src)
    return profile


def _check_env_shapes(src: Located) -> None:
    """A secret written in the wrong shape is refused before the schema would quote it: a mapping
    under env_vars (`- HF_TOKEN: hf_…`), or NAME=value under required_env_vars."""
    data = src.data if isinstance(src.data, dict) else {}
    for list_key in ("env_vars", "required_env_vars"):
        items = data.get(list_key)
        for index, item in enumerate(items if isinstance(items, list) else []):
            key = f"{list_key}[{index}]"
            if isinstance(item, dict):
                names = [str(name) for name in item if ENV_NAME.match(str(name)) and not looks_secret(str(name))]
                names = names[:1] or ["NAME"]
                raise src.error(key, f"is a mapping ({names[0]}: …), not a string; value not shown",
                                f"write `- {names[0]}` to pass it from your shell"
                                + ("" if list_key == "required_env_vars" or SECRET_NAME.search(names[0])
                                   else f", or `- {names[0]}=VALUE` to set it"))
            if list_key == "required_env_vars" and isinstance(item, str) and "=" in item:
                name = item.split("=", 1)[0]
                shown_name = name if ENV_NAME.match(name) and not looks_secret(name) else "NAME"
                raise src.error(key, "lists a variable by name only; NAME=value is not allowed here (value not shown)",
                                f"write `- {shown_name}` and set it in your shell")


def validate_profile(profile: ClusterProfile, src: Located) -> None:
    """Cross-field rules that single-field checks cannot express."""
    profile.job_dir = _expand(profile.job_dir, "job_dir", src)
    problem = _check_absolute(profile.job_dir)
    if not problem and any(ch in profile.job_dir for ch in JOB_DIR_SPECIAL):
        problem = (f"{shown(profile.job_dir)} contains '#', '%', ',' or ':' (#SBATCH --output cuts a path at # and "
                   f"expands %; , and : split the container mount list)")
    if not problem and len(profile.job_dir) > MAX_JOB_DIR:
        problem = f"is {len(profile.job_dir)} characters long; at most {MAX_JOB_DIR} are allowed"
    if problem:
        raise src.error("job_dir", problem)
    profile.mounts = [_expand(m, f"mounts[{i}]", src) for i, m in enumerate(profile.mounts)]
    if profile.gpus_per_node and profile.gpu is None:
        raise src.error("gpus_per_node", f"is {profile.gpus_per_node}, but the profile has no gpu",
                        "add `gpu: {model: H100-80GB, memory_gib: 80}` (your GPU), or set gpus_per_node: 0 "
                        "for nodes without GPUs")
    executor = traits(profile.executor)
    if executor.max_nodes is not None and profile.nodes > executor.max_nodes:
        raise src.error("nodes", f"the {profile.executor} executor runs stages on exactly one node"
                        f"{'' if executor.max_nodes == 1 else f' to {executor.max_nodes}'}, got {profile.nodes}")
    if profile.max_nodes is not None and profile.max_nodes > profile.nodes:
        raise src.error("max_nodes", f"{profile.max_nodes} is above nodes={profile.nodes}",
                        f"give at most {profile.nodes}, or raise nodes")
    if profile.container != "none" and profile.container not in profile.containers:
        raise src.error("container", f"names no entry of containers ({', '.join(profile.containers) or 'none defined'})",
                        did_you_mean(profile.container, profile.containers))
    for name, ref in profile.containers.items():
        try:
            profile.containers[name] = normalize_image(ref)
        except ValueError as exc:
            raise src.error(f"containers.{name}", str(exc)) from None
    for index, mount in enumerate(profile.mounts):
        parts = mount.split(":")
        if len(parts) not in (2, 3) or not all(parts[:2]):
            raise src.error(f"mounts[{index}]", f"expected SRC:DST[:FLAGS], got {shown(mount)}")
        for part in parts[:2]:
            problem = _check_absolute(part)
            if problem:
                raise src.error(f"mounts[{index}]", problem)
        if "," in mount:
            raise src.error(f"mounts[{index}]", "a mount may not contain ','; list each one separately")
        destination, job_dir = os.path.normpath(parts[1]), os.path.normpath(profile.job_dir)
        if os.path.commonpath([destination, job_dir]) in (destination, job_dir):
            raise src.error(f"mounts[{index}]", f"destination {shown(destination)} would hide job_dir "
                            f"{shown(job_dir)} (or part of it) inside the container; job_dir is mounted at its "
                            f"own path, so mount elsewhere")
    _validate_env(profile, src)
    _check_hf_home(profile, src)
    if profile.tracking.mlflow is not None:  # a file store under job_dir names it the same way: $USER
        mlflow = profile.tracking.mlflow
        mlflow.tracking_uri = _expand(mlflow.tracking_uri, "tracking.mlflow.tracking_uri", src)
    check_tracking(profile.tracking, profile.env_passthrough(), _container_paths(profile), src)
    if profile.gpu is not None:
        _validate_gpu(profile.gpu, src)
    for index, arg in enumerate(profile.sbatch_args):
        if not re.match(r"--[a-z][a-z0-9-]*(=|$)", arg) or "\n" in arg:
            raise src.error(f"sbatch_args[{index}]", f"expected one --flag[=value], got {shown(arg)}")
        problem = check_directive(arg[2:])
        if problem:
            raise src.error(f"sbatch_args[{index}]", problem)
        owned = _launcher_option(arg)
        if owned:
            raise src.error(f"sbatch_args[{index}]", *owned)
    for partition in profile.timeouts:
        problem = check_directive(partition)
        if problem:
            raise src.error(f"timeouts.{partition}", problem)
    problem = check_time(profile.default_time)
    if not problem and profile.partition and profile.time_limit_minutes(profile.partition) is not None:
        if parse_time_minutes(profile.default_time) > profile.time_limit_minutes(profile.partition):
            raise src.error("default_time", f"{profile.default_time} exceeds the {profile.partition} "
                            f"partition's limit {profile.timeouts[profile.partition]}")
    if executor.uses_partitions and profile.gpus_per_node > 0 and not profile.partition:
        raise src.error("partition", "a Slurm profile with GPUs needs a partition")


def _launcher_option(arg: str) -> tuple[str, str] | None:
    """(why, the fix) when `--flag[=value]` sets an option the launcher sets itself, or abbreviates one (sbatch
    takes any unambiguous prefix: --part); a --comment needs a value, which the launcher appends to its own."""
    flag, _, value = arg[2:].partition("=")
    if flag == "comment":
        return None if value else ("--comment needs a value", "--comment=TEXT, appended to the launcher's tag")
    owned = flag if flag in LAUNCHER_SBATCH else next((n for n in [*LAUNCHER_SBATCH, "comment"] if n.startswith(flag)),
                                                      None)
    if owned is None:
        return None
    shown_flag = f"--{flag}" + ("" if owned == flag else f" (short for --{owned})")
    fix = LAUNCHER_SBATCH.get(owned, "write --comment=TEXT in full; the launcher appends it to its own tag")
    return (f"{shown_flag} is an option the launcher sets for every stage, and sbatch keeps the last one given, "
            f"so it would replace the launcher's", fix)


def _validate_env(profile: ClusterProfile, src: Located) -> None:
    """Names are names; a secret is never given a value in the file; values fit in an environment."""
    total = 0
    for index, item in enumerate(profile.env_vars):
        key = f"env_vars[{index}]"
        name, eq, value = item.partition("=")
        if not ENV_NAME.match(name) or looks_like_token(name):
            raise src.error(key, f"{_shown_name(name)} is not a valid environment variable name",
                            "write NAME to pass it from your shell, or NAME=value")
        name = _shown_name(name)
        if eq and SECRET_NAME.search(name):
            raise src.error(key, f"{name} looks like a secret: list it by name only (`- {name}`) so its value "
                            f"is passed from your shell and never written to disk (value not shown)")
        if eq and looks_like_token(value):
            raise src.error(key, f"the value of {name} looks like a secret token (not shown); list it by name "
                            f"only (`- {name}`) and set it in your shell")
        if len(value) > MAX_ENV_VALUE:
            raise src.error(key, f"the value of {name} is {len(value)} characters; at most {MAX_ENV_VALUE} are "
                            f"allowed (Linux refuses a variable over 128 KiB)")
        total += len(item)
        if total > MAX_ENV_TOTAL:
            raise src.error(key, f"env_vars hold more than {MAX_ENV_TOTAL // 1024} KiB in all")
    for index, name in enumerate(profile.required_env_vars):
        if not ENV_NAME.match(name) or looks_like_token(name):
            raise src.error(f"required_env_vars[{index}]", f"{_shown_name(name)} is not a valid environment variable "
                            f"name")


def _container_paths(profile: ClusterProfile) -> list[str] | None:
    """What outlives a stage's container: job_dir and the mounts' destinations; None without a container."""
    return None if profile.container == "none" else [profile.job_dir] + [m.split(":")[1] for m in profile.mounts]


def _check_hf_home(profile: ClusterProfile, src: Located) -> None:
    """HF_HOME set in the profile must lie under a path the container mounts (job_dir or a mount's
    destination): elsewhere the Hugging Face cache stays inside one stage's container, so a download
    fails on its read-only image or is lost with it, an hour into the run."""
    hf_home = profile.env_values().get("HF_HOME")
    mounted = _container_paths(profile)
    if mounted is None or not hf_home or not os.path.isabs(hf_home) or lies_under(hf_home, mounted):
        return
    raise src.error("mounts", f"HF_HOME={shown(hf_home)} (env_vars) is under no path the container mounts "
                    f"(job_dir or a mount's destination), so the Hugging Face cache would not outlive a stage",
                    f"add a mount SHARED_DIR:{hf_home} to mounts, or set HF_HOME under one")


def _validate_gpu(gpu: GpuSpec, src: Located) -> None:
    """The planner's throughput and memory come from here: an unknown GPU needs its throughput given
    (a guess would make every time estimate wrong), and its memory must be a size that model has."""
    if gpus.family(gpu.model) is None and gpu.achievable_tflops is None:
        raise src.error("gpu.model", f"{shown(gpu.model)} is not a GPU model the planner knows (known: "
                        f"{gpus.known_names()})", "name one of them, or give gpu.achievable_tflops: the bf16 "
                        "TFLOP/s one GPU sustains in training")
    problem = gpus.memory_problem(gpu.model, gpu.memory_gib)
    if problem:
        raise src.error("gpu.memory_gib", *problem)


def _shown_name(name: str) -> str:
    return "<a name that looks like a secret, not shown>" if looks_secret(name) else shown(name)
