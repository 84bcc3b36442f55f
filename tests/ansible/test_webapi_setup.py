"""setup_api_server + setup_poller for real (service manager none), a calc round trip, retire.

Both roles install into a temp dir for throwaway service accounts on this machine, reached as root
through the fixture sshd. The test then starts the server and the poller with the very command
lines the roles print (the ExecStart of their units), as those accounts, and submits a calc.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ansible.helpers import (
    PlayResult,
    connection_vars,
    ok,
    remove_account,
    run_playbook,
    throwaway_account,
    world_readable_tmpdir,
)
from tests.fixtures.sshd import free_port, start_sshd, stop_sshd
from tests.fixtures.tls import make_tls
from webapi.client.client import Client
from webapi.errors import ApiError, Exit

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="creates accounts: needs root"),
]

SAMPLE = """#!/bin/sh
# Allow-listed test program: report who ran it and count the words of its inputs.
set -eu
{ echo "ran as $(id -un) with: $*"; cat ./*.txt | wc -w; } > result.out
"""


@dataclass
class ApiWorld:
    root: Path
    site: str
    api_user: str
    poller_user: str
    url: str
    ca: Path
    inventory: dict[str, Any]
    runs: dict[str, PlayResult]
    client_token: str
    poller_token: str
    poller: subprocess.Popen[bytes]
    api_vars: dict[str, Any]
    poller_vars: dict[str, Any]

    def client(self, token: str | None = None) -> Client:
        return Client(self.url, token or self.client_token, ca_file=self.ca, poll_interval=0.2)


def _as(user: str, command: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            ["runuser", "-u", user, "--", *shlex.split(command)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"server did not listen on {port}: {log.read_text()}")


def _repacked(wheel: Path, into: Path) -> Path:
    """The same wheel (name, files) with other bytes: what new sources of the same version give."""
    into.mkdir()
    out = into / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info), compress_type=zipfile.ZIP_STORED)
    return out


def _token(api: dict[str, Any], user: str, label: str) -> str:
    cli = [
        "runuser",
        "-u",
        api["api_server_user"],
        "--",
        f"{api['api_server_install_dir']}/venv/bin/extcomp-api",
        "--config",
        f"{api['api_server_config_dir']}/config.yml",
        "users",
        "token",
        user,
        "--label",
        label,
    ]
    done = subprocess.run(cli, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def world() -> Iterator[ApiWorld]:
    root = world_readable_tmpdir("extcomp-ansible-api-")
    api_user, poller_user = throwaway_account(), throwaway_account()
    site = f"s{poller_user[-6:]}"
    host = start_sshd(root / "admin")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cert, key = make_tls(root / "tls")
        key.chmod(0o644)  # test only: the server account must read it (in real life: group)
        (root / "cron.d").mkdir()
        program = root / "bin" / "sample.sh"
        program.parent.mkdir()
        program.write_text(SAMPLE)
        program.chmod(0o755)
        wheels = root / "wheels"
        port = free_port()
        url = f"https://127.0.0.1:{port}"
        conn = connection_vars(host)
        api_vars: dict[str, Any] = {
            **conn,
            "api_server_user": api_user,
            "api_server_home": str(root / "api-home"),
            "api_server_install_dir": str(root / "api"),
            "api_server_wheel_dir": str(wheels),
            # Not root's pyenv python: the venv must be usable by the service account.
            "api_server_python": "/usr/bin/python3",
            "api_server_config_dir": str(root / "api-etc"),
            "api_server_data_dir": str(root / "api-var" / "data"),
            "api_server_users_file": str(root / "api-var" / "users.yml"),
            "api_server_log_dir": str(root / "api-log"),
            "api_server_listen": "127.0.0.1",
            "api_server_port": port,
            "api_server_tls_cert": str(cert),
            "api_server_tls_key": str(key),
            "api_server_sites": {site: {"commands": ["sample"]}, "other": {"commands": ["x"]}},
            "api_server_settings": {"claim_wait_max": 2, "heartbeat_seconds": 1, "threads": 16},
            "api_server_users": [{"name": "mint"}, {"name": "boss", "admin": True}],
            "api_server_service_manager": "none",
            "api_server_logrotate_dir": str(root / "logrotate.d"),
        }
        (root / "logrotate.d").mkdir()
        poller_vars: dict[str, Any] = {
            **conn,
            "poller_host_site": site,
            "poller_host_url": url,
            "poller_host_user": poller_user,
            "poller_host_home": str(root / "poller-home"),
            "poller_host_install_dir": str(root / "poller"),
            "poller_host_wheel_dir": str(wheels),
            "poller_host_python": "/usr/bin/python3",
            "poller_host_config_dir": str(root / "poller-etc"),
            "poller_host_state_dir": str(root / "poller-var" / "state"),
            "poller_host_work_base": str(root / "poller-var" / "work"),
            "poller_host_ca_file": str(cert),
            "poller_host_claim_wait": 2,
            "poller_host_retry_count": 2,
            "poller_host_retry_interval": 1,
            "poller_host_commands": {"sample": {"argv": [str(program)], "timeout": 60}},
            "poller_host_service_manager": "none",
            "poller_host_cleanup_manager": "cron",
            "poller_host_cron_dir": str(root / "cron.d"),
        }
        inventory: dict[str, Any] = {
            "all": {
                "children": {
                    "api_servers": {"hosts": {"api": api_vars}},
                    "pollers": {"hosts": {"poller": poller_vars}},
                }
            }
        }
        private = root / "runner"
        runs: dict[str, PlayResult] = {}
        runs["api1"] = ok(run_playbook("setup_api_server.yml", inventory, private))
        runs["api2"] = run_playbook("setup_api_server.yml", inventory, private)
        runs["apicheck"] = run_playbook("setup_api_server.yml", inventory, private, check=True)

        serve = runs["api1"].debug_msgs("Show the server's command line (service manager none)")
        assert len(serve) == 1, runs["api1"].stdout[-3000:]
        log = root / "server.out"
        server = _as(api_user, str(serve[0]), log)
        procs.append(server)
        _wait_port(port, server, log)
        client_token = _token(api_vars, "mint", "workflow")
        poller_token = _token(api_vars, "mint", f"poller:{site}")

        # The poller: from the wheel the api_server role built (a file this time, not the repo).
        wheel = next(wheels.glob("mint_extcomp-*.whl"))
        poller_vars["poller_host_package_src"] = str(wheel)
        poller_vars["poller_host_token"] = poller_token
        runs["poll1"] = ok(run_playbook("setup_poller.yml", inventory, private))
        runs["poll2"] = run_playbook("setup_poller.yml", inventory, private)
        runs["pollcheck"] = run_playbook("setup_poller.yml", inventory, private, check=True)
        poller_vars["poller_host_package_src"] = str(_repacked(wheel, root / "wheels-new"))
        runs["pollwheel"] = run_playbook("setup_poller.yml", inventory, private)
        cmd = runs["poll1"].debug_msgs("Show the poller's command line (service manager none)")
        assert len(cmd) == 1, runs["poll1"].stdout[-3000:]
        poller = _as(poller_user, str(cmd[0]), root / "poller.out")
        procs.append(poller)
        yield ApiWorld(
            root=root,
            site=site,
            api_user=api_user,
            poller_user=poller_user,
            url=url,
            ca=cert,
            inventory=inventory,
            runs=runs,
            client_token=client_token,
            poller_token=poller_token,
            poller=poller,
            api_vars=api_vars,
            poller_vars=poller_vars,
        )
    finally:
        for proc in reversed(procs):
            _stop(proc)
        stop_sshd(host)
        remove_account(api_user)
        remove_account(poller_user)
        shutil.rmtree(root, ignore_errors=True)


def test_setup_changes_things_then_nothing(world: ApiWorld) -> None:
    assert world.runs["api1"].changed > 0 and world.runs["poll1"].changed > 0
    for name in ("api2", "poll2", "apicheck", "pollcheck"):
        run = ok(world.runs[name])
        assert run.changed == 0, (name, run.changed_tasks())


def test_a_new_venv_notifies_the_service_restart(world: ApiWorld) -> None:
    # Service manager none: the restart handlers are notified, then skipped by their own `when`.
    # In api1 only the venv install notifies the server's (config edits need no restart).
    assert world.runs["api1"].notified() == ["api_server : Restart the server"]
    assert world.runs["api2"].notified() == []
    # A wheel with other bytes is force-reinstalled, and that alone restarts the poller.
    run = ok(world.runs["pollwheel"])
    assert run.changed_tasks() == [
        "Copy the wheel to the host",
        "Create the venv and install the package with its extra",
    ]
    assert run.notified() == ["poller_host : Restart the poller"]


def test_files_modes_and_owners(world: ApiWorld) -> None:
    etc = Path(world.poller_vars["poller_host_config_dir"])
    token = etc / f"{world.site}.token"
    assert token.stat().st_mode & 0o777 == 0o600
    assert token.owner() == world.poller_user
    assert token.read_text().strip() == world.poller_token
    config = yaml.safe_load((etc / f"{world.site}.yml").read_text())
    assert config["site"] == world.site and config["token_file"] == str(token)
    assert "token" not in config
    venv = Path(world.poller_vars["poller_host_install_dir"]) / "venv"
    check = "import importlib.util as u; print(u.find_spec('bottle'), u.find_spec('ansible'))"
    found = subprocess.run([venv / "bin" / "python", "-c", check], capture_output=True, text=True)
    assert found.stdout.split() == ["None", "None"], "the poller venv has only the poll extra"
    users = Path(world.api_vars["api_server_users_file"])
    assert users.owner() == world.api_user and users.stat().st_mode & 0o777 == 0o600
    server_conf = yaml.safe_load(
        (Path(world.api_vars["api_server_config_dir"]) / "config.yml").read_text()
    )
    assert server_conf["port"] == world.api_vars["api_server_port"]
    assert server_conf["sites"][world.site] == {"commands": ["sample"]}
    rotate = (Path(world.api_vars["api_server_logrotate_dir"]) / "extcomp-api").read_text()
    assert "copytruncate" in rotate
    cron = (world.root / "cron.d" / f"extcomp-poller-{world.site}-cleanup").read_text()
    assert f"{world.poller_user} {venv}/bin/extcomp-poller cleanup --config" in cron


def test_calc_runs_through_the_installed_poller(world: ApiWorld, tmp_path: Path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("one two three\n")
    with world.client() as client:
        result = client.run(world.site, "sample", ["x"], [data], results_dir=tmp_path / "out")
    assert result.ok and result.exit_code == 0, result.calc
    text = (tmp_path / "out" / "result.out").read_text().splitlines()
    assert text == [f"ran as {world.poller_user} with: x", "3"]


def test_retire_revokes_the_poller_and_removes_it(world: ApiWorld) -> None:
    private = world.root / "runner"
    first = ok(run_playbook("retire.yml", world.inventory, private))
    assert first.changed > 0
    # The running poller stops for good, whichever it meets first: its next claim refused (254,
    # token revoked) or its state dir removed (2). Its unit restarts on neither.
    assert world.poller.wait(timeout=30) in (Exit.USAGE, Exit.REFUSED)
    with world.client(world.poller_token) as poller_client, pytest.raises(ApiError) as info:
        poller_client.list()
    assert info.value.status == 401
    with world.client() as client:  # the workflow side's own token is untouched
        client.list()
    for key in ("poller_host_install_dir", "poller_host_state_dir", "poller_host_work_base"):
        assert not Path(world.poller_vars[key]).exists(), key
    etc = Path(world.poller_vars["poller_host_config_dir"])
    assert not (etc / f"{world.site}.token").exists()
    assert not (world.root / "cron.d" / f"extcomp-poller-{world.site}-cleanup").exists()
    again = ok(run_playbook("retire.yml", world.inventory, private))
    assert again.changed == 0, again.changed_tasks()
