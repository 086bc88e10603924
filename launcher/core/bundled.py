"""Where the files that ship with the launcher are: the one place that knows (stdlib only).

The same answers for a source checkout (`python -m launcher.app.cli` from the repo root), an editable
install (`pip install -e .`) and an installed wheel or sdist (site-packages):

- recipes and templates are package data of `launcher` (launcher/recipes, launcher/rendering/templates);
- the cluster profiles live in the repo's top-level `cluster_profiles/`; the build copies them
  into the wheel as `launcher/_bundled/cluster_profiles/` (setup.py), so an install has them
  next to this file and a checkout finds them beside the package;
- `jobs` is a top-level package installed beside `launcher` (its files are the run's code snapshot).
"""

from __future__ import annotations

import os

# The launcher package (this file is launcher/core/bundled.py), as imported and, through a symlink
# (setuptools' strict editable mode links files into a build tree), in the checkout.
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_REAL = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))

PACKAGED_PROFILES = os.path.join("_bundled", "cluster_profiles")  # inside the launcher package


def _first_dir(*candidates: str) -> str:
    """The first candidate that is a directory, else the first one (its absence is then reported by the caller)."""
    for path in candidates:
        if os.path.isdir(path):
            return path
    return candidates[0]


def profile_dir() -> str:
    """The bundled cluster profiles (h100-1x8.yaml, ...)."""
    return _first_dir(os.path.join(_HERE, PACKAGED_PROFILES),                       # wheel / sdist install
                      os.path.join(os.path.dirname(_HERE), "cluster_profiles"),      # checkout, editable
                      os.path.join(os.path.dirname(_REAL), "cluster_profiles"))      # strict editable


def recipe_dir() -> str:
    """The bundled recipes (minitron-8b-wikitext.yaml, tiny.yaml)."""
    return _first_dir(os.path.join(_HERE, "recipes"), os.path.join(_REAL, "recipes"))


def template_dir() -> str:
    """The Jinja2 templates of the stage scripts."""
    return _first_dir(os.path.join(_HERE, "rendering", "templates"), os.path.join(_REAL, "rendering", "templates"))


def jobs_dir() -> str:
    """The `jobs` package shipped with this launcher (copied into every run as its code snapshot).

    Looked up beside `launcher`, never through sys.path: a `jobs/` folder in the user's working
    directory must not become the run's code.
    """
    return _first_dir(os.path.join(os.path.dirname(_HERE), "jobs"), os.path.join(os.path.dirname(_REAL), "jobs"))


def all_dirs() -> dict[str, str]:
    """Each bundled folder by name (for `minitron check`-style diagnostics and the packaging test)."""
    return {"profiles": profile_dir(), "recipes": recipe_dir(), "templates": template_dir(), "jobs": jobs_dir()}
