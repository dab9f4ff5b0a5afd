"""Requirements against an environment: names compared as PyPI compares them, versions as pip does, and what a
Python has installed, read without importing anything."""

from __future__ import annotations

import importlib.metadata
import re


def normalise_name(name: str) -> str:
    """PyPI's rule: case and runs of ``-_.`` do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def missing_requirements(requirements: dict, installed: dict) -> list:
    """The requirements not installed at all, each with the ``pip install`` that fixes it."""
    return [f'{name} is not installed (pip install "{name}{specifier}")'
            for name, specifier in requirements.items() if normalise_name(name) not in installed]


def check_requirements(requirements: dict, installed: dict) -> list:
    """Each requirement the environment misses, as a sentence with the ``pip install`` that fixes it."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import InvalidVersion, Version

    problems = []
    for name, specifier in requirements.items():
        version = installed.get(normalise_name(name))
        fix = f'pip install "{name}{specifier}"'
        if version is None:
            problems.append(f"{name} is not installed (needs {name}{specifier}; {fix})")
            continue
        try:
            satisfied = SpecifierSet(specifier).contains(Version(version), prereleases=True)
        except (InvalidSpecifier, InvalidVersion):
            problems.append(f"cannot compare {name} {version} with {specifier!r}")
            continue
        if not satisfied:
            problems.append(f"{name} {version} is installed; the package needs {name}{specifier} ({fix})")
    return problems



def missing_packages(needed, requirements: dict, installed: dict) -> list:
    """What the worker environment lacks: names in ``needed``, then the package's requirements as pip specs."""
    missing = [name for name in needed if normalise_name(name) not in installed]
    wanted = {name: specifier for name, specifier in requirements.items() if name not in missing}
    return missing + [f"{name}{wanted[name]}" for name in wanted
                      if missing_requirements({name: wanted[name]}, installed)]


def installed_packages() -> dict:
    """Every installed distribution's version by normalised name, read without importing anything.

    When a name is installed twice (a venv over another environment's site-packages), the one
    earlier on ``sys.path`` wins, as it does for ``import``.
    """
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(normalise_name(name), dist.version)
    return found
