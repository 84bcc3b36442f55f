"""Whole steps against the real sshd, with the unrestricted key and through the gate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner import resources
from runner.driver import run_step
from runner.errors import UsageError
from runner.record import StepStore
from runner.steps import Outcome
from tests.fixtures.sshd import SshHost, start_sshd, stop_sshd
from tests.runner.conftest import BOTH_KEYS, SpecFactory, host_spec, write


def test_sample_entry_script_summarises_inputs(make_spec: SpecFactory, tmp_path: Path) -> None:
    inp = write(tmp_path / "in.txt", "hello world\nsecond line\n")
    spec = make_spec("a b", "ü$x;`id`", entry="execute_remote-side_program_ssh.sh", inputs=(inp,))
    result = run_step(spec)
    assert (result.outcome, result.exit_code, result.remote_rc) == (Outcome.SUCCEEDED, 0, 0)
    out = spec.results_dir
    assert (out / "summary.txt").read_text().startswith("in.txt\t2 lines\t4 words")
    # Arguments arrive as argv, untouched by any shell on the way.
    assert "arguments: a b ü$x;`id`" in (out / "remote_program_exec.log").read_text()
    assert not (out / "licence.secret").exists(), "the entry script deletes it before the pull"
    assert result.bytes_pushed == inp.stat().st_size
    assert result.bytes_pulled > 0
    assert set(result.seconds) == {"mkdir", "push", "start", "wait", "pull", "clean"}


@BOTH_KEYS
def test_exit_code_of_the_remote_program_is_propagated(make_spec: SpecFactory) -> None:
    result = run_step(make_spec("echo", "out", "echoerr", "bad thing", "exit", "3"))
    assert (result.outcome, result.exit_code, result.remote_rc) == (Outcome.FAILED, 3, 3)
    logs = result.results_dir / ".extcomp"
    assert (logs / "stdout.log").read_text() == "out\n"
    assert (logs / "stderr.log").read_text() == "bad thing\n"


@BOTH_KEYS
def test_dirs_and_files_in_and_the_whole_dir_out(make_spec: SpecFactory, tmp_path: Path) -> None:
    write(tmp_path / "data" / "a.txt", "A")
    write(tmp_path / "data" / "sub" / "b.txt", "B")
    single = write(tmp_path / "single.txt", "S")
    os.chmod(single, 0o640)
    spec = make_spec(
        "copy", "data", "copied", "write", "new.bin", "1", inputs=(tmp_path / "data/", single)
    )
    result = run_step(spec)
    assert result.exit_code == 0
    out = spec.results_dir
    assert (out / "data" / "sub" / "b.txt").read_text() == "B"
    assert (out / "copied" / "a.txt").read_text() == "A"
    assert (out / "new.bin").stat().st_size == 1 << 20
    assert (out / "single.txt").stat().st_mode & 0o777 == 0o640  # archive mode


def test_exclude_patterns_are_not_pulled(make_spec: SpecFactory) -> None:
    spec = make_spec("touch", "keep.txt", "touch", "big.tmp", exclude=("*.tmp",))
    run_step(spec)
    assert (spec.results_dir / "keep.txt").exists()
    assert not (spec.results_dir / "big.tmp").exists()


def test_secrets_deleted_remotely_never_come_back(make_spec: SpecFactory) -> None:
    spec = make_spec("secret", "touch", "public.txt")
    run_step(spec)
    names = {p.name for p in spec.results_dir.rglob("*")}
    assert "public.txt" in names
    assert not names & {"x.secret", "secret", "key"}


def test_remote_dir_removed_unless_kept(make_spec: SpecFactory, ssh_host: SshHost) -> None:
    before = set(ssh_host.base.iterdir())
    run_step(make_spec())
    assert set(ssh_host.base.iterdir()) == before
    kept = run_step(make_spec(keep_remote=True, results_dir=make_spec().results_dir.with_name("k")))
    record = StepStore().load(kept.step_id)
    assert (ssh_host.base / record.work_id / "remote_program_exec.log").is_file()
    assert "clean" not in record.phases_done


def test_non_empty_results_dir_needs_force(make_spec: SpecFactory, ssh_host: SshHost) -> None:
    spec = make_spec("touch", "new.txt")
    old = write(spec.results_dir / "old.txt")
    before = set(ssh_host.base.iterdir())
    with pytest.raises(UsageError, match="not empty"):
        run_step(spec)
    assert old.exists(), "nothing local is touched"
    assert set(ssh_host.base.iterdir()) == before, "nothing was sent to the host"
    run_step(make_spec("touch", "new.txt", force=True))
    assert sorted(p.name for p in spec.results_dir.iterdir()) == [
        ".extcomp",
        "new.txt",
        "remote_program_exec.log",
    ]


def test_missing_input_is_a_usage_error_before_connecting(
    make_spec: SpecFactory, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="does not exist") as info:
        run_step(make_spec(inputs=(tmp_path / "nope.txt",)))
    assert info.value.exit_code == 2
    assert not (tmp_path / "state" / "steps").exists()


def helper_0_1(dest: Path) -> None:
    """extcomp-remote as far as 0.1 differs here: without the `purge` (and `sweep`) verbs."""
    text = resources.helper_script().read_text()
    verbs = '"kill", "purge", "clean", "sweep")'  # VERBS
    parsers = '"kill", "purge", "clean")'  # the verbs that take a work id
    assert text.count(verbs) == 1 and text.count(parsers) == 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = text.replace(verbs, '"kill", "clean")').replace(parsers, '"kill", "clean")')
    dest.write_text(old)
    dest.chmod(0o755)


@pytest.mark.parametrize("key", ["plain", "gated"])
def test_a_helper_older_than_0_2_still_serves_steps(
    make_spec: SpecFactory, ssh_host: SshHost, tmp_path: Path, key: str
) -> None:
    """Hosts keep their helper until the site re-runs its set-up: the runner's `purge` before the
    pull meets "invalid choice" (unrestricted key) or the gate's "verb must be one of"."""
    if key == "plain":
        old = ssh_host.site_dir / "bin" / f"extcomp-remote-0.1-{os.getpid()}"  # same site dir
        helper_0_1(old)
        try:
            spec = make_spec("touch", "out.txt", helper=str(old), host=host_spec(ssh_host, "plain"))
            result = run_step(spec)
        finally:
            old.unlink()
    else:
        other = start_sshd(tmp_path / "old-host")
        try:
            helper_0_1(Path(other.helper))
            spec = make_spec(
                "touch",
                "out.txt",
                host=host_spec(other, "gated"),
                helper=other.helper,
                remote_base=str(other.base),
            )
            result = run_step(spec)
        finally:
            stop_sshd(other)
    assert result.exit_code == 0, result
    assert (spec.results_dir / "out.txt").exists()
