"""Server config: clear errors, and live reload that keeps the last good copy."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import yaml

from webapi.errors import ConfigError
from webapi.server.config import ConfigSource, load_config

GOOD = {
    "data_dir": "data",
    "users_file": "/etc/users.yml",
    "lease_seconds": 30,
    "sites": {"site-a": {"commands": ["sample"], "lease_seconds": 90}},
}


def write(path: Path, doc: object) -> Path:
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return path


def test_good_config(tmp_path: Path) -> None:
    conf = load_config(write(tmp_path / "c.yml", GOOD))
    assert conf.data_dir == tmp_path / "data"  # relative to the config file
    assert conf.site_lease_seconds("site-a") == 90 and conf.site_lease_seconds("x") == 30
    assert conf.sites["site-a"].commands == ("sample",) and conf.tls is None
    assert conf.threads == 64


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"lease_secods": 3}, "did you mean 'lease_seconds'"),
        ({"port": "x"}, "key 'port': expected an integer"),
        ({"port": 70000}, "out of range"),
        ({"sites": {"bad name": {"commands": []}}}, "bad site name"),
        ({"sites": {"s": {"commands": "sample"}}}, "sites.s.commands"),
        ({"sites": {"s": {"commandz": []}}}, "unknown keys"),
        ({"tls": {"cert": "c"}}, "key 'tls'"),
        ({"data_dir": None}, "key 'data_dir'"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, change: dict[str, object], expect: str) -> None:
    path = write(tmp_path / "c.yml", {**GOOD, **change})
    with pytest.raises(ConfigError, match=expect) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_missing_and_unparsable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yml")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_config(write(tmp_path / "c.yml", "a: [1,\n"))
    with pytest.raises(ConfigError, match="missing"):
        load_config(write(tmp_path / "c.yml", {"data_dir": "x"}))


def test_reload_keeps_last_good(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "c.yml", GOOD)
    source = ConfigSource(path)
    assert source.get().lease_seconds == 30
    write(path, {**GOOD, "lease_seconds": 40})
    assert source.get().lease_seconds == 40
    caplog.set_level(logging.WARNING, logger="webapi.server.config")
    write(path, {**GOOD, "lease_seconds": "forty"})
    os.utime(path, ns=(1, 1))  # a distinct signature even on coarse clocks
    assert source.get().lease_seconds == 40
    assert source.get().lease_seconds == 40
    warnings = [r for r in caplog.records if "keeping the last good" in r.getMessage()]
    assert len(warnings) == 1 and "lease_seconds" in warnings[0].getMessage()
    write(path, {**GOOD, "lease_seconds": 50})
    assert source.get().lease_seconds == 50
