"""Shared fixtures: a real sshd "external host" for SSH-mode tests, a real Slurm cluster,
per-test state dirs."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.slurm import SlurmCluster, missing, start_slurm, stop_slurm
from tests.fixtures.sshd import SshHost, start_sshd, stop_sshd
from tests.fixtures.wheel import BuiltWheel, build_wheel

# Groups of tests that share one worker under `pytest -n N` (make test): a file keeps its module
# fixtures in one process, and tests/lab keeps its one lab per session in one. (Files that add
# accounts may run side by side: useradd waits for the /etc/passwd lock.)
_ONE_WORKER_DIRS = ("lab",)


def group_of(nodeid: str) -> str:
    """The worker group of a test: its dir for _ONE_WORKER_DIRS, else its file."""
    path = nodeid.split("::", 1)[0]
    parts = path.split("/")
    return parts[1] if len(parts) > 2 and parts[1] in _ONE_WORKER_DIRS else path


# pytest-xdist's own `xdist_group` cannot be used: it renames node ids, which pytest 9 ignores.
@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return GroupScheduling(config, log)


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


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A real private Slurm cluster (munged, slurmctld, slurmd; tests/fixtures/slurm.py) for the
    whole session; the PBS wrappers of slurm-wlm-torque talk to the same cluster."""
    if os.geteuid() != 0:
        pytest.skip("the test Slurm cluster needs root (SlurmUser=root, a private munged)")
    absent = missing()
    if absent:
        pytest.fail(
            f"not installed: {', '.join(absent)}; run scripts/bootstrap-system.sh (make setup)"
        )
    root = Path(tempfile.mkdtemp(prefix="extcomp-slurm-"))
    cluster = start_slurm(root)
    try:
        yield cluster
    finally:
        stop_slurm(cluster)
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


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> BuiltWheel:
    """The project's wheel, built once per session and unpacked (tests/fixtures/wheel.py)."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))
