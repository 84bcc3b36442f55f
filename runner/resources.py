"""Find the files the runner ships: the playbook dir, ansible.cfg and the remote helper."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def ansible_dir() -> Path:
    """The dir holding `playbooks/` and `ansible.cfg`: inside the wheel, or the repo checkout."""
    for candidate in (_PKG / "_ansible", _PKG.parent):
        if (candidate / "playbooks" / "run_step.yml").is_file():
            return candidate
    raise FileNotFoundError("playbooks/run_step.yml not found next to the runner package")


def playbook() -> Path:
    return ansible_dir() / "playbooks" / "run_step.yml"


def ansible_cfg() -> Path:
    return ansible_dir() / "ansible.cfg"


def remote_dir() -> Path:
    """`runner/remote/`: extcomp-remote, the sample entry script and site scripts."""
    return _PKG / "remote"


def helper_script() -> Path:
    return remote_dir() / "extcomp-remote"
