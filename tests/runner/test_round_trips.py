"""Round trips a step saves (mkdir, push and start beside ansible-playbook's start-up, mkdir and
start in one round trip when there is nothing to push; the pull of a program that ended within
the start's answer beside the playbook; clean beside its shutdown; no purge after a final answer
that carries the supervisor's own) and the fallbacks when it can't.

Against the real test sshd; what each playbook run did is read from ansible-runner's own job
events, the step's audit log.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner import execute, resources
from runner.driver import run_part, run_step, start_part
from runner.record import StepStore
from runner.steps import HostSpec, Outcome, Phase, StepSpec
from tests.fixtures.sshd import SshHost, install_helper, start_sshd, stop_sshd
from tests.runner.conftest import BOTH_KEYS, SpecFactory, host_spec, write

MKDIR = "Create the work dir on the host"
PUSH = "Push the input files"
START = "Start the entry script, detached from this connection"
WAIT = "Wait for the entry script to finish"
PURGE = "Remove what must never leave the host"
PULL = "Pull the whole work dir back"
CLEAN = "Remove the work dir from the host"
UUID_RE = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
ID = "ID"


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
    # One round trip (`run --mkdir`) answered both tasks: each took the same answer.
    mkdir_res, start_res = ran[MKDIR]["event_data"]["res"], ran[START]["event_data"]["res"]
    assert mkdir_res.get("answered_beside") is start_res.get("answered_beside") is True
    assert mkdir_res["stdout"] == start_res["stdout"]
    assert mkdir_res["changed"] is True  # created by this step
    assert start_res["changed"] is True  # started by this step, once
    assert ran[PULL]["event_data"]["res"].get("answered_beside") is True
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
        sent.append(UUID_RE.sub(ID, command))
        return real(cls, host, UUID_RE.sub("not-an-id", command), **kw)

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
    # The first, `run --mkdir`, refused: the tasks send mkdir and start, and nothing is pulled
    # beside the playbook; the clean beside it is refused as well.
    assert [c.split()[3:5] for c in side_commands_fail] == [["run", "--mkdir"], ["clean", ID]]
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


@pytest.mark.slow
def test_the_secret_stays_with_a_pull_beside_the_playbook(
    secret_host: SshHost, tmp_path: Path
) -> None:
    """The runner pulls beside the playbook only after an answer that carries the supervisor's
    own purge; through the unrestricted key (no gate purging the pull) the secret still stays."""
    spec = StepSpec(
        host=host_spec(secret_host, "plain"),
        results_dir=tmp_path / "results",
        args=("write", "a.secret", "1", "write", "b.bin", "1"),
        entry="test_entry.sh",
        helper=secret_host.helper,
        remote_base=str(secret_host.base),
    )
    result = run_step(spec)
    assert (result.outcome, result.exit_code) == (Outcome.SUCCEEDED, 0)
    ran = events(result.step_id, 1)
    assert ran[PULL]["event_data"]["res"].get("answered_beside") is True
    assert ran[PURGE]["event"] == "runner_on_skipped"
    assert result.results_dir is not None
    assert (result.results_dir / "b.bin").stat().st_size == 1 << 20
    assert not (result.results_dir / "a.secret").exists()
    assert StepStore().load(result.step_id).remote["never_return_removed"] == 1


@pytest.mark.parametrize("key_kind", ["plain"], indirect=True)
def test_a_program_that_runs_on_is_pulled_by_the_playbook(
    make_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start's answer that says `running` is no cue for a pull: the playbook waits, then
    pulls itself."""
    monkeypatch.setattr("runner.driver.START_WAIT_S", 0)
    result = run_step(make_spec("sleep", "1", "write", "out.bin", "1"))
    assert (result.outcome, result.exit_code) == (Outcome.SUCCEEDED, 0)
    ran = events(result.step_id, 1)
    assert json.loads(ran[START]["event_data"]["res"]["stdout"])["state"] == "running"
    assert ran[WAIT]["event"] == "runner_on_ok"
    assert "answered_beside" not in ran[PULL]["event_data"]["res"]
    assert result.results_dir is not None
    assert (result.results_dir / "out.bin").stat().st_size == 1 << 20


@pytest.mark.slow
def test_a_helper_without_mkdir_on_run_gets_mkdir_then_start(
    ssh_host: SshHost, tmp_path: Path
) -> None:
    """A host whose helper predates `run --mkdir` (0.3) refuses it as a usage error; the runner
    then sends mkdir and start one by one, still beside the start-up."""
    source = (resources.remote_dir() / "extcomp-remote").read_text()
    option = (
        '    run.add_argument("--mkdir", action="store_true", '
        'help="create the work dir first, as `mkdir`")\n'
    )
    assert option in source
    old = tmp_path / "old-helper.py"
    old.write_text(source.replace(option, "").replace("if args.mkdir:", "if False:"))
    installed = ssh_host.site_dir / "bin" / f"extcomp-remote-0.3-{uuid.uuid4().hex[:8]}"
    install_helper(old, installed)  # beside the real one: the same site dir
    spec = StepSpec(
        host=host_spec(ssh_host, "plain"),
        results_dir=tmp_path / "results",
        args=("echo", "hi"),
        entry="test_entry.sh",
        helper=str(installed),
        remote_base=str(ssh_host.base),
    )
    result = run_step(spec)
    assert (result.outcome, result.exit_code) == (Outcome.SUCCEEDED, 0)
    ran = events(result.step_id, 1)
    mkdir_res, start_res = ran[MKDIR]["event_data"]["res"], ran[START]["event_data"]["res"]
    assert mkdir_res.get("answered_beside") is start_res.get("answered_beside") is True
    assert set(json.loads(mkdir_res["stdout"])) == {"dir", "rsync_dir", "created"}
    assert json.loads(start_res["stdout"])["state"] == "exited"
    assert ran[PULL]["event_data"]["res"].get("answered_beside") is True
