"""`minitron profiles` and `minitron recipes`: what ships with the launcher, a line each, or one file in full.

Each bundled file is read by the same loader `plan` uses, so the list shows what a run would get; a
file that does not load is listed with its error, and never hides the others.
"""

from __future__ import annotations

import os
from typing import Any

from jobs.contract import read_bounded

from ..config.graph import stage_graph
from ..config.profile import PROFILE_DIR, load_profile
from ..config.recipe import RECIPE_DIR, TrainStage, load_recipe
from ..config.yamlfile import MAX_FILE_BYTES, load_yaml_file, resolve_named_file
from ..core.errors import ExitCode, UserError
from .views import print_json, profiles_table, recipes_table, yaml_text


def _bundled(directory: str) -> list[tuple[str, str]]:
    return [(f[:-5], os.path.join(directory, f)) for f in sorted(os.listdir(directory)) if f.endswith(".yaml")]


def profile_rows() -> list[dict[str, Any]]:
    rows = []
    for name, path in _bundled(PROFILE_DIR):
        row: dict[str, Any] = {"name": name, "path": path}
        try:
            p = load_profile(path)
            row.update(executor=p.executor, nodes=p.nodes, gpus_per_node=p.gpus_per_node,
                       gpu_model=p.gpu.model if p.gpu and p.gpus_per_node else None,
                       partition=p.partition, container=p.image)
        except UserError as exc:
            row["error"] = str(exc)
        rows.append(row)
    return rows


def recipe_rows() -> list[dict[str, Any]]:
    rows = []
    for name, path in _bundled(RECIPE_DIR):
        row: dict[str, Any] = {"name": name, "path": path}
        try:
            recipe = load_recipe(path)
            stages = stage_graph(recipe)
            training = [(s.name, recipe.settings(s.kind)) for s in stages]
            row.update(description=recipe.description.strip(), stages=[s.name for s in stages],
                       training=[{"stage": stage, "steps": None if st.tokens else st.steps, "tokens": st.tokens}
                                 for stage, st in training if isinstance(st, TrainStage)])
        except UserError as exc:
            row["error"] = str(exc)
        rows.append(row)
    return rows


def _show(directory: str, what: str, name: str, as_json: bool) -> int:
    """The file verbatim (comments are its documentation), or as JSON its text and its data."""
    path = resolve_named_file(name, directory, what, "NAME")
    try:
        content = read_bounded(path, MAX_FILE_BYTES)
    except OSError as exc:
        raise UserError(f"cannot read file: {exc.strerror or exc}", file=path) from None
    if as_json:
        print_json({"name": name, "path": os.path.abspath(path), "text": content,
                    "data": load_yaml_file(path).data})
    else:
        yaml_text(content)
    return ExitCode.OK


CATALOGS = {"profiles": (PROFILE_DIR, "profile", profile_rows, profiles_table),
            "recipes": (RECIPE_DIR, "recipe", recipe_rows, recipes_table)}


def run_catalog(command: str, args: Any) -> int:
    """`minitron profiles|recipes [--json]`, or `... show NAME [--json]`."""
    directory, what, rows_of, table = CATALOGS[command]
    if args.action == "show":
        return _show(directory, what, args.name, args.json)
    rows = rows_of()
    if args.json:
        print_json(rows)
    else:
        table(rows)
    return ExitCode.OK
