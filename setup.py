"""The `jobs` extra is read from requirements-jobs.txt, the one place its pins live."""

import os

from setuptools import setup


def jobs_requirements():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "requirements-jobs.txt")
    with open(path, encoding="utf-8") as handle:
        lines = (line.split("#", 1)[0].strip() for line in handle)
        return [line for line in lines if line]


setup(extras_require={"test": ["pytest>=8", "hypothesis>=6"], "jobs": jobs_requirements()})
