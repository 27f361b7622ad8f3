"""The services run on `[project].dependencies` alone: the image installs only that closure
(k8s/image/runtime_requirements.py), so a service module importing a dev-only package (test
tools, the demo sink's aiohttp) would fail in a pod and nowhere else."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What the Dockerfile copies into the image: these run there.
SERVICE_PACKAGES = ("mesh", "orchestrator", "scheduler", "executor")
FIRST_PARTY = {*SERVICE_PACKAGES, "servicecall", "gateway", "meshctl", "tests", "bench"}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pinned(requirements: list[str]) -> set[str]:
    return {_normalize(re.split(r"[\[=<>]", r, maxsplit=1)[0]) for r in requirements}


def _imported_top_levels(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_service_modules_import_only_runtime_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _pinned(project["dependencies"])
    dev_only = _pinned(project["optional-dependencies"]["dev"]) - runtime
    distributions = packages_distributions()
    offenders = []
    for package in SERVICE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in _imported_top_levels(path) - FIRST_PARTY - set(sys.stdlib_module_names):
                provided_by = {_normalize(d) for d in distributions.get(name, [])}
                if provided_by & dev_only and not provided_by & runtime:
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_the_demo_sink_dependency_is_dev_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "aiohttp" not in _pinned(project["dependencies"])
    assert "aiohttp" in _pinned(project["optional-dependencies"]["dev"])
