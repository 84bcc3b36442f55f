"""The per-step playbook stays in step with the runner and stays fit for restricted hosts."""

from __future__ import annotations

from pathlib import Path

import yaml

from runner import resources
from runner.events import TASKS
from runner.steps import PHASES


def tasks() -> list[dict[str, object]]:
    play = yaml.safe_load(resources.playbook().read_text())[0]
    return list(play["tasks"])


def test_every_task_is_known_to_the_runner_and_every_phase_has_a_task() -> None:
    names = {str(t["name"]) for t in tasks()}
    assert set(TASKS) <= names
    assert {str(p) for p in PHASES} <= set(TASKS.values())


def test_only_raw_set_fact_and_the_rsync_action_are_used() -> None:
    """No module ships Python to the host; every command is an allow-listable helper verb."""
    allowed = {"ansible.builtin.raw", "ansible.builtin.set_fact", "extcomp_rsync"}
    for task in tasks():
        used = set(task) & (
            allowed
            | {
                "ansible.builtin.command",
                "ansible.builtin.shell",
                "ansible.builtin.copy",
                "ansible.builtin.script",
            }
        )
        assert used and used <= allowed, task["name"]
        raw = task.get("ansible.builtin.raw")
        if raw is not None:
            assert str(raw).startswith("{{ __step_cmd }} "), task["name"]


def test_the_wheel_ships_the_playbook_and_config() -> None:
    text = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert '"playbooks" = "runner/_ansible/playbooks"' in text
    assert resources.ansible_cfg().is_file()
