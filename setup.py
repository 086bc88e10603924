"""The `jobs` extra is read from requirements-jobs.txt, the one place its pins live.

The cluster profiles stay in the repo's top-level `cluster_profiles/` (no copy in the source tree);
building a wheel copies their YAML into the `launcher` package as `launcher/_bundled/cluster_profiles/`,
where `launcher.core.bundled.profile_dir()` finds them in an install. An editable install (`pip install -e .`)
copies nothing: there `launcher.core.bundled` reads the checkout's `cluster_profiles/` directly.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))

# source folder (relative to the repo root) -> (destination inside the build tree, file suffixes)
# `minitron plan --graph FILE`: DOT text (graphviz's Python package; no binary needed) and SVG/PNG (matplotlib)
GRAPH = ["graphviz>=0.20", "matplotlib>=3.5"]
BUNDLED = {"cluster_profiles": (os.path.join("launcher", "_bundled", "cluster_profiles"), (".yaml",))}


def jobs_requirements():
    path = os.path.join(HERE, "requirements-jobs.txt")
    with open(path, encoding="utf-8") as handle:
        lines = (line.split("#", 1)[0].strip() for line in handle)
        return [line for line in lines if line]


class build_py_with_bundled(build_py):
    """build_py, plus the top-level folders in BUNDLED copied in as package data of `launcher`."""

    def _bundled_mapping(self):
        mapping = {}
        for source, (dest, suffixes) in BUNDLED.items():
            folder = os.path.join(HERE, source)
            if not os.path.isdir(folder):
                raise SystemExit(f"setup.py: the bundled folder {source}/ is missing from the source tree")
            for name in sorted(os.listdir(folder)):
                if name.endswith(suffixes) and os.path.isfile(os.path.join(folder, name)):
                    mapping[os.path.join(self.build_lib, dest, name)] = os.path.join(folder, name)
        return mapping

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # editable: launcher.core.bundled reads the checkout
            return
        for target, source in self._bundled_mapping().items():
            self.mkpath(os.path.dirname(target))
            self.copy_file(source, target, preserve_mode=False)

    def get_outputs(self, include_bytecode=1):
        return list(super().get_outputs(include_bytecode)) + list(self._bundled_mapping())

    def get_output_mapping(self):  # setuptools' editable_mode=strict links these into its tree
        mapping = dict(super().get_output_mapping())
        mapping.update(self._bundled_mapping())
        return mapping


setup(
    cmdclass={"build_py": build_py_with_bundled},
    extras_require={"test": ["pytest>=8", "hypothesis>=6", "import-linter>=2.1", "pytest-randomly>=3.15", *GRAPH],
                    "jobs": jobs_requirements(), "graph": GRAPH,
                    "remote": [r for r in jobs_requirements() if r.startswith(("nemo-run", "leptonai"))]},
)
