"""`extcomp-ssh --metrics-textfile-dir`: one Prometheus textfile per step, from a real step
against the real sshd, parsed with prometheus_client's own parser."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from runner.metrics import render
from runner.record import StepRecord
from tests.fixtures.sshd import SshHost


def samples(text: str) -> dict[tuple[str, str], float]:
    """(metric name, phase or direction or '') -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, s.labels.get("phase") or s.labels.get("direction") or "")] = s.value
    return out


@pytest.mark.slow
def test_a_step_writes_its_textfile(ssh_host: SshHost, tmp_path: Path) -> None:
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    data = tmp_path / "in.txt"
    data.write_bytes(b"x" * 1000)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "runner.cli",
            "--metrics-textfile-dir",
            str(textfiles),
            "run",
            "--host",
            ssh_host.target,
            *ssh_host.cli_flags(gated=True),
            "--entry",
            "test_entry.sh",
            "--input",
            str(data),
            "--results",
            str(tmp_path / "results"),
            "--",
            "exit",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 3, out.stderr
    files = list(textfiles.iterdir())
    assert len(files) == 1 and files[0].name.startswith("extcomp-ssh-step-")
    assert files[0].suffix == ".prom"  # and no temp file left beside it
    assert oct(files[0].stat().st_mode & 0o777) == "0o644"
    found = samples(files[0].read_text())
    for phase in ("mkdir", "push", "start", "pull", "clean"):
        assert found[("extcomp_ssh_step_phase_seconds", phase)] > 0
    assert found[("extcomp_ssh_step_bytes", "push")] >= 1000
    assert found[("extcomp_ssh_step_bytes", "pull")] >= 1000
    assert found[("extcomp_ssh_step_exit_code", "")] == 3
    assert found[("extcomp_ssh_step_success", "")] == 0
    assert found[("extcomp_ssh_step_finished_timestamp_seconds", "")] > 0


def test_a_bad_textfile_dir_is_a_usage_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "runner.cli",
            "--metrics-textfile-dir",
            str(tmp_path / "no"),
            "list",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert out.returncode == 2
    assert "not a writable dir" in out.stderr and out.stderr.count("\n") == 1


def test_label_values_are_escaped() -> None:
    record = StepRecord("s-1", {"name": 'we"ird\\name'}, "w", 0.0, exit_code=0)
    record.outcome = "succeeded"
    text = render(record, "host\nx", 1.0)
    family = {f.name: f for f in text_string_to_metric_families(text)}
    sample = family["extcomp_ssh_step_success"].samples[0]
    assert sample.labels == {"step_id": "s-1", "name": 'we"ird\\name', "host": "host\nx"}
    assert sample.value == 1
