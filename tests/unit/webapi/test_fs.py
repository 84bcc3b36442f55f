"""One way to write files: atomic replace, nothing half-written, one temp-name rule."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from webapi.errors import ConfigError
from webapi.fs import atomic_file, is_temp, load_yaml_config, write_atomic, write_secret


def test_write_atomic_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_a_failed_write_keeps_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as fh:
        fh.write(b"half")
        raise RuntimeError("crash")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f"]


def test_temp_names_are_recognised(tmp_path: Path) -> None:
    seen: list[str] = []
    with atomic_file(tmp_path / "f") as fh:
        seen = [p.name for p in tmp_path.iterdir()]
        fh.write(b"x")
    assert len(seen) == 1 and is_temp(seen[0]) and not is_temp("f")


def test_secret_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "d" / "token"
    write_secret(path, "s3cret\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_yaml_config_errors_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "c.yml"
    bad.write_text("a: 1\n b: [\n")
    with pytest.raises(ConfigError, match=r"c\.yml: invalid YAML at line 2"):
        load_yaml_config(bad, "test config")
    with pytest.raises(ConfigError, match="cannot read the test config"):
        load_yaml_config(tmp_path / "missing.yml", "test config")
