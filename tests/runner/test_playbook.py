"""The per-step playbook stays in step with the runner and stays fit for restricted hosts."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from runner import resources
from runner.events import TASKS
from runner.steps import PHASES
from tests.fixtures.wheel import BuiltWheel


def tasks() -> list[dict[str, object]]:
    play = yaml.safe_load(resources.playbook().read_text())[0]
    return list(play["tasks"])


def test_every_task_is_known_to_the_runner_and_every_phase_has_a_task() -> None:
    names = {str(t["name"]) for t in tasks()}
    assert set(TASKS) <= names
    assert {str(p) for p in PHASES} <= set(TASKS.values())


def test_only_raw_set_fact_and_the_rsync_action_are_used() -> None:
    """No module ships Python to the host; every command is an allow-listable helper verb."""
    allowed = {"ansible.builtin.raw", "ansible.builtin.set_fact", "extcomp_rsync", "extcomp_helper"}
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


def test_the_wheel_ships_what_the_runner_needs(built_wheel: BuiltWheel, tmp_path: Path) -> None:
    """The wheel, unpacked as an install would, and the runner finding its files there."""
    site = built_wheel.site
    probe = (
        "from runner import resources as r; "
        "print(r.playbook(), r.ansible_cfg(), r.helper_script(), sep='\\n')"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(site), "PATH": os.environ["PATH"]},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    found = [Path(line) for line in out.stdout.splitlines()]
    assert len(found) == 3 and all(p.is_file() and p.is_relative_to(site) for p in found), found
    assert (found[0].parent / "action_plugins" / "extcomp_rsync.py").is_file()
    # The wheel carries no test code and no other package than the two.
    tops = {name.split("/")[0] for name in zipfile.ZipFile(built_wheel.wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"runner", "webapi"}
