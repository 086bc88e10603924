"""`minitron init`: a commented cluster profile written from what the cluster itself says.

Slurm tells the partitions, GPUs per node and their GRES type, CPUs, memory, MaxTime and your default
account (launcher/backends/slurm_cluster.py). What it cannot tell comes from a flag, else from a prompt
when stdin is a terminal, else it is an error naming the flag: the GPU model when GRES names no type
init knows, the container image, job_dir, and the GPU partition when several have GPUs and the default
has none. Each value is written with a comment saying where it came from, and the text is loaded by
the profile's own loader before anything is written: a file `init` writes always loads.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from typing import Any, Callable, Optional

import yaml

from jobs.contract import write_text_atomic

from ..backends.slurm_cluster import ClusterFacts, LiveCluster, PartitionFacts, RecordedCluster, read_cluster
from ..config.profile import ClusterProfile, normalize_image, profile_from_located
from ..config.values import TIME_FORMAT, parse_time_minutes
from ..config.yamlfile import load_yaml_text, shown
from ..core.errors import ExitCode, UserError, did_you_mean, one_line
from .compat import CONTAINER
from .views import cluster_table, console, print_json, text

DEFAULT_OUTPUT = "profile.yaml"
DEFAULT_JOB_DIR = "$HOME/minitron-runs"
DEFAULT_TIME = next(f.default for f in dataclasses.fields(ClusterProfile) if f.name == "default_time")
ENV_VARS = ["HF_TOKEN", "HF_HOME", "TORCH_NCCL_AVOID_RECORD_STREAMS=1", "NCCL_NVLS_ENABLE=0"]
COMMENT_COLUMN = 40
# GPU families a GRES type or --gpu-model may name (longest first: A100 before A10), and those sold in
# one memory size, as the bundled profiles name them; any other needs its size in the name (A100-40GB).
GPU_FAMILIES = ("GB200", "B200", "H200", "H100", "A100", "A40", "A10", "L40S", "L40", "L4", "V100")
ONE_SIZE = {"H100": ("H100-80GB", 80), "H200": ("H200", 139)}
# The profile key a loader error names → the answer behind it (an error names that answer's flag or Slurm
# command), or what told the value.
BEHIND = {"gpu": "gpu", "containers": "container", "container": "container", "partition": "partition",
          "cpu_partition": "cpu_partition", "job_dir": "job_dir", "nodes": "--nodes",
          "timeouts": "scontrol show partition", "default_time": "scontrol show partition",
          "mem_per_node": "scontrol show node", "cpus_per_node": "scontrol show node", "gpus_per_node": "gpus_per_node",
          "python": "python",
          "account": "sacctmgr show user"}


def gpu_model(name: str, known_only: bool) -> Optional[tuple[str, int]]:
    """A GRES type or a --gpu-model as (model, GiB): `h100` → H100-80GB, `nvidia_a100-sxm4-80gb` →
    A100-80GB; None where the memory cannot be told (`a100` is 40 or 80) or, for a GRES type
    (`known_only`), the family is not one the planner's throughput table knows."""
    upper = name.upper()
    family = next((f for f in GPU_FAMILIES if f in upper), None)
    size = re.search(r"(\d+)\s*GB", upper)
    if size and (family or not known_only):
        return (f"{family}-{size.group(1)}GB" if family else name), int(size.group(1))
    return ONE_SIZE.get(family or "")


@dataclasses.dataclass
class Answer:
    value: Any
    note: str      # where it came from, for the comment
    origin: str    # what an error about it names: the flag, or the Slurm command


@dataclasses.dataclass(frozen=True)
class Question:
    flag: str
    usage: str                    # how to pass it, for the error that names it
    prompt: str
    check: Callable[[str], Any]   # the answer's value; ValueError says what is wrong with it
    default: Optional[str] = None


