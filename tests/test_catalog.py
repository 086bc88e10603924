"""`minitron profiles` and `minitron recipes` through the real CLI: the bundled files listed, shown, as JSON."""

import json
import os

import yaml

from launcher.core import bundled
from tests.conftest import run_cli

PROFILES = sorted(f[:-5] for f in os.listdir(bundled.profile_dir()) if f.endswith(".yaml"))
RECIPES = sorted(f[:-5] for f in os.listdir(bundled.recipe_dir()) if f.endswith(".yaml"))


def _file(directory: str, name: str) -> str:
    with open(os.path.join(directory, f"{name}.yaml"), encoding="utf-8") as handle:
        return handle.read()


def test_help_lists_the_new_commands():
    proc = run_cli("--help")
    for command in ("profiles", "recipes", "init"):
        assert command in proc.stdout


def test_profiles_json_summarises_every_bundled_profile():
    proc = run_cli("profiles", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert sorted(rows) == PROFILES
    assert not any(row.get("error") for row in rows.values())
    assert {k: rows["h100-4x8"][k] for k in ("executor", "nodes", "gpus_per_node", "gpu_model", "partition",
                                            "container")} == {
        "executor": "slurm", "nodes": 4, "gpus_per_node": 8, "gpu_model": "H100-80GB", "partition": "batch",
        "container": "nvcr.io#nvidia/nemo:26.02"}
    assert rows["device-h200"]["container"] is None and rows["device-h200"]["executor"] == "local"


def test_profiles_table_has_a_line_per_profile():
    proc = run_cli("profiles")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for name in PROFILES:
        assert any(name in line for line in lines), name
    assert any("a100-40g-2x8" in line and "2×8" in line and "A100-40GB" in line for line in lines)


def test_profiles_show_prints_the_file_as_written():
    proc = run_cli("profiles", "show", "h100-1x8")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == _file(bundled.profile_dir(), "h100-1x8")


def test_profiles_show_json_has_its_text_and_data():
    for argv in (["profiles", "show", "a100-40g-2x8", "--json"], ["profiles", "--json", "show", "a100-40g-2x8"]):
        proc = run_cli(*argv)
        assert proc.returncode == 0, proc.stderr
        shown = json.loads(proc.stdout)
        text = _file(bundled.profile_dir(), "a100-40g-2x8")
        assert shown["text"] == text and shown["data"] == yaml.safe_load(text) and shown["name"] == "a100-40g-2x8"


def test_show_an_unknown_name_is_one_line_exit_2():
    proc = run_cli("profiles", "show", "h100-1x9")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no profile named 'h100-1x9'" in proc.stderr
    assert "did you mean 'h100-1x8'" in proc.stderr and proc.stdout == ""
    proc = run_cli("recipes", "show", "tiny2")
    assert proc.returncode == 2 and "no recipe named 'tiny2'" in proc.stderr


def test_show_escapes_what_a_file_holds(tmp_path):
    """A file's text reaches the terminal as text: no control bytes, rich markup printed as written."""
    path = tmp_path / "odd.yaml"
    path.write_text("# \x1b]0;retitled\x07 [bold]kept[/bold]\nexecutor: slurm\n")
    proc = run_cli("profiles", "show", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
    assert proc.stdout == "# \\x1b]0;retitled\\x07 [bold]kept[/bold]\nexecutor: slurm\n"


def test_recipes_json_lists_stages_and_steps():
    proc = run_cli("recipes", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert sorted(rows) == RECIPES
    tiny = rows["tiny"]
    assert tiny["stages"] == ["data", "import", "finetune", "prune_depth", "prune_width", "distill_depth",
                              "distill_width", "report"]
    assert [(t["stage"], t["steps"]) for t in tiny["training"]] == [("finetune", 300), ("distill_depth", 90),
                                                                    ("distill_width", 90)]
    assert tiny["description"].startswith("4-layer Llama")


def test_recipes_table_and_show():
    proc = run_cli("recipes")
    assert proc.returncode == 0, proc.stderr
    assert any("tiny" in line and "finetune 300" in line for line in proc.stdout.splitlines())
    proc = run_cli("recipes", "show", "tiny")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == _file(bundled.recipe_dir(), "tiny")
    proc = run_cli("recipes", "show", "minitron-8b-wikitext", "--json")
    assert json.loads(proc.stdout)["data"]["name"] == "minitron-8b-wikitext"
