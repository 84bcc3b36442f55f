"""Each fault gives a one-line reason and its own exit code, and leaves nothing half-done."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from runner.driver import partial_dir, run_step
from runner.errors import (
    AuthError,
    EntryNotExecutable,
    HostKeyError,
    RemoteMissing,
    StepError,
    TransferError,
    TransportError,
)
from runner.record import StepStore
from runner.steps import HostSpec, Outcome
from tests.fixtures.sshd import SshHost, free_port
from tests.runner.conftest import SpecFactory


def expect(error: type[StepError], code: int, spec: object, text: str) -> StepError:
    with pytest.raises(error) as info:
        run_step(spec)  # type: ignore[arg-type]
    assert info.value.exit_code == code
    assert text in info.value.reason.lower()
    assert "\n" not in info.value.reason, "one line"
    return info.value


def test_unreachable_host(make_spec: SpecFactory) -> None:
    spec = make_spec()
    host = replace(spec.host, port=free_port())  # nothing listens there
    err = expect(TransportError, 255, replace(spec, host=host), "cannot reach")
    assert "connection refused" in err.reason.lower()


def test_wrong_port_with_another_service(make_spec: SpecFactory) -> None:
    """Something else listens there (say a web server): ssh gets no SSH banner.

    Reached once: the mkdir the runner sends beside ansible-playbook's start-up met the failure,
    and the first task takes it as it is instead of trying again (on a host that only times out,
    a second try would double the wait)."""
    accepted: list[int] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]

        def answer() -> None:
            for _ in range(8):
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                accepted.append(1)
                with conn:
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        threading.Thread(target=answer, daemon=True).start()
        spec = make_spec()
        err = expect(
            TransportError, 255, replace(spec, host=replace(spec.host, port=port)), "cannot reach"
        )
    assert str(port) in err.reason
    assert len(accepted) == 1, "one connection per first contact"


def test_auth_refused(make_spec: SpecFactory, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    spec = make_spec()
    expect(AuthError, 253, replace(spec, host=replace(spec.host, key=stranger)), "authentication")


@pytest.mark.parametrize("known", ["empty", "other key"])
def test_host_key_not_pinned_or_changed(
    make_spec: SpecFactory, tmp_path: Path, ssh_host: SshHost, known: str
) -> None:
    kh = tmp_path / "known_hosts"
    if known == "empty":
        kh.write_text("")
    else:
        other = tmp_path / "other"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True
        )
        kind, key = (other.with_suffix(".pub")).read_text().split()[:2]
        kh.write_text(f"[127.0.0.1]:{ssh_host.port} {kind} {key}\n")
    pinned = kh.read_bytes()
    spec = make_spec()
    expect(HostKeyError, 252, replace(spec, host=replace(spec.host, known_hosts=kh)), "host key")
    assert kh.read_bytes() == pinned, "the pinned known_hosts must never be rewritten"


def test_helper_missing(ssh_host: SshHost, tmp_path: Path) -> None:
    from runner.steps import StepSpec
    from tests.runner.conftest import host_spec

    spec = StepSpec(
        host=host_spec(ssh_host, "plain"),
        results_dir=tmp_path / "r",
        helper="/nonexistent/extcomp-remote",
    )
    expect(RemoteMissing, 127, spec, "helper is not installed")


def test_entry_script_missing(make_spec: SpecFactory) -> None:
    expect(RemoteMissing, 127, make_spec(entry="nope.sh"), "not found")


def test_entry_script_not_executable(make_spec: SpecFactory) -> None:
    expect(EntryNotExecutable, 126, make_spec(entry="noexec_entry.sh"), "not executable")


def test_timeout_kills_and_pulls_what_exists(make_spec: SpecFactory) -> None:
    spec = make_spec("touch", "early.txt", "sleep", "60", timeout=1.5)
    result = run_step(spec)
    assert (result.outcome, result.exit_code) == (Outcome.TIMEOUT, 124)
    assert "timeout" in result.reason
    assert (spec.results_dir / "early.txt").exists()


@pytest.fixture
def tiny_base(is_root: bool, tmp_path: Path) -> Iterator[Path]:
    if not is_root:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.root
def test_remote_disk_full(ssh_host: SshHost, tiny_base: Path, tmp_path: Path) -> None:
    from runner.steps import StepSpec
    from tests.runner.conftest import host_spec

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(4 << 20))
    spec = StepSpec(
        host=host_spec(ssh_host, "plain"),
        results_dir=tmp_path / "r",
        inputs=(big,),
        entry="test_entry.sh",
        helper=ssh_host.helper,
        remote_base=str(tiny_base),
    )
    err = expect(TransferError, 251, spec, "disk is full")
    assert "push" in err.reason
    assert not spec.results_dir.exists()
    record = StepStore().list()[0]
    assert record.outcome == Outcome.ERROR and record.exit_code == 251


def test_failed_step_leaves_no_results_dir(make_spec: SpecFactory) -> None:
    spec = make_spec(entry="noexec_entry.sh")
    with pytest.raises(EntryNotExecutable):
        run_step(spec)
    assert not spec.results_dir.exists()
    record = StepStore().list()[0]
    assert not partial_dir(spec, record.step_id).exists()


def test_bad_host_text_is_a_usage_error() -> None:
    for text in ("user@", "a b", "host:99999", "@host"):
        with pytest.raises(StepError) as info:
            HostSpec.parse(text)
        assert info.value.exit_code == 2
