"""docs/ansible.md, argument_specs and defaults/main.yml name the same variables."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.ansible.argspec_doc import REPO, ROLES, render


def test_ansible_md_is_generated_from_the_argument_specs() -> None:
    assert (REPO / "docs" / "ansible.md").read_text() == render(), (
        "docs/ansible.md is stale: run python -m tests.ansible.argspec_doc > docs/ansible.md"
    )


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_match_the_defaults(role: str) -> None:
    """Every option of every entry point: a default equal to defaults/main.yml's, or required."""
    base = REPO / "roles" / role
    defaults = yaml.safe_load((base / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((base / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    options: dict[str, Any] = {}
    for spec in specs.values():
        for name, option in spec["options"].items():
            options.setdefault(name, option)
            if option.get("required"):
                assert "default" not in option and name not in defaults, name
            else:
                assert option.get("default") == defaults[name], name
            assert option["description"].strip(), name
            assert name.startswith(f"{role}_"), name
    optional = [name for name, option in options.items() if not option.get("required")]
    assert optional == list(defaults)


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_commented(role: str) -> None:
    lines = (REPO / "roles" / role / "defaults" / "main.yml").read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith(("#", " ", "-")) and ":" in line:
            assert lines[i - 1].startswith("#"), f"{role}: no comment above {line!r}"


@pytest.mark.parametrize("role", ROLES)
def test_readme_lists_every_variable(role: str) -> None:
    readme = (REPO / "roles" / role / "README.md").read_text()
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())
    missing = [name for name in defaults if f"`{name}`" not in readme]
    assert not missing
    for section in ("## Requirements", "## Role Variables", "## Example Playbook"):
        assert section in readme
