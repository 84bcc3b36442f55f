"""runner and webapi never import each other; only runner/execute.py imports ansible_runner."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_runner_and_webapi_are_independent() -> None:
    for package, other in (("runner", "webapi"), ("webapi", "runner")):
        for path in modules(package):
            bad = {n for n in imports(path) if n == other or n.startswith(other + ".")}
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_only_execute_imports_ansible_runner() -> None:
    importers = [
        p.relative_to(ROOT).as_posix()
        for pkg in ("runner", "webapi")
        for p in modules(pkg)
        if any(n.split(".")[0] == "ansible_runner" for n in imports(p))
    ]
    assert importers == ["runner/execute.py"]


def test_modules_stay_small() -> None:
    big = [
        f"{p.relative_to(ROOT)} ({n})"
        for pkg in ("runner", "webapi")
        for p in modules(pkg)
        if (n := len(p.read_text().splitlines())) > 400
    ]
    assert not big, f"split these modules: {big}"
