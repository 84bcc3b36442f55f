"""What a failed step tells the user: what to run next (resume, clean), or what to install."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.driver import StepDriver
from runner.errors import RemoteMissing, StepError, TransportError
from runner.record import StepStore
from runner.steps import HostSpec, StepSpec


@pytest.fixture
def store(tmp_path: Path) -> StepStore:
    return StepStore(tmp_path / "state")


def _driver(store: StepStore, tmp_path: Path, done: list[str], connected: bool) -> StepDriver:
    spec = StepSpec(
        host=HostSpec.parse("user@h.example:22"),
        results_dir=tmp_path / "r",
        remote_base="/scratch",
    )
    record = store.new(spec)
    record.phases_done, record.connected, record.rsync_dir = list(done), connected, "w-1"
    return StepDriver(store, record)


@pytest.mark.parametrize(
    ("exc", "done", "connected", "says"),
    [
        (TransportError("lost"), ["mkdir", "push"], True, ("resume", "clean")),
        (TransportError("lost"), [], True, ("resume",)),
        (TransportError("cannot reach h"), [], False, ()),
        (RemoteMissing("no entry"), ["mkdir", "push"], True, ("clean", "/scratch/w-1")),
        (RemoteMissing("no entry"), ["mkdir", "push", "clean"], True, ()),
    ],
)
def test_the_message_names_what_to_run(
    store: StepStore,
    tmp_path: Path,
    exc: StepError,
    done: list[str],
    connected: bool,
    says: tuple[str, ...],
) -> None:
    driver = _driver(store, tmp_path, done, connected)
    driver.fail(exc)
    step_id = driver.record.step_id
    for word in says:
        expected = f"`extcomp-ssh {word} {step_id}`" if word.isalpha() else word
        assert expected in exc.reason
    for word in {"resume", "clean"} - set(says):
        assert f"extcomp-ssh {word}" not in exc.reason
    assert store.load(step_id).reason == exc.reason


def test_without_the_ssh_extra_a_step_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from runner import execute
    from runner.errors import UsageError

    monkeypatch.setitem(__import__("sys").modules, "ansible_runner", None)
    with pytest.raises(UsageError, match=r"mint-extcomp\[workflow\]"):
        execute._ansible_runner()
