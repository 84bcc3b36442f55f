"""Render docs/ansible.md from the roles' meta/argument_specs.yml (so the two cannot drift).

python -m tests.ansible.argspec_doc > docs/ansible.md
python -m tests.ansible.argspec_doc --examples   # rewrite the knob lists of inventories/example
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = ("ssh_target", "workflow_host", "poller_host", "api_server", "extcomp_common")

HEADER = """\
# Ansible roles: every variable

Generated from each role's `meta/argument_specs.yml` by `python -m tests.ansible.argspec_doc >
docs/ansible.md`; `tests/ansible/test_docs.py` fails when the two differ. How to use the roles and
playbooks: [setup.md](setup.md).

Playbooks and the roles they apply:

| playbook | hosts | roles |
|---|---|---|
| `playbooks/setup_workflow_host.yml` | `workflow_hosts` | `workflow_host` |
| `playbooks/setup_ssh_target.yml` | `ssh_targets` | `ssh_target` (takes the workflow host's \
public key when `ssh_target_public_key` and `ssh_target_public_key_file` are empty and \
`workflow_host` ran in the same run) |
| `playbooks/setup_api_server.yml` | `api_servers` | `api_server` |
| `playbooks/setup_poller.yml` | `pollers` | `poller_host` |
| `playbooks/site.yml` | all four | the four set-up playbooks in that order |
| `playbooks/retire.yml` | all four (pick with `--limit`) | first `api_server` `tasks_from: \
revoke` for the tokens labelled `poller:<site>` of the pollers in `--limit` (from the \
inventory: no vault, no poller host needed), then `ssh_target` with `state: absent`, \
`workflow_host` absent for the aliases in `retire_workflow_aliases` (a list, extra var), \
`poller_host` with `state: absent` (and `poller_host_token: ""`: no vault password needed) |

Playbook-level variable: `retire_workflow_aliases` (list of ssh config aliases to remove from the
workflow hosts in `retire.yml`; default: none).

`extcomp_common` is internal: no playbook applies it; `api_server`, `poller_host` and `ssh_target`
include its entry points with their own values.
"""


# Each role's group in inventories/example/group_vars: its active settings, then this line and
# every knob of defaults/main.yml commented out.
EXAMPLE_GROUPS = {
    "ssh_target": "ssh_targets",
    "workflow_host": "workflow_hosts",
    "api_server": "api_servers",
    "poller_host": "pollers",
}
KNOBS_LINE = "# ---- every knob and its default " + "-" * 60


def example_knobs(role: str) -> str:
    """defaults/main.yml commented out: what follows KNOBS_LINE in the role's example group_vars."""
    lines = (REPO / "roles" / role / "defaults" / "main.yml").read_text().splitlines()[1:]
    return "".join(f"{line}\n" if line.startswith("#") else f"# {line}\n" for line in lines)


def example_file(role: str) -> Path:
    return REPO / "inventories" / "example" / "group_vars" / f"{EXAMPLE_GROUPS[role]}.yml"


def write_examples() -> None:
    for role in EXAMPLE_GROUPS:
        path = example_file(role)
        active = path.read_text().split(KNOBS_LINE)[0]
        path.write_text(f"{active}{KNOBS_LINE}\n{example_knobs(role)}")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(option: dict[str, Any]) -> str:
    if "default" not in option:
        return "(required)" if option.get("required") else ""
    value = option["default"]
    if option.get("no_log"):
        return "(secret)" if value else '`""`'
    shown = value if isinstance(value, str) else json.dumps(value)
    return f"`{shown}`" if shown != "" else '`""`'


def _table(options: dict[str, Any]) -> str:
    out = ["| variable | type | default | description |\n|---|---|---|---|"]
    for name, option in options.items():
        kind = option.get("type", "str")
        if kind == "list":
            kind = f"list of {option.get('elements', 'str')}"
        desc = option["description"]
        if "choices" in option:
            desc += " One of: " + ", ".join(f"`{c}`" for c in option["choices"]) + "."
        out.append(f"| `{name}` | {kind} | {_cell(_default(option))} | {_cell(desc)} |")
    return "\n".join(out)


def render() -> str:
    out = [HEADER]
    for role in ROLES:
        base = REPO / "roles" / role
        specs = yaml.safe_load((base / "meta" / "argument_specs.yml").read_text())
        specs = specs["argument_specs"]
        if "main" not in specs:  # an internal role: only entry points, each with its own options
            meta = yaml.safe_load((base / "meta" / "main.yml").read_text())
            out.append(f"\n## `{role}`\n\n{meta['galaxy_info']['description']}\n")
            for i, (entry, spec) in enumerate(specs.items()):
                gap = "\n" if i else ""
                out.append(f"{gap}### `tasks_from: {entry}`\n\n{spec['short_description']}\n")
                out.append(_table(spec["options"]))
            continue
        out.append(f"\n## `{role}`\n\n{specs['main']['short_description']}\n")
        for entry, spec in specs.items():
            if entry != "main":
                names = ", ".join(f"`{n}`" for n in spec["options"])
                out.append(
                    f"Entry point `{entry}` (`tasks_from: {entry}`): "
                    f"{spec['short_description']} Options: {names}.\n"
                )
        out.append(_table(specs["main"]["options"]))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--examples"]:
        write_examples()
    else:
        print(render(), end="")