class Asker:
    """A value from its flag, else a prompt on a terminal; without a terminal the missing flags are
    collected and `fail_if_missing` names them all in one error."""

    def __init__(self, interactive: bool):
        self.interactive = interactive
        self.missing: list[tuple[Question, Optional[str]]] = []

    def __call__(self, question: Question, given: Optional[str], why: Optional[str] = None) -> Optional[Answer]:
        if given is not None:
            return Answer(checked(question, given), question.flag, question.flag)
        if not self.interactive:
            self.missing.append((question, why))
            return None
        while True:
            default = f" [{question.default}]" if question.default else ""
            sys.stderr.write(one_line(f"{question.prompt} ({f'{why}; ' if why else ''}{question.flag}){default}: "))
            sys.stderr.flush()
            line = sys.stdin.readline()
            if not line:
                sys.stderr.write("\n")  # the error goes on a line of its own, not after the prompt
                raise UserError("no answer (end of input)", key=question.flag, hint=f"pass {question.usage}")
            try:
                return Answer(checked(question, line.strip() or question.default or ""), "answered at the prompt",
                              question.flag)
            except UserError as exc:
                sys.stderr.write(f"  {one_line(exc.message)}\n")

    def fail_if_missing(self) -> None:
        if self.missing:
            whys = [why for _, why in self.missing if why]
            raise UserError("not given, and stdin is not a terminal to ask"
                            + (f": {'; '.join(whys)}" if whys else ""), key=", ".join(q.flag for q, _ in self.missing),
                            hint=f"pass {', '.join(q.usage for q, _ in self.missing)}")


def checked(question: Question, value: str) -> Any:
    try:
        return question.check(value)
    except ValueError as exc:
        raise UserError(str(exc), key=question.flag) from None


def _partition_check(facts: ClusterFacts, gpus: bool) -> Callable[[str], PartitionFacts]:
    def check(name: str) -> PartitionFacts:
        part = facts.partitions.get(name)
        if part is None:
            hint = did_you_mean(name, facts.partitions)
            raise ValueError(f"no partition {shown(name)} on {facts.source} (partitions: "
                             f"{', '.join(facts.partitions)})" + (f"; {hint}" if hint else ""))
        if gpus and not part.gpus_per_node:
            with_gpus = [p.name for p in facts.partitions.values() if p.gpus_per_node]
            raise ValueError(f"partition {name} offers no GPUs (with GPUs: {', '.join(with_gpus)})")
        return part
    return check


def _gpu_check(name: str) -> tuple[str, int]:
    model = gpu_model(name.strip(), known_only=False)
    if not name.strip() or model is None:
        raise ValueError(f"cannot tell the memory of GPU model {shown(name)}: write it as MODEL-NNGB, e.g. "
                         f"H100-80GB or A100-40GB")
    return model


def _image_check(ref: str) -> str:
    return "none" if ref.strip() == "none" else normalize_image(ref)


def _python_check(command: str) -> str:
    command = command.strip()
    if not command or (os.sep in command and not os.path.isabs(command)) or any(c.isspace() for c in command):
        raise ValueError(f"give a command name or an absolute path, such as /opt/venvs/nemo/bin/python, got "
                         f"{shown(command)}")
    return command


def _job_dir_check(path: str) -> str:
    if not os.path.isabs(os.path.expanduser(os.path.expandvars(path.strip()))):
        raise ValueError(f"must be an absolute path on the shared file system, got {shown(path)}")
    return path.strip()


GPU_MODEL = Question("--gpu-model", "--gpu-model MODEL-NNGB such as H100-80GB",
                     "GPU model and memory, e.g. H100-80GB", _gpu_check)
CONTAINER_IMAGE = Question("--container", "--container IMAGE or none", "container image, or none", _image_check,
                           CONTAINER)
PYTHON = Question("--python", "--python PATH (a Python with the jobs' stack, NeMo 2.7)",
                  "the Python on the nodes that has the jobs' stack (torch, NeMo 2.7)", _python_check, "python")
JOB_DIR = Question("--job-dir", "--job-dir DIR", "job_dir, a directory for the runs on the shared file system",
                   _job_dir_check, DEFAULT_JOB_DIR)


