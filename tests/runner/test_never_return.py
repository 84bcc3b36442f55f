"""The site's never-return list, enforced by extcomp-remote on its host (run directly, no ssh).

What the list names is removed when the program ends, however it ends, and again before any pull
is served; no pull is served while the program runs, and no program starts while one is served.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from runner import resources
from tests.fixtures.sshd import install_site

HELPER = str(resources.helper_script())
NEVER = "*.secret\nlicence/**\n/top-only.txt\nlogs/\n# a comment\n\n"


@pytest.fixture
def host(tmp_path: Path) -> tuple[Path, Path]:
    site, base = tmp_path / "site", tmp_path / "base"
    base.mkdir()
    install_site(site)
    (site / "never-return.conf").write_text(NEVER)
    return site, base


def helper(host: tuple[Path, Path], *args: str) -> subprocess.CompletedProcess[str]:
    site, base = host
    return subprocess.run(
        [sys.executable, HELPER, "--base", str(base), "--site-dir", str(site), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def gate_pull(host: tuple[Path, Path], path: str) -> subprocess.CompletedProcess[str]:
    """What the gate does with a pull (rsync --sender) naming path; rrsync is `true` here, so
    only the gate's own checks and purge run."""
    site, base = host
    env = {
        **os.environ,
        "SSH_ORIGINAL_COMMAND": f"rsync --server --sender -logDtpre.iLsfxCIvu . {path}",
    }
    return subprocess.run(
        [
            sys.executable,
            HELPER,
            "--gate",
            "--base",
            str(base),
            "--site-dir",
            str(site),
            "--rrsync",
            "true",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def answer(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def new_work(host: tuple[Path, Path]) -> tuple[str, Path]:
    work = str(uuid.uuid4())
    answer(helper(host, "mkdir", work))
    return work, host[1] / work


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_the_list_removes_what_it_names_and_nothing_else(
    host: tuple[Path, Path], tmp_path: Path
) -> None:
    work, path = new_work(host)
    outside = tmp_path / "outside"
    (outside / "licence").mkdir(parents=True)
    for name in ("site.secret", "licence/key", "z.txt"):
        (outside / name).write_text("elsewhere")
    files = {
        "licence.secret": "s",
        "sub/deep/key.secret": "s",
        "licence/token": "s",
        "x/licence/y": "s",
        "top-only.txt": "s",
        "sub/top-only.txt": "kept: the pattern is anchored",
        "logs/run.log": "s",
        "sub/logs": "kept: logs/ names dirs only",
        "keep.txt": "kept",
        "notes.secretive": "kept",
        ".extcomp/stdout.log": "kept",
    }
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    (path / "innocent.txt").symlink_to("licence.secret")  # a link to a secret, named innocently
    (path / "abs.txt").symlink_to(outside / "site.secret")
    (path / "outside-dir").symlink_to(outside)  # never entered, so nothing outside is touched
    (path / "licence-link").symlink_to(outside / "licence")  # the dir, not what is in it: kept
    locked = path / "ro"
    locked.mkdir()
    (locked / "in-ro.secret").write_text("s")
    locked.chmod(0o500)  # the program made it read-only: the helper still gets the secret out
    done = answer(helper(host, "purge", work))
    assert done["removed"] == 9
    assert tree(path) == {
        ".extcomp",
        ".extcomp/stdout.log",
        "sub",
        "sub/deep",
        "sub/top-only.txt",
        "sub/logs",
        "keep.txt",
        "notes.secretive",
        "licence",
        "x",
        "x/licence",
        "outside-dir",
        "licence-link",
        "ro",
    }
    assert {p.name for p in outside.rglob("*")} == {"licence", "key", "site.secret", "z.txt"}
    assert answer(helper(host, "purge", work))["removed"] == 0, "idempotent"


def test_the_helpers_own_state_is_never_removed(host: tuple[Path, Path]) -> None:
    site, _ = host
    (site / "never-return.conf").write_text("*.json\n*.log\n")
    work, path = new_work(host)
    answer(helper(host, "run", "--entry", "test_entry.sh", "--wait", "10", work, "--", "exit", "0"))
    status = json.loads((path / ".extcomp" / "status.json").read_text())
    assert (status["state"], status["rc"]) == ("exited", 0)
    assert (path / ".extcomp" / "started.json").exists()
    assert not (path / ".extcomp" / "stdout.log").exists(), "logs are the site's to withhold"
    assert answer(helper(host, "status", work))["state"] == "exited"


@pytest.mark.parametrize("ending", ["exit 0", "exit 3", "timeout", "kill"])
def test_secrets_are_gone_when_the_program_counts_as_ended(
    host: tuple[Path, Path], ending: str
) -> None:
    work, path = new_work(host)
    args = ["put", "licence.secret", "s", "mkdir", "licence", "put", "licence/k", "s"]
    timeout: list[str] = []
    if ending.startswith("exit"):
        args += ["exit", ending.split()[1]]
    else:
        args += ["sleep", "30"]  # test_entry.sh has no clean-up of its own
        timeout = ["--timeout", "0.5"] if ending == "timeout" else []
    answer(helper(host, "run", "--entry", "test_entry.sh", *timeout, work, "--", *args))
    if ending == "kill":
        answer(helper(host, "kill", work))
    status = answer(helper(host, "wait", work, "--max", "30"))
    assert status["state"] == {"timeout": "timeout", "kill": "killed"}.get(ending, "exited")
    assert status["never_return_removed"] == 2
    assert not (path / "licence.secret").exists() and not (path / "licence" / "k").exists()


def test_what_the_program_leaves_running_cannot_write_a_secret_later(
    host: tuple[Path, Path],
) -> None:
    work, path = new_work(host)
    answer(helper(host, "run", "--entry", "test_entry.sh", work, "--", "late", "late.secret", "1"))
    assert answer(helper(host, "wait", work, "--max", "10"))["state"] == "exited"
    time.sleep(1.5)  # past the moment the left-behind process would have written
    assert not (path / "late.secret").exists(), "the program's group ends with it"


def test_no_pull_while_the_program_runs(host: tuple[Path, Path]) -> None:
    work, path = new_work(host)
    answer(
        helper(
            host,
            "run",
            "--entry",
            "test_entry.sh",
            work,
            "--",
            "put",
            "a.secret",
            "s",
            "await",
            "go",
        )
    )
    for proc in (helper(host, "purge", work), gate_pull(host, f"{work}/a.secret")):
        assert proc.returncode == 77, proc.stderr
        assert "still runs" in proc.stderr
    (path / "go").touch()
    assert answer(helper(host, "wait", work, "--max", "10"))["state"] == "exited"
    pulled = gate_pull(host, f"{work}/a.secret")
    assert pulled.returncode == 0, pulled.stderr
    assert not (path / "a.secret").exists()


def test_no_start_while_a_pull_is_served(host: tuple[Path, Path]) -> None:
    work, path = new_work(host)
    fd = os.open(path / ".extcomp", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # what the gate holds while rsync sends
        proc = helper(host, "run", "--entry", "test_entry.sh", work, "--", "exit", "0")
        assert proc.returncode == 75 and "pull of it is being served" in proc.stderr
    finally:
        os.close(fd)
    assert answer(helper(host, "status", work))["state"] == "created"


def test_a_program_whose_supervisor_died_is_stopped_before_a_pull(
    host: tuple[Path, Path],
) -> None:
    work, path = new_work(host)
    started = answer(
        helper(
            host,
            "run",
            "--entry",
            "test_entry.sh",
            work,
            "--",
            "put",
            "a.secret",
            "s",
            "sleep",
            "60",
        )
    )
    os.kill(int(str(started["supervisor"])), signal.SIGKILL)
    program = int(str(started["pid"]))
    deadline = time.monotonic() + 10
    while answer(helper(host, "status", work))["state"] != "lost":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert Path(f"/proc/{program}").exists(), "the program outlived its supervisor"
    assert answer(helper(host, "purge", work))["removed"] == 1
    assert not (path / "a.secret").exists()
    stat = Path(f"/proc/{program}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_an_unusable_list_refuses_every_pull(host: tuple[Path, Path]) -> None:
    site, _ = host
    work, _ = new_work(host)
    (site / "never-return.conf").write_text("*.secret\n/\n")
    proc = helper(host, "purge", work)
    assert proc.returncode == 78 and "bad never-return pattern '/'" in proc.stderr
    assert gate_pull(host, f"{work}/").returncode == 78
    check = answer(helper(host, "check", "--entry", "test_entry.sh"))
    assert "bad never-return pattern" in str(check["never_return_patterns"])
    assert (
        subprocess.run(
            [sys.executable, HELPER, "--check-never-return", str(site / "never-return.conf")],
            capture_output=True,
        ).returncode
        == 78
    )
    (site / "never-return.conf").write_text(NEVER)
    assert answer(helper(host, "check", "--entry", "test_entry.sh"))["never_return_patterns"] == 4


def apply_site_files(tmp_path: Path, never_return: list[str]) -> subprocess.CompletedProcess[str]:
    """The ssh_target role's site files (helper, scripts, never-return list) into a local dir."""
    play = tmp_path / "play.yml"
    site = tmp_path / "role-site"
    play.write_text(
        json.dumps(
            [
                {
                    "name": "Site files",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Install the site files",
                            "ansible.builtin.include_role": {
                                "name": "ssh_target",
                                "tasks_from": "site_files.yml",
                            },
                            "vars": {
                                "ssh_target_site_dir": str(site),
                                "ssh_target_files_owner": str(os.getuid()),
                                "ssh_target_python": sys.executable,
                                "ssh_target_never_return": never_return,
                            },
                        }
                    ],
                }
            ]
        )
    )
    bin_dir = Path(sys.executable).parent
    return subprocess.run(
        [
            *(str(bin_dir / "ansible-playbook"), "-i", "localhost,", str(play)),
            *("-e", f"ansible_python_interpreter={sys.executable}"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "ANSIBLE_CONFIG": str(resources.ansible_cfg()),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        },
    )


@pytest.mark.slow
def test_the_role_writes_the_list_the_helper_reads(tmp_path: Path) -> None:
    done = apply_site_files(tmp_path, ["*.secret", "licence/**"])
    assert done.returncode == 0, done.stdout[-3000:]
    conf = tmp_path / "role-site" / "never-return.conf"
    lines = [ln for ln in conf.read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines == ["*.secret", "licence/**"]
    assert conf.stat().st_mode & 0o777 == 0o644
    site, base = tmp_path / "role-site", tmp_path / "base"
    base.mkdir()
    assert answer(helper((site, base), "check"))["never_return_patterns"] == 2
    bad = apply_site_files(tmp_path, ["*.secret", "/"])
    assert bad.returncode != 0 and "bad never-return pattern" in bad.stdout
    assert conf.read_text().count("licence/**") == 1, "a bad list is never written"
