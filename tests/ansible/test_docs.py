"""docs/ansible.md, argument_specs, defaults/main.yml and the example inventory agree; the
operator's path in docs/setup.md names what the example inventory reads."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ansible.argspec_doc import (
    EXAMPLE_GROUPS,
    KNOBS_LINE,
    REPO,
    ROLES,
    example_file,
    example_knobs,
    render,
)

SETUP_MD = REPO / "docs" / "setup.md"


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


@pytest.mark.parametrize("role", list(EXAMPLE_GROUPS))
def test_example_group_vars_list_every_knob(role: str) -> None:
    text = example_file(role).read_text()
    assert KNOBS_LINE in text, "the example has no knob list"
    assert text.split(KNOBS_LINE + "\n")[1] == example_knobs(role), (
        "stale knob list: run python -m tests.ansible.argspec_doc --examples"
    )


def test_vault_variable_is_the_one_the_example_reads() -> None:
    """docs/setup.md's encrypt_string --name and the pollers' group_vars use one name."""
    pollers = example_file("poller_host").read_text()
    read = re.findall(r"^poller_host_token: .*\{\{ (\w+)", pollers, re.MULTILINE)
    assert read == ["vault_poller_host_token"], read
    names = set(re.findall(r"encrypt_string [^\n]*--name (\w+)", SETUP_MD.read_text()))
    names |= set(re.findall(r"encrypt_string [^\n]*--name (\w+)", pollers))
    assert names == set(read), names


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="not a git checkout")
def test_a_real_inventory_is_not_tracked() -> None:
    """cp -r inventories/example inventories/prod (docs/setup.md): git ignores the copy."""
    for path, ignored in (
        ("inventories/prod/hosts.yml", True),
        ("inventories/prod/group_vars/pollers.yml", True),
        ("inventories/prod-files/tls/privkey.pem", True),
        ("inventories/example/hosts.yml", False),
        ("inventories/example-files/nims-xrd-programs/xrd-fit", False),
        ("inventories/local/hosts.yml", False),
    ):
        done = subprocess.run(
            ["git", "-C", str(REPO), "check-ignore", "-q", "--no-index", path], check=False
        )
        assert (done.returncode == 0) == ignored, path


def test_the_example_inventory_loads_and_the_playbooks_parse(tmp_path: Path) -> None:
    """The operator's copy, before any edit: it loads without a warning (no file in it is taken
    for an inventory source), and site.yml and retire.yml parse with it."""
    prod = tmp_path / "prod"
    shutil.copytree(REPO / "inventories" / "example", prod)
    shutil.copytree(REPO / "inventories" / "example-files", tmp_path / "prod-files")
    bin_dir = Path(sys.executable).parent
    env = {"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "PATH": str(bin_dir), "HOME": str(tmp_path)}
    hosts = subprocess.run(
        [str(bin_dir / "ansible-inventory"), "-i", str(prod), "--list"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert hosts.returncode == 0, hosts.stderr
    assert "WARNING" not in hosts.stderr, hosts.stderr
    groups = yaml.safe_load(hosts.stdout)
    for group in ("workflow_hosts", "ssh_targets", "api_servers", "pollers"):
        assert groups[group]["hosts"], group
    for playbook in ("site.yml", "retire.yml"):
        done = subprocess.run(
            [
                str(bin_dir / "ansible-playbook"),
                "-i",
                str(prod),
                "--syntax-check",
                str(REPO / "playbooks" / playbook),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    # What the example's variables name on the controller is in the copy (or made by the docs).
    pollers = yaml.safe_load((prod / "group_vars" / "pollers.yml").read_text())
    programs = Path(pollers["poller_host_programs_src"].replace("{{ inventory_dir }}", str(prod)))
    assert programs.is_dir() and all(p.stat().st_mode & 0o111 for p in programs.iterdir())
