"""The model shapes a plan sizes (the teacher, each pruned student) and the small helpers the planner's
messages share."""

from __future__ import annotations

from typing import Any, Optional

from ..config.recipe import Recipe
from . import memory as mm


def teacher_shape(recipe: Recipe) -> mm.Shape:
    m = recipe.model
    return mm.Shape(m.num_layers, m.hidden_size, m.ffn_hidden_size, m.num_attention_heads,
                    m.num_query_groups, m.vocab_size, m.tie_embeddings)


def student_shape(recipe: Recipe, pruning: str) -> mm.Shape:
    spec = recipe.pruning[pruning]
    t = teacher_shape(recipe)
    layers = t.num_layers - len(spec.drop_layers) if spec.drop_layers else (spec.target_num_layers or t.num_layers)
    return mm.Shape(layers, spec.target_hidden_size or t.hidden_size,
                    spec.target_ffn_hidden_size or t.ffn_hidden_size,
                    spec.target_num_attention_heads or t.num_attention_heads,
                    spec.target_num_query_groups or t.num_query_groups, t.vocab_size, t.tie_embeddings,
                    head_dim=t.kv_channels)


def stage_shape(recipe: Recipe, student: bool, variant: Optional[str]) -> mm.Shape:
    """The model a stage runs: its variant's pruned student, or the teacher."""
    return student_shape(recipe, variant) if student else teacher_shape(recipe)


def divisors(n: int) -> list[int]:
    """Ascending divisors in O(√n) steps: the planner bounds n, but a loop to n would still be slow."""
    small, large = [], []
    d = 1
    while d * d <= n:
        if n % d == 0:
            small.append(d)
            if d * d != n:
                large.append(n // d)
        d += 1
    return small + large[::-1]


def gib(x: float) -> float:
    return round(x / mm.GIB, 1)


def show(value: Any) -> str:
    try:
        return f"{value:g}"
    except (OverflowError, ValueError, TypeError):
        return "a number too large to print"


def ranges(values: list[int]) -> str:
    """`2-3,7` for [2, 3, 7]; empty for []."""
    out: list[list[int]] = []
    for value in sorted(values):
        if out and out[-1][1] == value - 1:
            out[-1][1] = value
        else:
            out.append([value, value])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in out)
