"""The import contracts hold and bite on a violation; docs/architecture.md matches the code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from scripts.gen_arch_docs import DOC, render

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def test_import_contracts_hold() -> None:
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_import_contracts_catch_violations(tmp_path: Path) -> None:
    """A side importing another side, and a cycle inside a package, each break a contract."""
    for name in ("runner", "webapi"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / "webapi/server/routing.py").open("a") as fh:
        fh.write("\nimport webapi.poller.loop  # noqa: E402\n")
    with (tmp_path / "webapi/store/files.py").open("a") as fh:
        fh.write("\nfrom webapi.store import yaml_store  # noqa: E402\n")
    out = _lint(tmp_path)
    assert out.returncode == 1, out.stdout
    assert "The server, the poller and the client never import each other BROKEN" in out.stdout
    assert (
        "No import cycles" in out.stdout and "webapi.server.routing -> webapi.poller" in out.stdout
    )
    assert "2 broken" in out.stdout


def test_architecture_doc_is_generated_from_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert render(text) == text, "docs/architecture.md is stale: run `make docs`"
