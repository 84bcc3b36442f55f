"""`extcomp-api wf` and our mint-mode poller against OUR server's /mi-distcomp-api/ routes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.webapi.conftest import DEFAULT_CONFIG, RunningServer
from tests.webapi.mintfix import add_mint_users
from tests.webapi.minthelp import (
    JP_STDERR,
    JP_STDOUT,
    REPO,
    finish_wf,
    run_wf,
    start_poller,
    start_wf,
    write_programs,
)
from webapi.client.client import Client
from webapi.mint.codec.wire import with_port

SITE = "mint-t"


@dataclass
class Env:
    server: RunningServer
    tokens: dict[str, str]
    programs: dict[str, Path]
    tmp: Path

    @property
    def ca(self) -> str:
        return str(self.server.ca_file)

    def poller(self, *extra: str, user: str = "mia", site: str = SITE, **kw: object) -> object:
        return start_poller(
            self.server.url,
            site,
            self.tokens[user],
            self.tmp / f"p-{user}",
            self.programs,
            f"no_auth:{self.ca}",
            *extra,
            **kw,
        )  # type: ignore[arg-type]

    def wf(self, command: str, ins: str, outs: str, cwd: Path, **kw: str) -> object:
        user, site = kw.get("user", "mia"), kw.get("site", SITE)
        return run_wf(
            self.server.url,
            site,
            self.tokens[user],
            command,
            ins,
            outs,
            cwd=cwd,
            extra=("--ca-file", self.ca),
        )


@pytest.fixture
def env(make_api_server: Callable[..., RunningServer], tmp_path: Path) -> Env:
    sites = dict(DEFAULT_CONFIG["sites"])
    sites[SITE] = {"commands": ["sample", "fail", "nofile", "sleep", "rogue"]}
    server = make_api_server(sites=sites)
    tokens = add_mint_users(server)
    return Env(server, tokens, write_programs(tmp_path / "bin"), tmp_path)


def native(env: Env, accept_id_hex: str) -> object:
    with Client(env.server.url, env.tokens["mia"], ca_file=env.server.ca_file) as client:
        return client.show("c-" + accept_id_hex.replace("-", ""))


def _accept_id(stderr: str) -> str:
    return stderr.split("registered calc ", 1)[1].split()[0]


def test_success_through_our_server(env: Env, tmp_path: Path) -> None:
    wd = tmp_path / "wf"
    wd.mkdir()
    (wd / "in.txt").write_text("ours")
    poller = env.poller("--once")
    res = env.wf("sample", "in.txt", "out.txt", wd)
    assert res.code == 0, res.stderr  # type: ignore[attr-defined]
    assert poller.wait() == 0, poller.text()  # type: ignore[attr-defined]
    assert (wd / "out.txt").read_text() == "OURS"
    assert "hello from sample" in (wd / JP_STDOUT).read_text()
    assert "a warning" in (wd / JP_STDERR).read_text()
    calc = native(env, _accept_id(res.stderr))  # type: ignore[attr-defined]
    assert calc.state == "succeeded" and calc.user == "mia"  # type: ignore[attr-defined]


def test_failure_and_missing_result_through_our_server(env: Env, tmp_path: Path) -> None:
    poller = env.poller("--once")
    res = env.wf("fail", "", "out.txt", tmp_path / "a")
    assert poller.wait() == 0
    assert res.code == 1  # type: ignore[attr-defined]
    assert "boom: the solver diverged" in (tmp_path / "a" / JP_STDERR).read_text()
    assert (tmp_path / "a" / "out.txt").read_text() == "partial"
    assert native(env, _accept_id(res.stderr)).state == "failed"  # type: ignore[attr-defined]

    poller = env.poller("--once")
    res = env.wf("nofile", "", "out.txt", tmp_path / "b")
    assert poller.wait() == 0
    assert res.code == 1 and "result out.txt did not come back" in res.stderr  # type: ignore[attr-defined]
    assert "made nothing" in (tmp_path / "b" / JP_STDOUT).read_text()


def test_off_allow_list_bad_token_unknown_site(env: Env, tmp_path: Path) -> None:
    poller = env.poller("--once", allow=("sample",))
    res = env.wf("rogue", "", "out.txt", tmp_path / "a")
    assert poller.wait() == 0 and res.code == 1  # type: ignore[attr-defined]
    assert "'rogue' is not on its allow-list" in (tmp_path / "a" / JP_STDERR).read_text()

    env.tokens["eve"] = "ef" * 32  # never registered on the server
    poller = env.poller(user="eve")
    assert poller.wait(20) == 254  # type: ignore[attr-defined]
    res = env.wf("sample", "", "o", tmp_path / "b", user="eve")
    assert res.code == 1 and "access refused" in res.stderr  # type: ignore[attr-defined]
    poller = env.poller(site="nowhere")
    assert poller.wait(20) == 251 and "unknown site" in poller.text()  # type: ignore[attr-defined]
    res = env.wf("sample", "", "o", tmp_path / "c", site="nowhere")
    assert res.code == 1 and "unknown site" in res.stderr  # type: ignore[attr-defined]


@pytest.mark.slow
def test_resume_after_poller_killed_against_our_server(env: Env, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    extra = {"env": {"MINT_TEST_DIR": str(shared)}}
    wf = start_wf(
        env.server.url,
        SITE,
        env.tokens["mia"],
        "sleep",
        "",
        "out.txt",
        tmp_path / "wf",
        "--ca-file",
        env.ca,
    )
    poller = env.poller(**extra)
    runs = shared / "runs.log"
    deadline = time.monotonic() + 30
    while not runs.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runs.exists(), poller.text()  # type: ignore[attr-defined]
    poller.kill()  # type: ignore[attr-defined]
    (shared / "go").touch()
    poller = env.poller("--once", **extra)
    assert poller.wait() == 0, poller.text()  # type: ignore[attr-defined]
    res = finish_wf(wf)
    assert res.code == 0, res.stderr
    assert (tmp_path / "wf" / "out.txt").read_text() == "slept"
    assert len(runs.read_text().split()) == 1


def test_wf_token_file_and_usage(env: Env, tmp_path: Path) -> None:
    token_file = tmp_path / "tok"
    token_file.write_text(env.tokens["mia"] + "\n")
    poller = env.poller("--once")
    argv = [
        sys.executable,
        "-m",
        "webapi.cli",
        "wf",
        env.server.url,
        SITE,
        "-",
        "sample",
        "",
        "out.txt",
        "--token-file",
        str(token_file),
        "--ca-file",
        env.ca,
        "--poll-interval",
        "0.1",
    ]
    wd = tmp_path / "wd"
    wd.mkdir()
    proc = subprocess.run(argv, cwd=wd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert poller.wait() == 0  # type: ignore[attr-defined]
    assert (wd / "out.txt").read_text() == "NONE"
    bad = subprocess.run(
        [*argv[:7], "sample", "in/x.txt", "out.txt"],
        cwd=wd,
        text=True,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode == 2 and "TOKEN '-'" in bad.stderr


def test_wf_timeout_cancels_the_calc(env: Env, tmp_path: Path) -> None:
    res = run_wf(
        env.server.url,
        SITE,
        env.tokens["mia"],
        "sample",
        "",
        "o",
        cwd=tmp_path / "w",
        extra=("--ca-file", env.ca, "--timeout", "1"),
    )
    assert res.code == 1 and "--timeout 1" in res.stderr
    assert native(env, _accept_id(res.stderr)).state == "cancelled"  # type: ignore[attr-defined]


def test_base_url_gets_the_original_port() -> None:
    assert with_port("https://mint.example.org") == "https://mint.example.org:50443"
    assert with_port("https://mint.example.org/") == "https://mint.example.org:50443"
    assert with_port("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    with pytest.raises(ValueError):
        with_port("mint.example.org")


def test_mint_tools_import_without_server_dependencies() -> None:
    code = (
        "import sys\n"
        "for n in ('bottle', 'cheroot'): sys.modules[n] = None\n"
        "import webapi.mint.poller, webapi.mint.poller_cli, webapi.mint.wf, webapi.client.cli\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_poller_positional_form(tmp_path: Path) -> None:
    from webapi.errors import ConfigError
    from webapi.mint.poller_cli import build_parser, config_from_args

    def parse(*argv: str) -> object:
        return config_from_args(build_parser().parse_intermixed_args(list(argv)))

    token_file = tmp_path / "t"
    cfg, opts = parse(
        "s1",
        "https://mint.example.org",
        "-",
        "--token-file",
        str(token_file),
        "retry:2,5",
        "no_auth:/ca.pem",
        "calc_base:/w",
        "debug",
        "--allow",
        "/opt/run.sh=/opt/run.sh",
    )  # type: ignore[misc]
    assert cfg.url == "https://mint.example.org:50443" and cfg.token_file == token_file
    assert (cfg.retry.count, cfg.retry.interval) == (2, 5.0)
    assert cfg.ca_file == Path("/ca.pem") and cfg.verify and opts.debug
    assert cfg.work_base == Path("/w") and cfg.commands["/opt/run.sh"].argv == ("/opt/run.sh",)
    cfg, _ = parse("s1", "https://h", "tok", "port:8443", "no_auth")  # type: ignore[misc]
    assert cfg.url == "https://h:8443" and not cfg.verify and cfg.token == "tok"
    for bad in (
        ["s1", "https://h:1", "t", "port:2"],
        ["s1", "https://h", "-"],
        ["s1", "https://h", "t", "bogus"],
        ["s1", "https://h"],
    ):
        with pytest.raises(ConfigError):
            parse(*bad)