def _pick_partition(facts: ClusterFacts, ask: Asker, given: Optional[str], cpu_only: bool) -> Optional[Answer]:
    if cpu_only:  # --gpus-per-node 0: any partition runs every stage
        if given is not None:
            question = Question("--partition", "--partition NAME", "", _partition_check(facts, False))
            return Answer(checked(question, given), "--partition", "--partition")
        default = facts.partitions.get(facts.default_partition or "") or next(iter(facts.partitions.values()))
        return Answer(default, "the default partition (scontrol show partition)" if default.default
                      else "the first partition sinfo lists", "sinfo")
    gpu_parts = [p for p in facts.partitions.values() if p.gpus_per_node]
    if not gpu_parts:
        raise UserError(f"no partition of {facts.source} has GPUs (no gpu GRES in sinfo)", key="--partition",
                        hint="minitron runs its model stages on GPUs that Slurm schedules as GRES; for nodes "
                             "without GPUs pass --gpus-per-node 0")
    default = facts.partitions.get(facts.default_partition or "")
    if given is None and len(gpu_parts) == 1:
        return Answer(gpu_parts[0], "the only partition with GPUs (sinfo)", "sinfo")
    if given is None and default is not None and default.gpus_per_node:
        return Answer(default, "the default partition (scontrol show partition)", "scontrol show partition")
    names = ", ".join(p.name for p in gpu_parts)
    question = Question("--partition", "--partition NAME", f"GPU partition ({names})", _partition_check(facts, True))
    return ask(question, given, f"{len(gpu_parts)} partitions have GPUs ({names}) and the default has none")


def _pick_cpu_partition(facts: ClusterFacts, given: Optional[str], gpu: PartitionFacts, cpu_only: bool) -> Answer:
    if given is not None:
        question = Question("--cpu-partition", "--cpu-partition NAME", "", _partition_check(facts, False))
        return Answer(checked(question, given), "--cpu-partition", "--cpu-partition")
    if cpu_only:
        return Answer(None, f"no GPUs (--gpus-per-node 0): every stage runs in {gpu.name}", "--gpus-per-node")
    cpu_parts = [p for p in facts.partitions.values() if not p.gpus_per_node]
    default = next((p for p in cpu_parts if p.default), cpu_parts[0] if cpu_parts else None)
    if default is None:
        return Answer(None, f"every partition has GPUs: data prep and the report run in {gpu.name}", "sinfo")
    others = f"; others: {', '.join(p.name for p in cpu_parts if p is not default)}" if len(cpu_parts) > 1 else ""
    return Answer(default, f"{'the default' if default.default else 'a'} partition without GPUs, for data prep and "
                           f"the report (sinfo{others})", "sinfo")


def _pick_gpu(part: PartitionFacts, ask: Asker, given: Optional[str]) -> Optional[Answer]:
    if given is None and len(part.gpu_types) == 1:
        known = gpu_model(part.gpu_types[0], known_only=True)
        if known:
            return Answer(known, f"GRES type {part.gpu_types[0]} of partition {part.name} (sinfo)", "sinfo")
    why = (f"the GRES of partition {part.name} names no GPU type" if not part.gpu_types else
           f"partition {part.name} has GRES type {', '.join(part.gpu_types)}, which does not tell the model and "
           f"its memory")
    return ask(GPU_MODEL, given, why)


def _gpus_per_node(part: PartitionFacts, given: Optional[int]) -> Answer:
    gres = f"GRES {', '.join(part.gres)} of partition {part.name}" if part.gres else \
        f"partition {part.name} has no gpu GRES"
    if given is None:
        return Answer(part.gpus_per_node, f"{gres} (sinfo)", "sinfo")
    if given == 0:
        return Answer(0, f"--gpus-per-node 0: no GPUs, every stage on the nodes' CPUs; sinfo: {gres}",
                      "--gpus-per-node")
    return Answer(given, f"--gpus-per-node; sinfo: {gres}", "--gpus-per-node")


def _memory(part: PartitionFacts) -> tuple[str, str]:
    """RealMemory (MB) as sbatch --mem takes it; RealMemory=1 is Slurm's default for 'not configured'."""
    mb = part.memory_mb
    shapes = f", the smallest of {part.node_shapes} kinds of node" if part.node_shapes > 1 else ""
    if not mb or mb <= 1:
        return "0", f"RealMemory of {part.name}'s nodes is not configured: 0 = all of a node's memory"
    value = f"{mb // 1024}G" if mb % 1024 == 0 else f"{mb}M"
    return value, f"RealMemory={mb} (MB) of {part.name}'s nodes{shapes} (scontrol show node)"


def _mpi(facts: ClusterFacts) -> tuple[str, str]:
    """srun's --mpi: the cluster's own MpiDefault where it is one the profile takes (the stages need no MPI:
    torch meets at MASTER_ADDR), else pmix, as the bundled profiles have it."""
    value = (facts.mpi_default or "").lower()
    value = "pmix" if value.startswith("pmix") else value
    if value in ("pmix", "pmi2", "none"):
        return value, f"MpiDefault={facts.mpi_default} of this cluster (scontrol show config)"
    seen = f"MpiDefault={facts.mpi_default} is not one of pmix, pmi2, none; " if facts.mpi_default else ""
    return "pmix", f"{seen}not read from the cluster: `srun --mpi=list` says what it has"


