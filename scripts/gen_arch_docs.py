"""Write the generated parts of docs/architecture.md (the package tree and who imports whom) from
the code itself; a test keeps the file equal to what this prints, so the document cannot drift."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("runner", "webapi")
BLOCK = re.compile(r"(<!-- generated:(\w+) -->\n).*?(<!-- end:\2 -->)", re.S)


def _modname(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_modname(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(path: Path, known: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(project modules, third-party top-level packages) that `path` imports, lazily or not."""
    own, external = set(), set()
    stdlib = sys.stdlib_module_names
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES:
                while name and name not in known:
                    name = name.rpartition(".")[0]
                if name:
                    own.add(name)
            elif top not in stdlib and top != "__future__":
                external.add(top)
    return own, external


def _short(name: str, package: str) -> str:
    return name.removeprefix(package + ".") if name != package else name


def imports_section() -> str:
    known = _modules()
    lines = []
    for package in PACKAGES:
        lines.append(f"{package}/")
        for mod, path in known.items():
            if mod.split(".")[0] != package or mod == package:
                continue
            own, external = _imports(path, known)
            if path.name == "__init__.py" and not own and not external:
                continue  # a package marker with nothing of its own
            own.discard(mod)
            # A module importing its own package's __init__ for a submodule is not an edge.
            own = {
                o for o in own if not (mod.startswith(o + ".") and known[o].name == "__init__.py")
            }
            deps = ", ".join(_short(o, package) for o in sorted(own))
            ext = f"  [{', '.join(sorted(external))}]" if external else ""
            lines.append(f"  {_short(mod, package)} → {deps or '-'}{ext}")
    return "```\n" + "\n".join(lines) + "\n```\n"


def _first_line(path: Path) -> str:
    """The first sentence of a module's docstring."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    text = " ".join(doc.split("\n\n")[0].split())
    end = re.search(r"\.(\s|$)", text)
    text = text[: end.start()] if end else text
    if len(text) > 84 and ": " in text:  # keep the tree readable: the part before the colon
        text = text.split(": ")[0]
    return text


def tree_section() -> str:
    """`tree webapi -L 1` (and runner), each entry with the first sentence of its docstring."""
    lines = []
    for package in PACKAGES:
        lines.append(f"{package}/")
        base = ROOT / package
        entries = sorted(base.iterdir(), key=lambda p: (p.is_file(), p.name))
        for entry in entries:
            if entry.name.startswith(("__", ".")) or entry.name == "remote":
                if entry.name == "remote":
                    lines.append(
                        "  remote/          shipped to SSH hosts: the gate/helper and "
                        "the sample entry scripts (imports nothing of ours)"
                    )
                continue
            if entry.is_dir() and (entry / "__init__.py").exists():
                name, text = f"{entry.name}/", _first_line(entry / "__init__.py")
            elif entry.suffix == ".py":
                name, text = entry.name, _first_line(entry)
            else:
                continue
            lines.append(f"  {name:<16} {text}")
    return "```\n" + "\n".join(lines) + "\n```\n"


def render(current: str) -> str:
    sections = {"tree": tree_section(), "imports": imports_section()}

    def fill(m: re.Match[str]) -> str:
        return m.group(1) + sections[m.group(2)] + m.group(3)

    return BLOCK.sub(fill, current)


if __name__ == "__main__":
    DOC.write_text(render(DOC.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {DOC.relative_to(ROOT)}")
