"""The stage graph of a recipe, derived from the stage-kind table (jobs/contract/kinds.py), never written.

Each pipeline kind gives one stage, or one per pruning entry or student; a kind the recipe turns off,
or whose outputs the recipe itself provides (`skip_if`), gives none. A stage depends on the stages
whose outputs it reads (its kind's `inputs`), reduced to the edges nothing else implies, plus the
recipe's `after` edges. The same resolution gives each stage config its input paths
(launcher/rendering/stageconfig.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from jobs.contract import BY_NAME, PIPELINE_KINDS, VARIANT, Input, Output, Per, StageKind, stage_name

from ..core.errors import UserError, did_you_mean
from .yamlfile import Located, shown

# Recipe facts the kind table's conditions name (`Output.when`, `StageKind.skip_if`).
CONDITIONS: dict[str, Callable[[Any], bool]] = {
    "trained_tokenizer": lambda recipe: recipe.model.tokenizer.startswith("bpe:"),
    "checkpoint_given": lambda recipe: recipe.model.source.startswith("nemo:"),
}
CONDITION_TEXT = {
    "trained_tokenizer": "model.tokenizer is bpe:VOCAB (trained on the data)",
    "checkpoint_given": "model.source is a NeMo checkpoint (nemo:/path)",
}
# What the recipe provides in place of a skipped stage's outputs.
PROVIDED: dict[str, Callable[[Any], dict[str, str]]] = {
    "checkpoint_given": lambda recipe: {"model": recipe.model.source[len("nemo:"):]},
}


@dataclass
class StageNode:
    name: str
    kind: str
    depends_on: list[str]
    pruning: Optional[str] = None  # the variant: the pruning entry (prune_*) or student (distill_*)

    @property
    def stage_kind(self) -> StageKind:
        return BY_NAME[self.kind]


@dataclass(frozen=True)
class Source:
    """Where one input of a stage comes from: a stage of the graph, or a path the recipe gives."""

    name: str
    output: Output
    stage: Optional[str] = None
    path: Optional[str] = None
    variant: Optional[str] = None  # the producing stage's variant (its pruning entry or student)


def holds(condition: Optional[str], recipe: Any) -> bool:
    return condition is None or CONDITIONS[condition](recipe)


def variants(recipe: Any, per: Per) -> list[Optional[str]]:
    if per == Per.PRUNING:
        return list(recipe.pruning)
    if per == Per.STUDENT:
        return list(recipe.students)
    return [None]


def included(kind: StageKind, recipe: Any) -> bool:
    """Whether the recipe runs stages of this kind."""
    if kind.optional and not recipe.settings(kind.name).enabled:
        return False
    return not (kind.skip_if and holds(kind.skip_if, recipe))


def sources(recipe: Any, kind: StageKind, variant: Optional[str]) -> list[Source]:
    """The inputs of the stage of `kind` and `variant`, each resolved to its producing stage or to the path
    the recipe provides; an optional input whose output the recipe does not make is left out."""
    found = []
    for spec in kind.inputs:
        producer = BY_NAME[spec.producer]
        output = producer.output(spec.output)
        if not holds(output.when, recipe) or (producer.optional and not included(producer, recipe)):
            if not spec.optional:
                raise ValueError(f"kind {kind.name}: input {spec.name} has no producer for this recipe")
            continue
        for name, producer_variant in _instances(recipe, spec, producer, variant):
            if producer.skip_if and holds(producer.skip_if, recipe):
                found.append(Source(name, output, path=PROVIDED[producer.skip_if](recipe)[output.name]))
            else:
                found.append(Source(name, output, stage=stage_name(producer, producer_variant),
                                    variant=producer_variant))
    return found


def _instances(recipe: Any, spec: Input, producer: StageKind, variant: Optional[str]):
    if spec.each is not None:
        return [(spec.name.replace(VARIANT, v), v) for v in variants(recipe, spec.each)]
    return [(spec.name, variant if producer.per != Per.ONE else None)]


def _reachable(start: str, deps: dict[str, list[str]]) -> set[str]:
    seen, todo = set(), list(deps[start])
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(deps[name])
    return seen


def stage_graph(recipe: Any, src: Located | None = None) -> list[StageNode]:
    """The stages in a dependency-respecting order. Raises on unknown `after` names and cycles."""
    nodes: list[StageNode] = []
    direct: dict[str, list[str]] = {}
    for kind in PIPELINE_KINDS:
        if not included(kind, recipe):
            continue
        for variant in variants(recipe, kind.per):
            name = stage_name(kind, variant)
            direct[name] = list(dict.fromkeys(s.stage for s in sources(recipe, kind, variant) if s.stage))
            nodes.append(StageNode(name, kind.name, [], pruning=variant))
    position = {n.name: i for i, n in enumerate(nodes)}
    for node in nodes:  # only the edges no other path implies, in stage order
        implied = set().union(*(_reachable(d, direct) for d in direct[node.name])) if direct[node.name] else set()
        node.depends_on = sorted((d for d in direct[node.name] if d not in implied), key=position.__getitem__)
    by_name = {n.name: n for n in nodes}
    for stage, waits in recipe.after.items():
        key = f"after.{stage}"
        if stage not in by_name:
            raise _graph_error(src, key, f"no stage named {shown(stage)}", did_you_mean(stage, by_name))
        for other in waits:
            if other not in by_name:
                raise _graph_error(src, key, f"no stage named {shown(other)}", did_you_mean(other, by_name))
            if other not in by_name[stage].depends_on:
                by_name[stage].depends_on.append(other)
    return _toposort(nodes, src)


def _graph_error(src: Located | None, key: str, message: str, hint: str | None = None) -> UserError:
    return src.error(key, message, hint) if src else UserError(message, key=key, hint=hint)


def _toposort(nodes: list[StageNode], src: Located | None) -> list[StageNode]:
    by_name = {n.name: n for n in nodes}
    order: list[StageNode] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = trail[trail.index(name):] + [name]
            raise _graph_error(src, f"after.{cycle[0]}", "stage dependencies form a cycle: "
                               + " → ".join(cycle))
        state[name] = 1
        for dep in by_name[name].depends_on:
            visit(dep, trail + [name])
        state[name] = 2
        order.append(by_name[name])

    for node in nodes:
        visit(node.name, [])
    return order
