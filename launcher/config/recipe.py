"""Pipeline recipes: the model, the data, per-kind stage settings, pruning targets and students.

The stage graph is derived from the stage-kind table, not written by hand (graph.py): data → import →
finetune → prune_<p> for each pruning entry → distill_<s> for each student → report (→ export).
`after` adds ordering edges. Each kind's settings under `stages:` have the shape its table entry
names (`SETTINGS_SHAPES`).
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from typing import Any, Literal, Optional

from jobs.contract import PIPELINE_KINDS, Resources

from ..core import bundled
from ..core.errors import UserError, did_you_mean
from .graph import CONDITION_TEXT, stage_graph
from .schema import build, field
from .values import check_directive, check_time
from .yamlfile import (Located, YamlSyntaxError, control_problem, join_key, load_yaml_file, load_yaml_text,
                       looks_secret, resolve_named_file, shown)

RECIPE_DIR = bundled.recipe_dir()
DEFAULT_RECIPE = "minitron-8b-wikitext"
STAGE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
RECIPE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ENTRYPOINT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# `--set` keys: dotted names with [N] indexes; no empty part (`.=5`, `a..b=1`) and no spaces.
OVERRIDE_KEY = re.compile(r"^[^.\[\]\s=]+(?:\.[^.\[\]\s=]+|\[\d+\])*$")
# Upper bounds on every count and size: a few times the largest real model or run, far below
# what would make the planner's loops or the stage scripts misbehave.
MAX_STEPS = 10_000_000
MAX_SEQ = 1 << 20
MAX_GPUS_PER_NODE = 64
Precision = Literal["bf16-mixed", "16-mixed", "32"]
# Hugging Face models that download only with an accepted licence and a token (gated): every meta-llama
# model and Google's Gemma. A fixed list, no network call: others may be gated too (`check --probe` warns).
GATED_MODELS = re.compile(r"^(?:meta-llama/|google/gemma)", re.I)
TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")  # what huggingface_hub reads a token from


def _check_entrypoint(value: str) -> str | None:
    return None if ENTRYPOINT.match(value) else f"{shown(value)} is not a Python module name"


@dataclass
class ModelSpec:
    source: str = field(doc="hf://ORG/NAME, an absolute HF directory, nemo:/abs/ckpt, or random")
    tokenizer: str = field(doc="HF id or directory, or bpe:VOCAB to train one on the data")
    num_layers: int = field(min=1, max=1024)
    hidden_size: int = field(min=1, max=1 << 17)
    ffn_hidden_size: int = field(min=1, max=1 << 19)
    num_attention_heads: int = field(min=1, max=1024)
    num_query_groups: int = field(min=1, max=1024)
    vocab_size: int = field(min=2, max=1 << 22)
    nemo_config: Optional[str] = field(None, doc="NeMo config class for import, e.g. Llama31Config8B")
    rotary_base: float = field(500000.0, min=1, max=1e12)
    tie_embeddings: bool = False


@dataclass
class DataSource:
    hf_dataset: Optional[str] = None
    hf_config: Optional[str] = None
    files: Optional[dict[str, str]] = None
    builtin: Optional[Literal["pydoc-topics"]] = None


@dataclass
class DataSpec:
    source: DataSource
    seq_length: int = field(min=8, max=MAX_SEQ)
    text_key: str = "text"
    split_map: dict[str, str] = field({"train": "train", "validation": "validation", "test": "test"},
                                      doc="trainer role → dataset split")
    workers: int = field(32, min=1, max=512)


@dataclass
class ScalingSpec:
    policy: Literal["fixed", "linear"] = "fixed"
    reference_gpus: int = field(8, min=1, max=1_000_000, doc="GPUs the recipe's batch sizes were tuned for")
    lr_rule: Literal["none", "linear", "sqrt"] = "none"


@dataclass
class StageSettings:
    entrypoint: Optional[str] = field(None, check=_check_entrypoint)
    time: Optional[str] = field(None, check=check_time)
    partition: Optional[str] = field(None, check=check_directive)  # lands in an #SBATCH line
    enabled: Optional[bool] = field(None, doc="default: the kind's (export is off unless enabled)")
    precision: Optional[Precision] = field(None, doc="GPU stages; default: the recipe's precision")


@dataclass
class ConversionStage(StageSettings):
    gpus: int = field(1, min=0, max=1)


@dataclass
class TrainStage(StageSettings):
    steps: Optional[int] = field(30, min=1, max=MAX_STEPS)
    tokens: Optional[float] = field(None, min=1, max=1e15, doc="token budget; sets steps = tokens/(GBS·seq)")
    micro_batch_size: int = field(4, min=1, max=4096)
    global_batch_size: int = field(128, min=1, max=1 << 20)
    seq_length: Optional[int] = field(None, min=8, max=MAX_SEQ)
    lr: float = field(1e-4, min=0, max=1)
    min_lr: float = field(1e-5, min=0, max=1)
    warmup_steps: int = field(2, min=0, max=MAX_STEPS)
    val_check_interval: int = field(10, min=1, max=MAX_STEPS)
    limit_val_batches: int = field(5, min=0, max=100_000)
    log_every_n_steps: int = field(1, min=1, max=MAX_STEPS)
    ckpt_every_n_steps: int = field(10, min=1, max=MAX_STEPS)
    seed: int = field(1234, min=0, max=2**32 - 1)
    weight_decay: float = field(0.1, min=0, max=10)
    adam_beta1: float = field(0.9, min=0, max=1)
    adam_beta2: float = field(0.95, min=0, max=1)
    clip_grad: float = field(1.0, min=0, max=1e6)
    nodes: Optional[int] = field(None, min=1, max=10000, doc="default: every node of the profile")
    gpus_per_node: Optional[int] = field(None, min=1, max=MAX_GPUS_PER_NODE, doc="default: every GPU of a node")
    tp: Optional[int] = field(None, min=1, max=MAX_GPUS_PER_NODE, doc="default: the planner's choice")
    pp: Optional[int] = field(None, min=1, max=1024)
    cp: int = field(1, min=1, max=1024)
    sequence_parallel: Optional[bool] = None
    recompute: Literal["none", "selective", "full"] = "none"


@dataclass
class DistillStage(TrainStage):
    skip_lm_loss: bool = True
    kd_loss_scale: float = field(1.0, min=0, max=1e6)
    logit_layers: list[str] = field(["output_layer", "output_layer"], max_items=2)


@dataclass
class PruneStage(StageSettings):
    micro_batch_size: int = field(4, min=1, max=4096, doc="calibration batch; its global batch equals it")
    num_train_samples: int = field(1024, min=1, max=10_000_000)
    seq_length: Optional[int] = field(None, min=8, max=MAX_SEQ)
    pp: Optional[int] = field(None, min=1, max=1024, doc="default: the GPUs of one node")


# The settings class of each shape a kind's table entry names (jobs.contract.StageKind.settings).
SETTINGS_SHAPES: dict[str, type] = {
    "plain": StageSettings, "conversion": ConversionStage, "training": TrainStage, "distillation": DistillStage,
    "pruning": PruneStage,
}


@dataclass
class PruningSpec:
    drop_layers: Optional[list[int]] = field(None, max_items=1024, doc="1-indexed layers to remove (depth pruning)")
    target_num_layers: Optional[int] = field(None, min=1, max=1024)
    target_ffn_hidden_size: Optional[int] = field(None, min=1, max=1 << 19)
    target_hidden_size: Optional[int] = field(None, min=1, max=1 << 17)
    target_num_attention_heads: Optional[int] = field(None, min=1, max=1024)
    target_num_query_groups: Optional[int] = field(None, min=1, max=1024)

    def targets(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Recipe:
    name: str
    model: ModelSpec
    data: DataSpec
    pruning: dict[str, PruningSpec] = field(max_items=16)
    students: list[str] = field(max_items=16)
    description: str = field("", max_len=4096, multiline=True, doc="free text; the only multi-line value")
    scaling: ScalingSpec = field(ScalingSpec())
    precision: Precision = field("bf16-mixed", doc="every GPU stage's precision, unless its settings say otherwise")
    layout: Literal["planned", "tutorial"] = field(
        "planned", doc="planned: the planner's smallest fitting layout; tutorial: the NeMo 2 tutorial's "
        "(fine-tune and distill TP=8 PP=1 SP, pruning TP=1 PP=8, one node of 8 GPUs)")
    stages: dict[str, Any] = field({})
    after: dict[str, list[str]] = field({}, doc="extra ordering: stage → stages it must wait for")
    source: str = ""

    def settings(self, kind: str) -> Any:
        return self.stages[kind]

    def gated_models(self) -> list[tuple[str, str]]:
        """(key, hub id) of each gated model the stages download: the source (hf://ID) and a tokenizer
        named by hub id (not a directory, not bpe:)."""
        source, tokenizer = self.model.source, self.model.tokenizer
        hub_ids = {"model.source": source.removeprefix("hf://") if source.startswith("hf://") else "",
                   "model.tokenizer": "" if tokenizer.startswith(("/", "bpe:")) else tokenizer}
        return [(key, hub_id) for key, hub_id in hub_ids.items() if GATED_MODELS.match(hub_id)]

    def error(self, key: str, message: str, hint: str | None = None) -> UserError:
        located = getattr(self, "located", None)
        if located is not None:
            return located.error(key, message, hint)
        return UserError(message, file=self.source or None, key=key, hint=hint)


def resolve_recipe_path(name_or_path: str | None) -> str:
    return resolve_named_file(name_or_path or DEFAULT_RECIPE, RECIPE_DIR, "recipe", "--recipe")


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """`a.b[0].c=VALUE` or `a.b.0.c=VALUE`; VALUE is read as YAML (numbers, lists, booleans)."""
    if len(text) > 4096:
        raise UserError(f"an override of {len(text)} characters; at most 4096 are allowed", key="--set")
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise UserError(f"expected KEY=VALUE, got {shown(text)}", key="--set")
    if not OVERRIDE_KEY.match(key) or control_problem(key):
        raise UserError(f"{shown(key)} is not a key path: dotted names with [N] indexes, no empty part "
                        f"(e.g. stages.distill.steps or students[0])", key="--set")
    problem = control_problem(raw, allow_newline=False)
    if problem:  # before YAML would fold a newline into a space
        raise UserError(f"the value {problem}", file=override_label(text), key=key)
    path: list[str | int] = []
    for part in re.split(r"\.|\[(\d+)\]", key):
        if part is None or part == "":
            continue
        path.append(int(part) if part.isdigit() else part)
    try:  # through the same bounds as a file: a value may hold YAML aliases
        value = load_yaml_text(raw, override_label(text)).data if raw.strip() else ""
    except YamlSyntaxError:
        value = raw
    except UserError as exc:  # its key is relative to the value: name the override's key
        inner = exc.key or ""
        raise UserError(exc.message, file=override_label(text), hint=exc.hint,
                        key=key + inner if inner.startswith("[") or not inner else f"{key}.{inner}") from None
    return path, value


def override_label(text: str) -> str:
    """How a message names an override: `--set KEY=VALUE`, the value cut short, or hidden when it
    looks like a secret (a message must not carry one into a terminal or CI log)."""
    key, _, raw = text.partition("=")
    if looks_secret(raw):
        return f"--set {key}=<value not shown>"
    return f"--set {text}" if len(text) <= 80 else f"--set {text[:79]}…"


def apply_overrides(src: Located, overrides: list[str]) -> None:
    for text in overrides:
        path, value = parse_override(text)
        node = src.data
        key = ""
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            if isinstance(node, list):
                if not isinstance(part, int) or not 0 <= part < len(node):
                    raise UserError(f"{shown(join_key(key, part))} is not an index of a list of {len(node)}",
                                    key=override_label(text))
            elif isinstance(node, dict):
                if isinstance(part, int):
                    part = str(part)
            else:
                raise UserError(f"{shown(key)} is {shown(node)}, not a mapping or list", key=override_label(text))
            key = join_key(key, part)
            if last:
                node[part] = value
            else:
                if isinstance(node, dict) and node.get(part) is None:
                    node[part] = {}
                node = node[part]
        src.origins[key] = override_label(text)


def load_recipe(name_or_path: str | None = None, overrides: list[str] | None = None) -> Recipe:
    path = resolve_recipe_path(name_or_path)
    src = load_yaml_file(path)
    src.data = copy.deepcopy(src.data)
    apply_overrides(src, overrides or [])
    recipe = build(Recipe, src.data, src)
    recipe.source = os.path.abspath(path)
    recipe.stages = _build_stages(src.data.get("stages") or {}, src)
    recipe.located = src  # not a field: lets the planner point its errors at the right file and line
    validate_recipe(recipe, src)
    return recipe


def _build_stages(raw: Any, src: Located) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise src.error("stages", f"expected a mapping of stage kinds, got {shown(raw)}")
    known = [k.name for k in PIPELINE_KINDS]
    for name in raw:
        if name not in known:
            raise src.error(f"stages.{name}", f"unknown stage kind (known: {', '.join(known)})",
                            did_you_mean(name, known))
    stages = {}
    for kind in PIPELINE_KINDS:
        settings = build(SETTINGS_SHAPES[kind.settings], raw.get(kind.name), src, f"stages.{kind.name}")
        if settings.enabled is None:
            settings.enabled = kind.enabled_by_default
        stages[kind.name] = settings
    return stages


def validate_recipe(recipe: Recipe, src: Located) -> None:
    m = recipe.model
    if not RECIPE_NAME.match(recipe.name):
        raise src.error("name", f"{shown(recipe.name)}: use letters, digits, '.', '_' and '-' (it names the run)")
    if m.num_attention_heads % m.num_query_groups:
        raise src.error("model.num_query_groups", f"num_attention_heads={m.num_attention_heads} is not "
                        f"divisible by num_query_groups={m.num_query_groups}")
    if m.hidden_size % m.num_attention_heads:
        raise src.error("model.hidden_size", f"hidden_size={m.hidden_size} is not divisible by "
                        f"num_attention_heads={m.num_attention_heads}")
    if not (m.source in ("random",) or m.source.startswith(("hf://", "nemo:/", "/"))):
        raise src.error("model.source", f"{shown(m.source)}: expected hf://ORG/NAME, an absolute HF directory, "
                        f"nemo:/abs/checkpoint or random")
    if m.tokenizer.startswith("bpe:"):
        try:
            vocab = int(m.tokenizer[4:])
        except ValueError:
            vocab = 0
        if vocab < 64 or vocab > m.vocab_size:
            raise src.error("model.tokenizer", f"{shown(m.tokenizer)}: bpe:VOCAB needs 64 ≤ VOCAB ≤ "
                            f"model.vocab_size={m.vocab_size}")
    _validate_data(recipe, src)
    _validate_stages(recipe, src)
    _validate_pruning(recipe, src)
    stage_graph(recipe, src)


def _validate_data(recipe: Recipe, src: Located) -> None:
    source = recipe.data.source
    given = [k for k in ("hf_dataset", "files", "builtin") if getattr(source, k)]
    if len(given) != 1:
        raise src.error("data.source", "give exactly one of hf_dataset, files, builtin"
                        + (f" (got {', '.join(given)})" if given else ""))
    roles = {"train", "validation", "test"}
    for role in recipe.data.split_map:
        if role not in roles:
            raise src.error(f"data.split_map.{role}", f"unknown role (roles: {', '.join(sorted(roles))})",
                            did_you_mean(role, roles))
    if "train" not in recipe.data.split_map or "validation" not in recipe.data.split_map:
        raise src.error("data.split_map", "must map at least train and validation")
    if source.files:
        for split, path in source.files.items():
            if not os.path.isabs(path):
                raise src.error(f"data.source.files.{split}", f"must be an absolute path, got {shown(path)}")
        for role, split in recipe.data.split_map.items():
            if split not in source.files:
                raise src.error(f"data.split_map.{role}", f"names split {shown(split)}, which data.source.files "
                                f"does not have", did_you_mean(split, source.files))


def _validate_stages(recipe: Recipe, src: Located) -> None:
    for kind in PIPELINE_KINDS:
        st, key = recipe.stages[kind.name], f"stages.{kind.name}"
        if not st.enabled and not kind.optional:
            skipped = f"; it is skipped by itself when {CONDITION_TEXT[kind.skip_if]}" if kind.skip_if else ""
            raise src.error(f"{key}.enabled", f"the {kind.name} stage cannot be disabled{skipped}")
        if st.precision is not None and kind.resources == Resources.CPU:
            raise src.error(f"{key}.precision", f"the {kind.name} stage runs on CPUs: it has no precision to set")
        if isinstance(st, TrainStage):
            _validate_training(recipe, st, key, src)
        if isinstance(st, DistillStage) and st.logit_layers and len(st.logit_layers) != 2:
            raise src.error(f"{key}.logit_layers", "expected [student_layer, teacher_layer]")


def _validate_training(recipe: Recipe, st: TrainStage, key: str, src: Located) -> None:
    if st.min_lr > st.lr:
        raise src.error(f"{key}.min_lr", f"min_lr={st.min_lr} exceeds lr={st.lr}")
    if st.steps is None and st.tokens is None:
        raise src.error(f"{key}.steps", "give steps or tokens")
    if st.global_batch_size % st.micro_batch_size:
        raise src.error(f"{key}.global_batch_size", f"global_batch_size={st.global_batch_size} is not "
                        f"divisible by micro_batch_size={st.micro_batch_size}")
    seq = st.seq_length or recipe.data.seq_length
    if seq > recipe.data.seq_length:
        raise src.error(f"{key}.seq_length", f"{seq} exceeds data.seq_length={recipe.data.seq_length}")
    if st.tokens is not None and st.tokens / (st.global_batch_size * seq) > MAX_STEPS:
        raise src.error(f"{key}.tokens", f"{st.tokens:g} tokens at global_batch_size={st.global_batch_size} and "
                        f"seq_length={seq} are more than {MAX_STEPS} steps")


def _validate_pruning(recipe: Recipe, src: Located) -> None:
    m = recipe.model
    if not recipe.pruning:
        raise src.error("pruning", "name at least one pruning target")
    for name, spec in recipe.pruning.items():
        key = f"pruning.{name}"
        if not STAGE_NAME.match(f"prune_{name}") or len(name) > 30:
            raise src.error(key, f"{shown(name)}: pruning names are lower-case letters, digits and '_'")
        targets = spec.targets()
        if not targets:
            raise src.error(key, "give drop_layers or at least one target_* size")
        if spec.drop_layers is not None:
            if len(targets) > 1:
                raise src.error(f"{key}.drop_layers", "drop_layers cannot be combined with target_* sizes")
            layers = spec.drop_layers
            bad = [layer for layer in layers if not 1 <= layer <= m.num_layers]
            if bad:
                raise src.error(f"{key}.drop_layers", f"layers are 1-indexed and the model has "
                                f"{m.num_layers}: {shown(bad)} out of range")
            if len(set(layers)) != len(layers):
                raise src.error(f"{key}.drop_layers", "lists a layer twice")
            if len(layers) >= m.num_layers:
                raise src.error(f"{key}.drop_layers", "would drop every layer")
        limits = {"target_num_layers": m.num_layers, "target_ffn_hidden_size": m.ffn_hidden_size,
                  "target_hidden_size": m.hidden_size, "target_num_attention_heads": m.num_attention_heads,
                  "target_num_query_groups": m.num_query_groups}
        for target, limit in limits.items():
            value = getattr(spec, target)
            if value is not None and value > limit:
                raise src.error(f"{key}.{target}", f"{value} is larger than the teacher's {limit}")
        if (spec.target_num_attention_heads is None) != (spec.target_num_query_groups is None):
            raise src.error(f"{key}.target_num_attention_heads",
                            "give target_num_attention_heads and target_num_query_groups together")
        heads, groups = spec.target_num_attention_heads, spec.target_num_query_groups
        if heads and groups and heads % groups:
            raise src.error(f"{key}.target_num_query_groups",
                            f"target heads {heads} not divisible by target query groups {groups}")
    if not recipe.students:
        raise src.error("students", "name at least one pruned model to distill")
    seen: set[str] = set()
    for index, student in enumerate(recipe.students):
        if student not in recipe.pruning:
            raise src.error(f"students[{index}]", f"{shown(student)} names no pruning stage "
                            f"(pruning defines: {', '.join(recipe.pruning)})",
                            did_you_mean(student, recipe.pruning))
        if student in seen:
            raise src.error(f"students[{index}]", f"duplicate stage name: distill_{student} is listed twice")
        seen.add(student)