def _yaml(value: Any) -> str:
    """A value in YAML flow style; times in double quotes, as the bundled profiles write them."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_yaml(k)}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str) and ":" in value and TIME_FORMAT.match(value):
        return f'"{value}"'
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 20).removesuffix("...\n").strip()


def _line(key: str, value: Any, note: str, indent: str = "") -> str:
    entry = f"{indent}{key}: {_yaml(value)}" if value is not None else f"{indent}{key}:"
    return f"{entry.ljust(COMMENT_COLUMN)}  # {one_line(note, 300)}"


def render_profile(facts: ClusterFacts, answers: dict[str, Answer], nodes: int, output: str) -> str:
    """The profile's text: every value with a comment saying where it came from."""
    part: PartitionFacts = answers["partition"].value
    cpu: Optional[PartitionFacts] = answers["cpu_partition"].value
    gpus, gpus_note = answers["gpus_per_node"].value, answers["gpus_per_node"].note
    mem, mem_note = _memory(part)
    limits = {p.name: p.time_limit for p in (part, cpu) if p is not None and p.time_limit}
    unlimited = [p.name for p in (part, cpu) if p is not None and not p.time_limit]
    default_time = DEFAULT_TIME
    if part.time_limit and parse_time_minutes(part.time_limit) < parse_time_minutes(DEFAULT_TIME):
        default_time = part.time_limit
    image = answers["container"].value
    lines = [f"# Written by `minitron init` on {time.strftime('%Y-%m-%d')} from {one_line(facts.source, 200)}:",
             "# sinfo, scontrol show partition/node and sacctmgr. Each value says where it came from.",
             f"# Next: `minitron check --profile {one_line(output, 200)}`, then `minitron submit --smoke` with it.",
             "executor: slurm",
             _line("nodes", nodes, f"nodes one stage may use{' (--nodes)' if nodes != 1 else ''}; partition "
                                   f"{part.name} has {part.nodes}{'' if nodes != 1 else ' (--nodes N for more)'}"),
             "# max_nodes: not set; every stage may take all `nodes` (the plan gives fewer to stages that gain "
             "nothing from more); set it, or pass --nodes N, to cap them",
             _line("gpus_per_node", gpus, gpus_note),
             (_line("gpu", {"model": answers["gpu"].value[0], "memory_gib": answers["gpu"].value[1]},
                    answers["gpu"].note) if gpus else
              "# gpu: not set; no GPUs: model stages run as one process on a node's CPUs, in fp32 (a smoke run, "
              "not training speed)"),
             _line("cpus_per_node", part.cpus or 0, f"CPUTot of {part.name}'s nodes (scontrol show node)"
                   if part.cpus else "not reported: 0 = let Slurm decide"),
             _line("mem_per_node", mem, mem_note),
             _line("partition", part.name, answers["partition"].note)]
    if cpu is not None:
        lines.append(_line("cpu_partition", cpu.name, answers["cpu_partition"].note))
    else:
        lines.append(f"# cpu_partition: not set; {answers['cpu_partition'].note}")
    if facts.account:
        lines.append(_line("account", facts.account, facts.account_note))
    else:
        lines.append(f"# account: not set; {one_line(facts.account_note, 300)}")
    no_limit = f"{', '.join(unlimited)}: no MaxTime (scontrol show partition)"
    if limits:
        lines.append(_line("timeouts", limits, "MaxTime of each partition (scontrol show partition)"
                           + (f"; {no_limit}" if unlimited else "")))
    else:
        lines.append(f"# timeouts: not set; {no_limit}")
    lines.append(_line("default_time", default_time, "the longest planned limit where timeouts names none"
                       + (f" (capped at {part.name}'s MaxTime)" if default_time != DEFAULT_TIME else "")))
    if image == "none":
        lines.append(_line("container", "none", f"{answers['container'].note}: stages run on the nodes' own Python"))
        lines.append(_line("python", answers["python"].value, f"{answers['python'].note}: runs every stage on the "
                                                              f"nodes; it needs the jobs' stack (torch, NeMo 2.7)"))
    else:
        lines += ["containers:", _line("nemo", image, answers["container"].note, indent="  "), "container: nemo"]
    mounted = "" if image == "none" else ", mounted at the same path in the container"
    lines += [_line("job_dir", answers["job_dir"].value,
                    f"{answers['job_dir'].note}; on the shared file system{mounted}"),
              _line("env_vars", None, "as in the bundled profiles; secrets by name only, from your shell"),
              *(f"  - {_yaml(item)}" for item in ENV_VARS),
              _line("mpi", *_mpi(facts)),
              _line("gpu_request", "gpus-per-node", "or gres, where the cluster wants --gres=gpu:N"),
              _line("exclusive", True, "a stage holds its nodes alone")]
    return "\n".join(lines) + "\n"


