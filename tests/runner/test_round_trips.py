"""Round trips a step saves (mkdir, and the start of a step with nothing to push, beside
ansible-playbook's start-up; clean beside its shutdown; no purge after a final answer that
carries the supervisor's own) and the fallbacks when it can't.

Against the real test sshd; what each playbook run did is read from ansible-runner's own job
events, the step's audit log.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner import execute
from runner.driver import run_part, run_step, start_part
from runner.record import StepStore
from runner.steps import HostSpec, Outcome, Phase, StepSpec
from tests.fixtures.sshd import SshHost, start_sshd, stop_sshd
from tests.runner.conftest import BOTH_KEYS, SpecFactory, host_spec, write

MKDIR = "Create the work dir on the host"
PUSH = "Push the input files"
START = "Start the entry script, detached from this connection"
PURGE = "Remove what must never leave the host"
CLEAN = "Remove the work dir from the host"


def events(step_id: str, run: int) -> dict[str, dict[str, Any]]:
    """Task name -> (last) outcome event of playbook run `run` of a step."""
    found: dict[str, dict[str, Any]] = {}
    where = StepStore().step_dir(step_id) / "ansible" / "artifacts" / f"run{run:03d}"
    for path in sorted(
        (where / "job_events").glob("*.json"), key=lambda p: int(p.stem.split("-")[0])
    ):
        event = json.loads(path.read_text())
        if event["event"] in ("runner_on_ok", "runner_on_skipped", "runner_on_failed"):
            found[event["event_data"]["task"]] = event
    return found


def work_dirs(ssh_host: SshHost) -> list[str]:
    return sorted(p.name for p in Path(ssh_host.base).iterdir())


@BOTH_KEYS
def test_an_empty_step_sends_mkdir_and_clean_beside_the_playbook(
    make_spec: SpecFactory, ssh_host: SshHost
) -> None:
    before = work_dirs(ssh_host)
    result = run_step(make_spec())
    assert (result.outcome, result.exit_code) == (Outcome.SUCCEEDED, 0)
    ran = events(result.step_id, 1)
    assert ran[MKDIR]["event"] == "runner_on_ok"
    assert ran[MKDIR]["event_data"]["res"].get("answered_beside") is True
    assert ran[START]["event_data"]["res"].get("answered_beside") is True
    assert ran[START]["event_data"]["res"]["changed"] is True  # started by this step, once
    # The program ended within the start task's own wait: its answer carries the supervisor's
    # purge, so no purge round trip; and no clean task: the runner cleaned beside the playbook.
    assert ran[PURGE]["event"] == "runner_on_skipped"
    assert CLEAN not in ran
    record = StepStore().load(result.step_id)
    assert record.phases_done == ["mkdir", "push", "start", "wait", "pull", "clean"]
    assert record.remote["never_return_removed"] == 0
    assert set(result.seconds) >= {"mkdir", "start", "pull", "clean"}
    assert work_dirs(ssh_host) == before, "the work dir is gone from the host"


@pytest.mark.slow
def test_without_the_side_channel_the_playbook_does_both(
    make_spec: SpecFactory, ssh_host: SshHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(execute.SideCommand, "start", classmethod(lambda cls, *a, **k: None))
    before = work_dirs(ssh_host)
    result = run_step(make_spec("write", "out.bin", "1"))
    assert result.exit_code == 0
    assert result.results_dir is not None
    assert (result.results_dir / "out.bin").stat().st_size == 1 << 20
    ran = events(result.step_id, 1)
    assert "answered_beside" not in ran[MKDIR]["event_data"]["res"]
    assert CLEAN not in ran  # left to the runner, which then found no master to send it over
    assert events(result.step_id, 2)[CLEAN]["event"] == "runner_on_ok"
    assert StepStore().load(result.step_id).phases_done[-1] == "clean"
    assert work_dirs(ssh_host) == before


@pytest.fixture
def side_commands_fail(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every command sent beside the playbook names a work dir that is not an id: the helper
    (or the gate) refuses it with a non-zero exit, as a real failure would end."""
    sent: list[str] = []
    real = execute.SideCommand.start.__func__  # type: ignore[attr-defined]

    def start(cls: type, /, host: HostSpec, command: str, **kw: Any) -> Any:
        sent.append(command)
        return real(cls, host, command.rsplit(" ", 1)[0] + " not-an-id", **kw)

    monkeypatch.setattr(execute.SideCommand, "start", classmethod(start))
    yield sent


@pytest.mark.slow
@BOTH_KEYS
def test_a_failed_side_command_falls_back_to_the_task(
    make_spec: SpecFactory, ssh_host: SshHost, side_commands_fail: list[str]
) -> None:
    before = work_dirs(ssh_host)
    result = run_step(make_spec("echo", "hi"))
    assert (result.outcome, result.exit_code) == (Outcome.SUCCEEDED, 0)
    assert [c.split()[-2] for c in side_commands_fail] == ["mkdir", "clean"]
    first, second = events(result.step_id, 1), events(result.step_id, 2)
    assert "answered_beside" not in first[MKDIR]["event_data"]["res"]
    assert first[MKDIR]["event_data"]["res"]["rc"] == 0
    assert second[CLEAN]["event"] == "runner_on_ok"  # a playbook run of its own, clean only
    record = StepStore().load(result.step_id)
    assert record.phases_done == ["mkdir", "push", "start", "wait", "pull", "clean"]
    assert work_dirs(ssh_host) == before


