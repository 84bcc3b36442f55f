"""Fixtures for SSH-mode tests: build step specs against the real test sshd."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from runner.steps import HostSpec, StepSpec
from tests.fixtures.sshd import SshHost

SpecFactory = Callable[..., StepSpec]


@pytest.fixture
def key_kind(request: pytest.FixtureRequest) -> str:
    """Which key a step uses: the gated one (restricted to the helper's verbs), as sites deploy
    it. A test about the unrestricted key as well says so with `BOTH_KEYS`."""
    return str(getattr(request, "param", "gated"))


# Run a test once with the unrestricted key and once through the forced-command gate.
BOTH_KEYS = pytest.mark.parametrize("key_kind", ["plain", "gated"], indirect=True)


def host_spec(ssh_host: SshHost, kind: str = "plain") -> HostSpec:
    key = ssh_host.gated_key if kind == "gated" else ssh_host.key
    return HostSpec.parse(ssh_host.target, key=key, known_hosts=ssh_host.known_hosts)


@pytest.fixture
def make_spec(ssh_host: SshHost, tmp_path: Path, key_kind: str) -> SpecFactory:
    def factory(*args: str, **changes: Any) -> StepSpec:
        spec = StepSpec(
            host=host_spec(ssh_host, key_kind),
            results_dir=tmp_path / "results",
            args=tuple(args),
            entry="test_entry.sh",
            helper=ssh_host.helper,
            remote_base=str(ssh_host.base),
            reconnect_attempts=3,
        )
        return replace(spec, **changes)

    return factory


def write(path: Path, text: str = "x\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def pytest_configure(config: pytest.Config) -> None:
    # pyproject.toml (not ours to edit here) lists slow and root; register drill if it does not.
    if not any(str(m).startswith("drill:") for m in config.getini("markers")):
        config.addinivalue_line(
            "markers",
            "drill: fault drills with the real fault (kill -9, full disk, cut link, ...); "
            "run in CI",
        )