def _validated(text_: str, output: str, answers: dict[str, Answer]) -> ClusterProfile:
    """The profile as the loader reads it; an error names the flag (or the Slurm command) behind the value."""
    try:
        return profile_from_located(load_yaml_text(text_, output), os.path.abspath(output))
    except UserError as exc:
        behind = BEHIND.get((exc.key or "").split(".")[0].split("[")[0], exc.key)
        where = answers[behind].origin if behind in answers else behind
        raise UserError(exc.message, key=where, hint=exc.hint) from None


def _exists(path: str) -> UserError:
    return UserError("exists; init does not replace it", file=path, key="--output",
                     hint="pass --force to replace it, or another --output")


def _write(path: str, content: str, force: bool) -> None:
    """Without --force, created only if absent (O_EXCL: a file or link that appears meanwhile is kept);
    with it, replaced atomically (a link there is replaced, never followed)."""
    if force:
        write_text_atomic(path, content, 0o644)
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        raise _exists(path) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
    except OSError:
        os.unlink(path)
        raise


def run_init(args: Any) -> int:
    output = args.output or DEFAULT_OUTPUT
    if os.path.lexists(output) and not args.force:
        raise _exists(output)
    if not os.path.isdir(os.path.dirname(os.path.abspath(output))):
        raise UserError("its directory does not exist", file=output, key="--output")
    if not 1 <= args.nodes <= 10000:
        raise UserError(f"must be between 1 and 10000, got {args.nodes}", key="--nodes")
    facts = read_cluster(RecordedCluster(args.from_file) if args.from_file else LiveCluster())
    if args.gpus_per_node is not None and not 0 <= args.gpus_per_node <= 64:
        raise UserError(f"must be between 0 and 64, got {args.gpus_per_node}", key="--gpus-per-node")
    cpu_only = args.gpus_per_node == 0
    ask = Asker(interactive=sys.stdin.isatty())
    answers = {"partition": _pick_partition(facts, ask, args.partition, cpu_only)}
    ask.fail_if_missing()  # what follows depends on the partition
    part = answers["partition"].value
    if args.nodes > part.nodes:
        raise UserError(f"partition {part.name} has {part.nodes} node(s), not {args.nodes}", key="--nodes")
    answers["gpus_per_node"] = _gpus_per_node(part, args.gpus_per_node)
    answers["cpu_partition"] = _pick_cpu_partition(facts, args.cpu_partition, part, cpu_only)
    if not cpu_only:
        answers["gpu"] = _pick_gpu(part, ask, args.gpu_model)
    answers["container"] = ask(CONTAINER_IMAGE, args.container)
    if answers["container"] is not None and answers["container"].value == "none":
        answers["python"] = ask(PYTHON, args.python, "--container none: the stages run on the nodes' own Python")
    elif args.python is not None:
        raise UserError("is for --container none; in a container the stages run the image's python", key="--python")
    answers["job_dir"] = ask(JOB_DIR, args.job_dir)
    ask.fail_if_missing()
    content = render_profile(facts, answers, args.nodes, output)
    profile = _validated(content, output, answers)
    _write(output, content, args.force)
    if args.json:
        print_json({"output": os.path.abspath(output), "cluster": dataclasses.asdict(facts),
                    "profile": yaml.safe_load(content)})
        return ExitCode.OK
    cluster_table(facts)
    out = console()
    out.print(f"wrote {text(output)}: {text(profile.executor)}, {text(profile.hardware)}, "
              f"partition {text(profile.partition)}, "
              f"container {text(profile.image or 'none')}, account {text(profile.account or 'none')}")
    out.print(f"next: minitron check --profile {text(output)}; minitron plan --profile {text(output)}")
    return ExitCode.OK
