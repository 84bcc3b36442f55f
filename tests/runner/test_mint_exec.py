"""`extcomp-ssh mint-exec`: the original MInt SSH sample's command line and contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.errors import UsageError
from runner.mint_exec import entry_name, parse_words
from tests.fixtures.sshd import SshHost


def mint_exec(ssh_host: SshHost, cwd: Path, *words: str) -> subprocess.CompletedProcess[str]:
    flags = ssh_host.cli_flags()
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", "mint-exec", *words, *flags],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )


def test_success_pulls_the_whole_dir_into_the_current_dir(
    ssh_host: SshHost, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("one two three\n")
    (tmp_path / "b.txt").write_text("x\ny\n")
    (tmp_path / "unrelated.txt").write_text("stays")
    out = mint_exec(
        ssh_host,
        tmp_path,
        f"client_name:{ssh_host.target}",
        "client_cmd:execute_remote-side_program_ssh.sh",
        "client_files:a.txt,b.txt",
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "summary.txt").read_text().splitlines() == [
        "a.txt\t1 lines\t3 words\t14 bytes",
        "b.txt\t2 lines\t2 words\t4 bytes",
    ]
    log = (tmp_path / "remote_program_exec.log").read_text()
    assert "sample_program: summarised 2 file(s)" in log and "entry: finished" in log
    assert (tmp_path / "unrelated.txt").read_text() == "stays"
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert leftovers == [], "no helper state or partial dirs left in the module's dir"


def test_failure_exits_1_and_still_returns_the_log(ssh_host: SshHost, tmp_path: Path) -> None:
    out = mint_exec(
        ssh_host, tmp_path, f"client_name:{ssh_host.target}", "client_cmd:fail_entry.sh"
    )
    assert out.returncode == 1
    assert "failing on purpose" in (tmp_path / "remote_program_exec.log").read_text()


def test_transport_failure_exits_1(ssh_host: SshHost, tmp_path: Path) -> None:
    out = mint_exec(ssh_host, tmp_path, "client_name:root@127.0.0.1:1", "client_cmd:x.sh")
    assert out.returncode == 1
    assert "cannot reach" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "words",
    [
        ["client_cmd:x"],
        ["client_name:h"],
        ["client_name:h", "bogus:1"],
        ["client_name:h", "client_name:i", "client_cmd:x"],
    ],
)
def test_bad_words_are_usage_errors(words: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_words(words)


def test_the_samples_path_form_runs_the_sites_entry(ssh_host: SshHost, tmp_path: Path) -> None:
    """The original sample's client_cmd is a path; its base name is the entry, said in one line."""
    outputs = []
    for form in (
        "execute_remote-side_program_ssh.sh",
        "~/misrc_remote_workflow/scripts/execute_remote-side_program_ssh.sh",
    ):
        cwd = tmp_path / str(len(outputs))
        cwd.mkdir()
        (cwd / "a.txt").write_text("one two three\n")
        out = mint_exec(
            ssh_host,
            cwd,
            f"client_name:{ssh_host.target}",
            f"client_cmd:{form}",
            "client_files:a.txt",
        )
        assert out.returncode == 0, out.stderr
        mapped = [ln for ln in out.stderr.splitlines() if "runs the site's entry" in ln]
        assert len(mapped) == ("/" in form)
        outputs.append((cwd / "summary.txt").read_bytes())
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(
    ("cmd", "entry"),
    [
        ("run.sh", "run.sh"),
        ("~/misrc_remote_workflow/scripts/run.sh", "run.sh"),
        ("/opt/site/run.sh", "run.sh"),
    ],
)
def test_entry_name_maps_paths_to_base_names(cmd: str, entry: str) -> None:
    assert entry_name(cmd)[0] == entry


@pytest.mark.parametrize("cmd", ["~/scripts/", "a/..", "a/b;rm", "~/x/run sh"])
def test_entry_name_refuses_what_is_no_entry(cmd: str) -> None:
    with pytest.raises(UsageError, match="client_cmd"):
        entry_name(cmd)
