"""The one compiled part of triage: the single-ticket featurizer (``triage/_featurize.c``).

Everything else is declared in ``pyproject.toml``. The extension is optional: without a C
compiler the install still succeeds and ``triage.features`` runs its numpy path, which
gives the same rows, more slowly.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("triage._featurize", ["triage/_featurize.c"], optional=True)])
