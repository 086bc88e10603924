"""Regenerate the golden stage scripts (tests/golden/<profile>/<stage>.sh) from the bundled profiles and
recipes, then show what changed for review:

    python -m tools.goldens            # rewrite the goldens, print `git diff --stat` of tests/golden
    git diff tests/golden              # read every change before committing it

tests/test_render.py only compares the rendered scripts with these files; it never writes them, so a
change to a template or the planner shows up as a failing test until someone regenerates and reviews.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from launcher.backends import executor_for
from launcher.config.profile import load_profile
from launcher.config.recipe import load_recipe
from launcher.planning.planner import make_plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(REPO, "tests", "golden")
RUN_ID = "minitron-8b-wikitext-20260101-000000-abcd"
CASES = [("h100-1x8", None), ("h100-4x8", None), ("a100-40g-2x8", None), ("local", "tiny")]
# What the goldens are rendered under: a fixed home and user (profiles expand $HOME and $USER in job_dir).
ENVIRONMENT = {"HOME": "/home/user", "USER": "user"}


def render_case(profile_name: str, recipe_name: str | None) -> dict[str, str]:
    """Every stage's script of the recipe planned on the profile, by stage name (set ENVIRONMENT first)."""
    profile = load_profile(profile_name)
    plan = make_plan(profile, load_recipe(recipe_name))
    run_dir = os.path.join(profile.job_dir, "runs", RUN_ID)
    executor = executor_for(profile.executor)
    return {s.name: executor.render_script(RUN_ID, run_dir, profile, s, plan.stages) for s in plan.stages}


def main() -> int:
    os.environ.update(ENVIRONMENT)
    os.environ.pop("MINITRON_HOME", None)
    for profile_name, recipe_name in CASES:
        folder = os.path.join(GOLDEN, profile_name)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        for name, text in render_case(profile_name, recipe_name).items():
            with open(os.path.join(folder, f"{name}.sh"), "w", encoding="utf-8") as handle:
                handle.write(text)
    return subprocess.run(["git", "diff", "--stat", "--", GOLDEN], cwd=REPO).returncode


if __name__ == "__main__":
    sys.exit(main())
