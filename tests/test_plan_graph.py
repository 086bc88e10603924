"""`minitron plan --graph`: the tree in the terminal on every bundled recipe, and the files (DOT, SVG, PNG),
with a one-line exit 2 where the library that writes one is missing."""

from __future__ import annotations

import json
import os
import re
import sys
import xml.etree.ElementTree as ET

import pytest

from launcher.app.cli import main
from launcher.app.views import hours_text
from launcher.core import bundled
from tests.conftest import run_cli

RECIPES = sorted(name[:-5] for name in os.listdir(bundled.recipe_dir()) if name.endswith(".yaml"))
BRANCH = re.compile(r"^((?:[│ ]   )*)(?:[├└]── )?(.*)$")


def _plan(recipe: str) -> dict:
    proc = run_cli("plan", "--json", "--recipe", recipe)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _tree(output: str) -> list[tuple[str, str]]:
    """(the line's parent line, the line) for each line under the title: the tree's shape, read back from its
    guides (4 characters a level)."""
    lines = output.splitlines()
    parents, shape = {-1: lines[0]}, []
    for line in lines[1:]:
        guides, label = BRANCH.match(line).groups()
        depth = len(guides) // 4
        parents[depth] = label
        shape.append((parents[depth - 1], label))
    return shape


@pytest.mark.parametrize("recipe", RECIPES)
def test_the_tree_puts_each_stage_under_its_dependencies_with_resources_and_estimate(recipe, minitron_home):
    plan = _plan(recipe)
    proc = run_cli("plan", "--graph", "--recipe", recipe)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith(f"{plan['recipe']} on h100-1x8.yaml")
    shape = _tree(proc.stdout)
    full = {label.split()[0]: (parent, label) for parent, label in shape if not label.startswith("→")}
    assert sorted(full) == sorted(s["name"] for s in plan["stages"])  # each stage once in full
    for s in plan["stages"]:
        parent, label = full[s["name"]]
        resources = f"{s['nodes']}×{s['gpus_per_node']} GPUs" if s["gpus_per_node"] else "cpu"
        assert label.startswith(f"{s['name']}  {resources}  est {hours_text(s['est_hours'])}"), label
        assert parent.split()[0] == (s["depends_on"][-1] if s["depends_on"] else plan["recipe"]), (s["name"], parent)
        if len(s["depends_on"]) > 1:
            assert label.endswith(f"after {', '.join(s['depends_on'])}"), label
        for dep in s["depends_on"][:-1]:  # named under its other dependencies
            assert (full[dep][1], f"→ {s['name']} (under {s['depends_on'][-1]})") in shape, (s["name"], dep)


def test_a_merge_is_shown_once_in_full_and_named_under_its_other_dependency(minitron_home):
    proc = run_cli("plan", "--graph", "--recipe", "tiny")
    assert proc.stdout.count("report  ") == 1 and "→ report (under distill_width)" in proc.stdout


def test_dot_file_has_every_stage_and_dependency(tmp_path, minitron_home):
    path = tmp_path / "tiny.dot"
    proc = run_cli("plan", "--graph", str(path), "--recipe", "tiny")
    assert proc.returncode == 0, proc.stderr
    assert f"written to {path}" in proc.stdout
    dot = path.read_text()
    assert dot.startswith("digraph tiny {")
    plan = _plan("tiny")
    edges = set(re.findall(r"^\t(\w+) -> (\w+)$", dot, re.M))
    assert edges == {(d, s["name"]) for s in plan["stages"] for d in s["depends_on"]}
    assert '\tfinetune [label="finetune\\n1×8 GPUs, est ' in dot


def test_svg_and_png_files_draw_every_stage(tmp_path, minitron_home):
    names = [s["name"] for s in _plan("minitron-8b-wikitext")["stages"]]
    svg, png = tmp_path / "graph.svg", tmp_path / "graph.PNG"
    for path in (svg, png):
        proc = run_cli("plan", "--graph", str(path))
        assert proc.returncode == 0, proc.stderr
    texts = [t.text for t in ET.parse(svg).iter("{http://www.w3.org/2000/svg}text")]
    assert sorted(t for t in texts if " est " not in t) == sorted(names)  # one box per stage: its name ...
    assert len([t for t in texts if " est " in t]) == len(names)          # ... over its GPUs and estimate
    import matplotlib.image

    pixels = matplotlib.image.imread(str(png), format="png")
    assert pixels.shape[0] > 300 and pixels.shape[1] > 300 and pixels.min() < pixels.max()


@pytest.mark.parametrize("suffix,module", [(".svg", "matplotlib"), (".png", "matplotlib"), (".dot", "graphviz")])
def test_a_missing_library_is_one_line_naming_the_extra(suffix, module, tmp_path, minitron_home, monkeypatch,
                                                        capsys):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails as if it were not installed
    path = tmp_path / f"graph{suffix}"
    assert main(["plan", "--graph", str(path), "--recipe", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"needs the Python package {module}" in err
    assert "pip install 'minitron-launcher[graph]'" in err
    assert not path.exists()


@pytest.mark.parametrize("target", ["graph.txt", "no-such-dir/graph.svg"])
def test_a_file_it_cannot_write_is_exit_2(target, tmp_path, minitron_home):
    proc = run_cli("plan", "--graph", str(tmp_path / target), "--recipe", "tiny")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("minitron: error: --graph: ")
