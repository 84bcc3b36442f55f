"""Shared fixtures: a real sshd "external host" for SSH-mode tests, per-test state dirs."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.sshd import SshHost, start_sshd, stop_sshd

# Groups of tests that share one worker under `pytest -n N --dist loadgroup` (make test): a file
# keeps its module fixtures in one process, and these dirs keep theirs in one: tests/ansible
# (accounts made with useradd, which locks /etc/passwd; one wheel dir per play) and tests/lab
# (one lab per session).
_ONE_WORKER_DIRS = ("ansible", "lab")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        rel = item.path.relative_to(tests)
        group = rel.parts[0] if rel.parts[0] in _ONE_WORKER_DIRS else rel.as_posix()
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def ssh_host() -> Iterator[SshHost]:
    """One real sshd on 127.0.0.1:<free port> for the whole session, stopped by pid.

    Its files live in a dir of its own, not under pytest's basetemp: another pytest session on
    the machine prunes old basetemps, and sshd re-reads its config and host key per connection.
    """
    root = Path(tempfile.mkdtemp(prefix="extcomp-sshd-"))
    host = start_sshd(root / "host")
    try:
        yield host
    finally:
        stop_sshd(host)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test keeps its step records in its own dir, never in the user's ~/.local/state."""
    state = tmp_path / "state"
    monkeypatch.setenv("EXTCOMP_STATE_DIR", str(state))
    return state


@pytest.fixture
def is_root() -> bool:
    return os.geteuid() == 0
