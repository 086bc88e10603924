"""`minitron plan --graph`: the stage graph, as a tree in the terminal or a picture in a file.

The terminal gets a rich Tree (rich is a dependency already): each stage under what it depends on,
a stage with several dependencies shown in full under its last one and named under the others.
A file is written by a library imported only here, from the optional `graph` extra: DOT text through
graphviz's Python package (no `dot` binary needed: it only writes the source), SVG or PNG through
matplotlib (which draws without Graphviz's binary, absent on many login nodes).
"""

from __future__ import annotations

import os
from typing import Any

from ..core.errors import UserError
from .views import console, hours_text, text

FORMATS = (".svg", ".png", ".dot")
EXTRA = "pip install 'minitron-launcher[graph]'"


def _resources(stage: Any) -> str:
    return f"{stage.nodes}×{stage.gpus_per_node} GPUs" if stage.gpus_per_node else "cpu"


def _box(stage: Any, newline: str = "\n") -> str:
    return f"{stage.name}{newline}{_resources(stage)}, est {hours_text(stage.est_hours)}"


def graph_tree(plan: Any, profile: Any) -> None:
    """The plan's stages as a tree: roots at the top, each stage under its dependencies."""
    from rich.tree import Tree

    children: dict[str, list[Any]] = {s.name: [] for s in plan.stages}
    for s in plan.stages:
        for dep in s.depends_on:
            children[dep].append(s)
    data = plan.to_json()
    tree = Tree(f"[bold]{text(plan.recipe)}[/] on {text(os.path.basename(profile.source))} "
                f"({text(profile.hardware)}): critical path ≈ "
                f"{hours_text(data['est_hours'])}, {data['est_gpu_hours']:.1f} GPU-hours")

    def add(branch: Any, stage: Any) -> None:
        label = f"[bold]{text(stage.name)}[/]  {text(_resources(stage))}  est {hours_text(stage.est_hours)}"
        if len(stage.depends_on) > 1:
            label += f"  [dim]after {text(', '.join(stage.depends_on))}[/]"
        node = branch.add(label)
        for child in children[stage.name]:
            if child.depends_on[-1] == stage.name:
                add(node, child)
            else:  # shown in full under its last dependency
                node.add(f"[dim]→ {text(child.name)} (under {text(child.depends_on[-1])})[/]")

    for stage in plan.stages:
        if not stage.depends_on:
            add(tree, stage)
    console().print(tree)


def write_graph(plan: Any, path: str) -> None:
    """The stage graph in `path`, its format by its suffix. UserError (exit 2) for another suffix, a missing
    library (naming the extra to install) or a file that cannot be written."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in FORMATS:
        raise UserError(f"{path}: the graph is written as {', '.join(FORMATS)} (by the file's suffix)", key="--graph")
    module = "graphviz" if suffix == ".dot" else "matplotlib"
    try:
        if suffix == ".dot":
            data = _dot(plan).encode()
        else:
            data = _picture(plan, suffix[1:])
    except ImportError:
        raise UserError(f"writing a {suffix} file needs the Python package {module}: {EXTRA}",
                        key="--graph") from None
    try:
        with open(path, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}", key="--graph") from None


def _dot(plan: Any) -> str:
    import graphviz

    dot = graphviz.Digraph(plan.recipe, graph_attr={"rankdir": "TB"}, node_attr={"shape": "box", "style": "rounded"})
    for s in plan.stages:
        dot.node(s.name, _box(s, "\\n"))  # DOT's line break
        for dep in s.depends_on:
            dot.edge(dep, s.name)
    return dot.source


def _layers(plan: Any) -> list[list[Any]]:
    """Stages by depth (the longest chain of dependencies above each), in plan order within a depth."""
    depth: dict[str, int] = {}
    for s in plan.stages:  # the plan lists dependencies first
        depth[s.name] = 1 + max((depth[d] for d in s.depends_on), default=-1)
    return [[s for s in plan.stages if depth[s.name] == level] for level in range(max(depth.values(), default=-1) + 1)]


def _picture(plan: Any, fmt: str) -> bytes:
    import io

    from matplotlib import rc_context
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    layers = _layers(plan)
    width = max((len(layer) for layer in layers), default=1)
    fig = Figure(figsize=(max(4.0, 2.8 * width), 1.1 * len(layers) + 0.6))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(-0.5, len(layers) - 0.5)
    ax.axis("off")
    boxes = {}
    for level, layer in enumerate(layers):
        for i, s in enumerate(layer):
            x = width * (i + 0.5) / len(layer)
            color = "#d7ecd9" if s.gpus_per_node else "#e4e4e4"
            boxes[s.name] = ax.text(x, len(layers) - 1 - level, _box(s), ha="center", va="center", fontsize=9,
                                    bbox={"boxstyle": "round,pad=0.4", "facecolor": color, "edgecolor": "#555555"})
    for s in plan.stages:
        for dep in s.depends_on:
            ax.annotate("", xy=(0.5, 1), xycoords=boxes[s.name], xytext=(0.5, 0), textcoords=boxes[dep],
                        arrowprops={"arrowstyle": "-|>", "color": "#555555"})
    out = io.BytesIO()
    with rc_context({"svg.fonttype": "none"}):  # SVG text stays text: searchable, and smaller
        fig.savefig(out, format=fmt, dpi=120)
    return out.getvalue()
