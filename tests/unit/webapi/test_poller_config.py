"""Poller config parsing, the seed's retry form, and token-file checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from webapi.errors import ConfigError
from webapi.poller.config import BatchPoll, Retry, load_config, parse_config, parse_retry

GOOD = """
site: site-a
url: https://api.example.org:50443
token_file: token
ca_file: /etc/extcomp-poller/ca.pem
work_base: work
state_dir: /var/lib/extcomp-poller
retry: {count: 3, interval: 10}
claim_wait: 20
commands:
  sample: {argv: [/opt/site/bin/sample-program, --quiet], timeout: 3600, executor: local}
  solver: [/opt/site/bin/solver]
"""


def test_good_config(tmp_path: Path) -> None:
    path = tmp_path / "poller.yml"
    path.write_text(GOOD)
    cfg = load_config(path)
    assert cfg.site == "site-a"
    assert cfg.token_file == tmp_path / "token"
    assert cfg.work_base == tmp_path / "work"
    assert cfg.retry == Retry(3, 10.0)
    assert cfg.claim_wait == 20.0
    assert cfg.commands["sample"].argv == ("/opt/site/bin/sample-program", "--quiet")
    assert cfg.commands["sample"].timeout == 3600
    assert cfg.commands["solver"].executor == "local"
    assert cfg.batch_poll == BatchPoll(5.0, 60.0)  # the default pace of scheduler queries


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"site": None}, "'site' is required"),
        ({"url": "ftp://x"}, "url must start with https://"),
        ({"token_file": None}, "give token_file"),
        ({"bogus": 1}, "unknown keys ['bogus']"),
        ({"commands": {"x": {"argv": "/bin/prog --flag"}}}, "must be a list"),
        ({"commands": {"x": {"argv": []}}}, "non-empty list"),
        ({"commands": {"x": {"argv": ["/p"], "executor": "k8s"}}}, "executor must be one of"),
        ({"commands": {"x": {"argv": ["/p"], "timeout": -1}}}, "timeout must be a number"),
        ({"retry": {"count": 0}}, "retry.count must be an integer >= 1"),
        ({"site": "../etc"}, "letters, digits"),
        ({"batch_poll": 5}, "batch_poll must be {first: SECONDS, max: SECONDS}"),
        ({"batch_poll": {"first": 10, "max": 5}}, "batch_poll.max must be > 0 and >= first"),
        ({"batch_poll": {"first": -1}}, "batch_poll.first must be a number >= 0"),
    ],
)
def test_bad_config_says_why(change: dict[str, object], message: str) -> None:
    data: dict[str, object] = {"site": "s", "url": "http://127.0.0.1:1", "token_file": "/t"}
    data.update(change)
    with pytest.raises(ConfigError, match=r"poller\.yml") as err:
        parse_config(data, source="poller.yml")
    assert message in str(err.value)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the poller config"):
        load_config(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("site: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_config(bad)


def test_parse_retry() -> None:
    assert parse_retry("retry:5,60") == Retry(5, 60.0)
    assert parse_retry("retry:2,0.5") == Retry(2, 0.5)
    for bad in ("retry:5", "retry:x,1", "retry:0,1", "5;60"):
        with pytest.raises(ConfigError, match=r"retry:N,INTERVAL|N must be"):
            parse_retry(bad)


def test_token_file_must_be_private(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("secret-token\n")
    token.chmod(0o644)
    cfg = parse_config({"site": "s", "url": "http://127.0.0.1:1", "token_file": str(token)})
    with pytest.raises(ConfigError, match="chmod 600") as err:
        cfg.read_token()
    assert "secret-token" not in str(err.value)
    token.chmod(0o600)
    assert cfg.read_token() == "secret-token"
    assert "secret" not in repr(parse_config({"site": "s", "url": "http://h", "token": "secret"}))