@pytest.fixture(scope="module")
def secret_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshHost]:
    """A host of its own whose never-return list names *.secret."""
    host = start_sshd(tmp_path_factory.mktemp("secret-sshd"))
    (host.site_dir / "never-return.conf").write_text("*.secret\n")
    try:
        yield host
    finally:
        stop_sshd(host)


@pytest.mark.slow
def test_a_pull_in_a_later_run_still_purges_first(secret_host: SshHost, tmp_path: Path) -> None:
    """Only an answer this run saw spares the purge: a pull resumed in another run asks again,
    and the secret never comes back either way. With the unrestricted key, whose pull the gate
    would not purge."""
    spec = StepSpec(
        host=host_spec(secret_host, "plain"),
        results_dir=tmp_path / "results",
        inputs=(write(tmp_path / "in.txt"),),
        args=("write", "a.secret", "1", "write", "b.bin", "1"),
        entry="test_entry.sh",
        helper=secret_host.helper,
        remote_base=str(secret_host.base),
    )
    record = start_part(spec)
    run_part(record.step_id, (Phase.START, Phase.WAIT))
    run_part(record.step_id, (Phase.PULL,))
    pulled = events(record.step_id, 3)
    assert pulled[PURGE]["event"] == "runner_on_ok", "nothing in this run saw the program end"
    results = tmp_path / "results"  # run_part's pull puts the results in place
    assert (results / "b.bin").is_file()
    assert not (results / "a.secret").exists()
    run_part(record.step_id, (Phase.CLEAN,))


@pytest.mark.parametrize("key_kind", ["plain"], indirect=True)
def test_a_step_with_inputs_pushes_and_starts_beside_the_start_up(
    make_spec: SpecFactory, ssh_host: SshHost, tmp_path: Path
) -> None:
    spec = make_spec("copy", "in.txt", "out.txt", inputs=(write(tmp_path / "in.txt", "pushed\n"),))
    result = run_step(spec)
    assert (result.outcome, result.exit_code) == (Outcome.SUCCEEDED, 0)
    ran = events(result.step_id, 1)
    for task in (MKDIR, PUSH, START):
        assert ran[task]["event_data"]["res"].get("answered_beside") is True, task
    assert result.bytes_pushed == len("pushed\n")
    assert result.results_dir is not None
    assert (result.results_dir / "out.txt").read_text() == "pushed\n"  # started after the push


def test_nothing_follows_the_mkdir_once_a_stop_was_asked_for(
    ssh_host: SshHost, tmp_path: Path
) -> None:
    """Ctrl-C while ansible-playbook starts up: the mkdir beside it completes, the push and
    start it would have sent next are not sent (their tasks' files say so at once), nothing
    is pushed and nothing runs."""
    host = host_spec(ssh_host, "plain")
    work_id = str(uuid.uuid4())
    helper = f"{ssh_host.helper} --base {ssh_host.base}"
    plan = execute.SidePlan(
        mkdir=f"{helper} mkdir {work_id}",
        push=(str(write(tmp_path / "in.txt")),),
        start=f"{helper} run --entry test_entry.sh --wait 5 {work_id} --",
    )
    first = execute.SideCommand.start(host, plan.mkdir, open_master=True)
    assert first is not None
    chain = execute._SideChain(host, plan, first, tmp_path, "run001")
    chain.stopped.set()  # what stop() does before the mkdir's answer came
    chain.thread.start()
    chain.thread.join(timeout=60)
    answers = {k: json.loads(p.read_text()) for k, p in chain.files.items()}
    assert answers["mkdir"]["rc"] == 0
    assert answers["push"] == answers["start"] == {"rc": -1, "stdout": "", "stderr": "not sent"}
    work = Path(ssh_host.base) / work_id
    assert work.is_dir()
    assert not (work / "in.txt").exists()
    assert not (work / ".extcomp" / "started.json").exists(), "the program was never started"


@pytest.mark.parametrize("key_kind", ["plain"], indirect=True)
def test_a_later_run_takes_nothing_from_an_earlier_one(make_spec: SpecFactory) -> None:
    """Each playbook run gets its own settings: once the host was reached, ansible's own ssh
    retries are on (run 1 had them off), and no answer file of run 1 is named in run 2 (it once
    was, through the env files ansible-runner wrote in run 1 and read in every later run)."""
    record = start_part(make_spec("exit", "0"))
    run_part(record.step_id, (Phase.START, Phase.WAIT))
    ansible = StepStore().step_dir(record.step_id) / "ansible"
    runs = [
        json.loads((ansible / "artifacts" / r / "command").read_text())
        for r in ("run001", "run002")
    ]
    assert [r["env"]["ANSIBLE_SSH_RETRIES"] for r in runs] == ["0", "3"]
    assert "step_side_answer" in " ".join(runs[0]["command"])
    assert "step_side" not in " ".join(runs[1]["command"])
    assert not (ansible / "env" / "extravars").exists()
    assert not (ansible / "env" / "envvars").exists()
