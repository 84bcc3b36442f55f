"""Every console script's --help and usage errors work whichever extra is installed: a host gets
only its extra (the poller host `poll`, the API server `api`, …), and a missing package of
another extra must never turn `--help` into a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# What each extra brings beyond the core (PyYAML); blocked below when "not installed".
EXTRA_PACKAGES = {
    "ssh": ("ansible", "ansible_runner"),
    "api": ("bottle", "cheroot"),
    "poll": ("requests", "urllib3"),
}
LAUNCH = (
    "import sys\n"
    "for name in sys.argv[1].split(','):\n"
    "    if name: sys.modules[name] = None\n"
    "entry = sys.argv[2]\n"
    "module, func = entry.split(':')\n"
    "import importlib\n"
    "sys.argv = [sys.argv[3], *sys.argv[4:]]\n"
    "sys.exit(getattr(importlib.import_module(module), func)())\n"
)
SCRIPTS = {
    "extcomp-ssh": "runner.cli:main",
    "extcomp-api": "webapi.cli:main",
    "extcomp-poller": "webapi.poller.cli:main",
}
CASES = [
    ("extcomp-ssh", ["--help"], 0),
    ("extcomp-ssh", ["run", "--help"], 0),
    ("extcomp-ssh", ["run"], 2),
    ("extcomp-api", ["--help"], 0),
    ("extcomp-api", ["submit", "--help"], 0),
    ("extcomp-api", ["calcs", "wait", "--help"], 0),
    ("extcomp-api", ["serve", "--help"], 0),
    ("extcomp-api", ["wf", "--help"], 0),
    ("extcomp-api", ["submit"], 2),
    ("extcomp-api", ["bogus"], 2),
    ("extcomp-poller", ["--help"], 0),
    ("extcomp-poller", ["--protocol", "mint", "--help"], 0),
    ("extcomp-poller", ["cleanup", "--help"], 0),
    ("extcomp-poller", [], 2),
]


@pytest.mark.parametrize("extra", ["ssh", "api", "poll", "none"])
def test_help_and_usage_errors_with_only_one_extra(extra: str) -> None:
    blocked = [p for name, pkgs in EXTRA_PACKAGES.items() if name != extra for p in pkgs]
    failures = []
    for script, argv, want in CASES:
        proc = subprocess.run(
            [sys.executable, "-c", LAUNCH, ",".join(blocked), SCRIPTS[script], script, *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if proc.returncode != want or "Traceback" in proc.stderr:
            failures.append(f"{script} {' '.join(argv)} → {proc.returncode}: {proc.stderr[-300:]}")
    assert not failures, "\n".join(failures)


# Commands that need another extra's package: one line naming the extra, exit 2, no traceback.
NEEDS = [
    ("extcomp-api", ["calcs", "list", "--url", "https://127.0.0.1:9", "--token", "x"], "poll"),
    ("extcomp-api", ["--config", "/nonexistent.yml", "serve"], "api"),
    ("extcomp-poller", ["--config", "{poller.yml}"], "poll"),
]
POLLER_CONFIG = (
    "site: s\nurl: https://127.0.0.1:9\ntoken: x\nwork_base: {tmp}/work\n"
    "state_dir: {tmp}/state\ncommands: {{x: {{argv: [/bin/true]}}}}\n"
)


@pytest.mark.parametrize(("script", "argv", "extra"), NEEDS)
def test_a_command_without_its_extra_names_it(
    script: str, argv: list[str], extra: str, tmp_path: Path
) -> None:
    (tmp_path / "poller.yml").write_text(POLLER_CONFIG.format(tmp=tmp_path))
    argv = [str(tmp_path / "poller.yml") if a == "{poller.yml}" else a for a in argv]
    blocked = EXTRA_PACKAGES[extra]
    proc = subprocess.run(
        [sys.executable, "-c", LAUNCH, ",".join(blocked), SCRIPTS[script], script, *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and f"mint-extcomp[{extra}]" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
