"""The extcomp-ssh command line, run as a user would (subprocess), against the real sshd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixtures.sshd import SshHost


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "100"},
    )


def host_flags(ssh_host: SshHost, gated: bool = True) -> list[str]:
    return ssh_host.cli_flags(gated=gated)


def test_help_lists_commands_and_exit_codes() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    for word in ("run", "push", "exec", "pull", "clean", "status", "resume", "check", "252"):
        assert word in out.stdout


def test_step_file_run_with_json(ssh_host: SshHost, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("one two\n")
    step = {
        "name": "sample",
        "host": ssh_host.target,
        "key": str(ssh_host.gated_key),
        "known_hosts": str(ssh_host.known_hosts),
        "helper": ssh_host.helper,
        "remote_base": str(ssh_host.base),
        "inputs": ["in.txt"],
        "results": "out",
        "entry": "execute_remote-side_program_ssh.sh",
        "args": ["--flag", "value"],
    }
    (tmp_path / "step.yml").write_text(yaml.safe_dump(step))
    out = run_cli("run", str(tmp_path / "step.yml"), "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["outcome"] == "succeeded" and result["step_id"].startswith("sample-")
    assert (tmp_path / "out" / "summary.txt").read_text().startswith("in.txt\t1 lines")
    # Flags win over the file; args after -- replace the file's args.
    out = run_cli(
        "run",
        str(tmp_path / "step.yml"),
        "--results",
        str(tmp_path / "o2"),
        "--entry",
        "test_entry.sh",
        "--",
        "exit",
        "9",
        cwd=tmp_path,
    )
    assert out.returncode == 9
    assert "step sample-" in out.stderr and "rc=9" in out.stderr
    listing = json.loads(run_cli("list", "--json").stdout)
    assert len(listing) == 2
    status = json.loads(run_cli("status", listing[0]["step_id"], "--json").stdout)
    assert status["phases_done"] == ["mkdir", "push", "start", "wait", "pull", "clean"]


def test_parts_push_exec_pull_clean(ssh_host: SshHost, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("data\n")
    common = [*host_flags(ssh_host), "--host", ssh_host.target, "--entry", "test_entry.sh"]
    out = run_cli(
        "push",
        *common,
        "--input",
        str(tmp_path / "in.txt"),
        "--results",
        str(tmp_path / "r"),
        "--",
        "copy",
        "in.txt",
        "out.txt",
        "exit",
        "2",
    )
    assert out.returncode == 0, out.stderr
    step_id = out.stdout.strip()
    assert run_cli("exec", step_id).returncode == 2
    remote = json.loads(run_cli("status", step_id, "--remote", "--json").stdout)["remote"]
    assert (remote["state"], remote["rc"]) == ("exited", 2)
    assert run_cli("pull", step_id).returncode == 0
    assert (tmp_path / "r" / "out.txt").read_text() == "data\n"
    assert run_cli("clean", step_id).returncode == 0
    assert not list(ssh_host.base.glob(f"*{step_id}*"))


def test_check_gives_a_verdict(ssh_host: SshHost) -> None:
    good = run_cli("check", ssh_host.target, *host_flags(ssh_host), "--entry", "test_entry.sh")
    assert good.returncode == 0, good.stdout + good.stderr
    lines = good.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == [
        "connect",
        "helper",
        "rsync",
        "entry",
        "base",
        "verdict",
    ]
    assert lines[-1] == "verdict  ready"
    bad = run_cli(
        "check", ssh_host.target, *host_flags(ssh_host), "--entry", "noexec_entry.sh", "--json"
    )
    assert bad.returncode == 126
    checks = {c["check"]: c for c in json.loads(bad.stdout)["checks"]}
    assert checks["entry"]["ok"] is False and "not executable" in checks["entry"]["detail"]
    assert json.loads(bad.stdout)["exit_code"] == 126


def _flags_with(ssh_host: SshHost, flag: str, value: str) -> list[str]:
    flags = host_flags(ssh_host)
    flags[flags.index(flag) + 1] = value
    return flags


def test_check_exits_with_a_code_per_cause(ssh_host: SshHost, tmp_path: Path) -> None:
    """One code per cause, the same a step would exit with (the table in --help)."""
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    cases = {
        127: (host_flags(ssh_host), ["--entry", "no_such_entry.sh"]),
        252: (_flags_with(ssh_host, "--known-hosts", str(empty_known_hosts)), []),
        253: (_flags_with(ssh_host, "--key", str(stranger)), []),
        255: (host_flags(ssh_host), []),
    }
    for code, (flags, extra) in cases.items():
        target = "root@127.0.0.1:1" if code == 255 else ssh_host.target
        out = run_cli("check", target, *flags, *extra)
        assert out.returncode == code, (code, out.stdout, out.stderr)
        assert f"NOT ready (exit {code})" in out.stdout and "Traceback" not in out.stderr
        if code == 252:  # the message names the file to fix
            assert str(empty_known_hosts) in out.stdout


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["run", "--results", "x"], "no host"),
        (["run", "--host", "h", "--bogus"], "unrecognized arguments"),
        (["run", "/nonexistent/step.yml"], "does not exist"),
        (["resume", "no-such-step"], "no step"),
        (["status", "../etc"], "bad step id"),
        (["exec", "x", "--", "arg"], "takes no entry-script arguments"),
    ],
)
def test_usage_errors_are_one_clear_line(args: list[str], text: str) -> None:
    out = run_cli(*args)
    assert out.returncode == 2
    assert text in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_bad_step_file_is_explained(tmp_path: Path) -> None:
    (tmp_path / "s.yml").write_text("host: h\ninputs: 3\n")
    out = run_cli("run", str(tmp_path / "s.yml"))
    assert out.returncode == 2 and "'inputs' has the wrong type" in out.stderr
    (tmp_path / "s.yml").write_text("host: h\ncolour: red\n")
    assert "unknown key 'colour'" in run_cli("run", str(tmp_path / "s.yml")).stderr


def test_a_failure_after_the_push_says_where_the_inputs_are(
    ssh_host: SshHost, tmp_path: Path
) -> None:
    (tmp_path / "in.txt").write_text("secret input\n")
    out = run_cli(
        "run",
        "--host",
        ssh_host.target,
        *host_flags(ssh_host),
        "--input",
        str(tmp_path / "in.txt"),
        "--results",
        str(tmp_path / "r"),
        "--entry",
        "no_such_entry.sh",
    )
    assert out.returncode == 127, out.stderr
    step_id = out.stderr.split()[1]
    assert f"`extcomp-ssh clean {step_id}`" in out.stderr
    assert list(ssh_host.base.glob("*/in.txt")), "the inputs are still on the host, as it says"
    assert run_cli("clean", step_id).returncode == 0
    assert not list(ssh_host.base.glob("*/in.txt"))
