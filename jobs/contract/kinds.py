"""The stage kinds, as data: the one place that says what each kind of stage is.

The launcher and the jobs read this table instead of naming kinds: the recipe's stage graph (one
stage or one per pruning entry or student, inputs from other kinds' outputs, which kinds a recipe
may turn off), the stage-config builder and its validation (sections, inputs, outputs), the planner
(resources and estimate model), the scripts (training kinds are requeued and signalled before their
time limit), status and calibration (which kinds report steps), the probe (packages per kind), the
scripts' `# what:` line and the tests. Adding a kind is one entry here plus its job module. Standard library only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

VARIANT = "{variant}"  # in an input or output name: one entry per instance of a per-pruning/per-student kind


class Resources(str, enum.Enum):
    """What a stage of the kind runs on."""

    CPU = "cpu"            # no GPU (the profile's CPU partition)
    ONE_GPU = "one_gpu"    # at most one GPU (a checkpoint conversion)
    ONE_NODE = "one_node"  # the GPUs of one node (data-parallel evaluation)
    PIPELINE = "pipeline"  # one node's GPUs, or the fewest nodes that hold the pipeline (pipeline-parallel pruning)
    NODES = "nodes"        # the nodes and GPUs the planner lays out (training)


class Estimate(str, enum.Enum):
    """The planner's model for the kind's layout, memory and time (launcher/planning)."""

    DATA = "data"              # tokenise on CPU workers
    HF_IMPORT = "hf_import"    # convert the source model into a checkpoint (or build a random one)
    TRAINING = "training"      # layout search, FLOPs per step, validation, checkpoint saves
    PRUNING = "pruning"        # TP=1, PP over one node (or the fewest that hold it), calibration forward passes
    EVALUATION = "evaluation"  # validation forward passes of every model, data-parallel on one node
    HF_EXPORT = "hf_export"    # convert each student back to Hugging Face
    PROBE = "probe"            # the container probe: no model


class Per(str, enum.Enum):
    """How many stages of the kind a recipe has."""

    ONE = "one"
    PRUNING = "pruning"    # one per entry of the recipe's `pruning` (named <kind>_<entry>)
    STUDENT = "student"    # one per entry of the recipe's `students`


@dataclass(frozen=True)
class Input:
    """An entry of the stage config's `inputs`: the path of another kind's output.

    A producer of several stages (per pruning entry or student) feeds the consumer stage of the same
    variant; a single consumer gets one input per student instead (`each`, and `name` holds VARIANT)."""

    name: str
    producer: str
    output: str
    optional: bool = False      # absent when the producer does not make this output for the recipe
    each: Optional["Per"] = None


@dataclass(frozen=True)
class Output:
    """An entry of the stage config's `outputs`: a path inside the stage's work directory."""

    name: str
    path: str                   # relative to RUN_DIR/work/<stage>; "." is that directory
    when: Optional[str] = None  # a recipe condition (launcher/config/graph.py) without which it is not made
    each: Optional[Per] = None  # one output per student (`name` and `path` hold VARIANT)


@dataclass(frozen=True)
class StageKind:
    name: str
    entrypoint: str                     # the job module `python -m jobs.runtime.task` runs
    doc: str                            # one line for people (the `# what:` line of its rendered script)
    sections: tuple[str, ...]           # stage-config sections the job reads (jobs.contract.config.SECTION_KEYS)
    inputs: tuple[Input, ...] = ()
    outputs: tuple[Output, ...] = ()
    resources: Resources = Resources.CPU
    estimate: Estimate = Estimate.DATA
    per: Per = Per.ONE
    tag: str = ""                       # short prefix of a per-variant stage's Slurm job name ("kd-width")
    trains: bool = False                # steps with checkpoints: requeued, signalled before its limit, watched
    student: bool = False               # its model is the pruned student of its variant (else the teacher)
    teacher_forward: bool = False       # the fine-tuned teacher runs beside it, forward only
    batches_from: Optional[str] = None  # evaluates on the validation batches of this (training) kind
    settings: str = "plain"             # the shape of its recipe settings (launcher/config/recipe.py)
    optional: bool = False              # the recipe may turn it off (stages.<kind>.enabled)
    enabled_by_default: bool = True
    skip_if: Optional[str] = None       # a recipe condition under which the recipe itself provides its outputs
    pipeline: bool = True               # part of a recipe's stage graph (the probe is a run of its own)
    packages: tuple[str, ...] = ()      # what its job imports, as the probe reports them (jobs/stages/probe.py)

    def output(self, name: str) -> Output:
        return next(o for o in self.outputs if o.name == name)


NEMO = ("torch", "megatron-core", "transformers", "nemo", "modelopt", "lightning", "fiddle")
MODEL = Output("model", "model")
LOGS = Output("log_dir", "logs")
DATA = Input("data", "data", "data")

KINDS: tuple[StageKind, ...] = (
    StageKind(
        "data", "jobs.stages.data", "tokenise the corpus into Megatron .bin/.idx (and train the BPE)",
        sections=("tokenizer", "data"),
        outputs=(Output("data", "."), Output("tokenizer", "tokenizer", when="trained_tokenizer")),
        packages=("torch", "megatron-core", "transformers", "datasets", "tokenizers")),
    StageKind(
        "import", "jobs.stages.import_ckpt", "the teacher as a checkpoint (from Hugging Face, or random)",
        sections=("model", "tokenizer", "engine"),
        inputs=(Input("tokenizer", "data", "tokenizer", optional=True),),
        outputs=(MODEL,), resources=Resources.ONE_GPU, estimate=Estimate.HF_IMPORT, settings="conversion",
        skip_if="checkpoint_given", packages=NEMO),
    StageKind(
        "finetune", "jobs.stages.finetune", "teacher correction: fine-tune the teacher on the data",
        sections=("model", "data", "parallel", "batch", "train", "engine"),
        inputs=(Input("model", "import", "model"), DATA),
        outputs=(MODEL, LOGS), resources=Resources.NODES, estimate=Estimate.TRAINING, trains=True,
        settings="training", packages=NEMO),
    StageKind(
        "prune", "jobs.stages.prune", "depth or width pruning of the fine-tuned teacher (ModelOpt Minitron)",
        sections=("model", "data", "parallel", "batch", "prune", "engine"),
        inputs=(Input("model", "finetune", "model"), DATA),
        outputs=(MODEL,), resources=Resources.PIPELINE, estimate=Estimate.PRUNING, per=Per.PRUNING, tag="pr-",
        settings="pruning", packages=NEMO),
    StageKind(
        "distill", "jobs.stages.distill", "logits distillation of a pruned student from the teacher",
        sections=("model", "data", "parallel", "batch", "train", "distill", "student_shape", "engine"),
        inputs=(Input("student", "prune", "model"), Input("teacher", "finetune", "model"), DATA),
        outputs=(MODEL, LOGS), resources=Resources.NODES, estimate=Estimate.TRAINING, per=Per.STUDENT, tag="kd-",
        trains=True, student=True, teacher_forward=True, settings="distillation",
        packages=NEMO),
    StageKind(
        "report", "jobs.stages.report", "validation loss of every model, loss curves, a plot and a summary",
        sections=("model", "data", "parallel", "batch", "report", "engine"),
        inputs=(DATA, Input("teacher", "import", "model"), Input("finetune", "finetune", "model"),
                Input("finetune_logs", "finetune", "log_dir"),
                Input(f"{VARIANT}/pruned", "prune", "model", each=Per.STUDENT),
                Input(f"{VARIANT}/distilled", "distill", "model", each=Per.STUDENT),
                Input(f"{VARIANT}/distill_logs", "distill", "log_dir", each=Per.STUDENT)),
        outputs=(Output("report_dir", "."), Output("summary_json", "summary.json"),
                 Output("summary_md", "summary.md"), Output("plot", "val_loss.png")),
        resources=Resources.ONE_NODE, estimate=Estimate.EVALUATION, batches_from="finetune", optional=True,
        packages=NEMO + ("tensorboard", "matplotlib")),
    StageKind(
        "export", "jobs.stages.export", "each distilled student as a Hugging Face model",
        sections=("engine",),
        inputs=(Input(VARIANT, "distill", "model", each=Per.STUDENT),),
        outputs=(Output(VARIANT, VARIANT, each=Per.STUDENT),), resources=Resources.ONE_GPU,
        estimate=Estimate.HF_EXPORT, settings="conversion", optional=True, enabled_by_default=False, packages=NEMO),
    StageKind(
        "probe", "jobs.stages.probe", "what the container offers the stage jobs (`minitron check --probe`)",
        sections=("probe",), outputs=(Output("report", "probe.json"),), estimate=Estimate.PROBE, pipeline=False),
)

BY_NAME: dict[str, StageKind] = {k.name: k for k in KINDS}
PIPELINE_KINDS: tuple[StageKind, ...] = tuple(k for k in KINDS if k.pipeline)
PROBE = BY_NAME["probe"]


def stage_name(kind_: StageKind, variant: Optional[str]) -> str:
    """`finetune`, `prune_depth`, `distill_width`: a per-variant stage is <kind>_<variant>."""
    return kind_.name if variant is None else f"{kind_.name}_{variant}"
