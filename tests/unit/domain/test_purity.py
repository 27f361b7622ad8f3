"""The domain core stays pure: standard library only, no clock, no randomness, no fresh ids."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

DOMAIN = Path(__file__).resolve().parents[3] / "orchestrator" / "domain"
MODULES = sorted(DOMAIN.glob("*.py"))
# Time and ids are arguments of the core; these would smuggle them in.
IMPURE_CALLS = {"now", "utcnow", "today", "time", "time_ns", "monotonic", "uuid1", "uuid4"}
IMPURE_MODULES = {"random", "secrets", "time"}
# Libraries of pure functions the core may use: croniter finds a cron expression's next time
# from a start time given to it (domain/schedules.py; the core always gives one, so it never
# reads the clock itself).
PURE_LIBRARIES = {"croniter"}


def imported_modules(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "use absolute imports"
            names.append(node.module or "")
    return names


def called_names(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            match node.func:
                case ast.Attribute(attr=name) | ast.Name(id=name):
                    names.append(name)
                case _:
                    pass
    return names


def test_the_domain_package_is_found() -> None:
    assert {path.name for path in MODULES} >= {"decide.py", "states.py", "model.py"}


@pytest.mark.parametrize("path", MODULES, ids=[path.name for path in MODULES])
def test_imports_only_the_standard_library_and_itself(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))

    for module in imported_modules(tree):
        top = module.split(".")[0]
        inside = module == "orchestrator.domain" or module.startswith("orchestrator.domain.")
        allowed = top in sys.stdlib_module_names or top in PURE_LIBRARIES
        assert inside or allowed, f"{path.name} imports {module}"
        assert top not in IMPURE_MODULES, f"{path.name} imports {module}"


@pytest.mark.parametrize("path", MODULES, ids=[path.name for path in MODULES])
def test_reads_no_clock_and_draws_no_randomness(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))

    impure = IMPURE_CALLS.intersection(called_names(tree))

    assert not impure, f"{path.name} calls {sorted(impure)}"
