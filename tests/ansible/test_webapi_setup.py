"""setup_api_server + setup_poller for real (service manager none), a calc round trip, retire.

Both roles install into a temp dir for throwaway service accounts on this machine, reached as root
through the fixture sshd. The inventory is a directory as an operator keeps it: hosts.yml, and
group_vars/pollers.yml holding the poller's token in a vault (`ansible-vault encrypt_string`). The
test then starts the server and the poller with the very command lines the roles print, as root
(they switch to their accounts themselves), and submits calcs.
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
    vault_poller_token,
    world_readable_tmpdir,
)
from tests.fixtures.sshd import free_port, start_sshd, stop_sshd
from tests.fixtures.tls import make_tls
from webapi.client.client import Client
from webapi.errors import ApiError

pytestmark = [
    pytest.mark.slow,
    # The module's set-up runs ten playbooks (about 40 s each on a busy machine).
    pytest.mark.timeout(900),
    pytest.mark.skipif(os.geteuid() != 0, reason="creates accounts: needs root"),
]

SAMPLE = """#!/bin/sh
# Allow-listed test program: report who ran it and count the words of its inputs.
set -eu
{ echo "ran as $(id -un) with: $*"; cat ./*.txt | wc -w; } > result.out
"""

SLOW = """#!/bin/sh
# Allow-listed test program that keeps the poller busy for a while.
sleep "$1"
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
    inventory_dir: Path
    vault_password_file: Path
    runs: dict[str, PlayResult]
    client_token: str
    poller_token: str
    poller: subprocess.Popen[bytes]
    api_vars: dict[str, Any]
    poller_vars: dict[str, Any]
    server_start: str  # the command line the api_server role printed

    def client(self, token: str | None = None) -> Client:
        return Client(self.url, token or self.client_token, ca_file=self.ca, poll_interval=0.2)

    def save_inventory(self) -> Path:
        return save_inventory(self.inventory_dir, self.inventory)


def save_inventory(inventory_dir: Path, inventory: dict[str, Any]) -> Path:
    (inventory_dir / "hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    return inventory_dir


def _start(command: str, log: Path) -> subprocess.Popen[bytes]:
    """Run a printed command line as it is (as root: it switches to its account itself)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            shlex.split(command), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
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


def _api_cli(api: dict[str, Any], *args: str) -> list[str]:
    return [
        "runuser",
        "-u",
        api["api_server_user"],
        "--",
        f"{api['api_server_install_dir']}/venv/bin/extcomp-api",
        "--config",
        f"{api['api_server_config_dir']}/config.yml",
        *args,
    ]


def _token(api: dict[str, Any], user: str, label: str) -> str:
    cli = _api_cli(api, "users", "token", user, "--label", label)
    done = subprocess.run(cli, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def _vault_group_vars(inventory_dir: Path, password_file: Path, token: str) -> None:
    """group_vars/pollers.yml as docs/setup.md has the operator write it."""
    group_vars = inventory_dir / "group_vars"
    group_vars.mkdir(parents=True, exist_ok=True)
    (group_vars / "pollers.yml").write_text(
        'poller_host_token: "{{ vault_poller_host_token }}"\n'
        + vault_poller_token(password_file, token)
    )


def _private_python(root: Path) -> Path:
    """A Python only root can run (like pyenv's under /root): a copy in a 0700 dir."""
    private = root / "private"
    (private / "bin").mkdir(parents=True)
    private.chmod(0o700)
    python = private / "bin" / "python3"
    shutil.copy2(os.path.realpath("/usr/bin/python3"), python)
    return python


def _processes_of(user: str) -> list[int]:
    uid = int(subprocess.run(["id", "-u", user], capture_output=True, text=True).stdout or -1)
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="module")
def world() -> Iterator[ApiWorld]:
    root = world_readable_tmpdir("extcomp-ansible-api-")
    api_user, poller_user = throwaway_account(), throwaway_account()
    site = f"s{poller_user[-6:]}"
    host = start_sshd(root / "admin")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # On the controller, as an operator has them: a certificate and its key (0600, root).
        cert, key = make_tls(root / "tls")
        assert key.stat().st_mode & 0o777 == 0o600
        (root / "cron.d").mkdir()
        programs = root / "site-programs"  # the site's own programs, on the controller
        programs.mkdir()
        (programs / "sample.sh").write_text(SAMPLE)
        (programs / "slow.sh").write_text(SLOW)
        for program in programs.iterdir():
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
            "api_server_config_dir": str(root / "api-etc"),
            "api_server_data_dir": str(root / "api-var" / "data"),
            "api_server_users_file": str(root / "api-var" / "users.yml"),
            "api_server_log_dir": str(root / "api-log"),
            "api_server_listen": "127.0.0.1",
            "api_server_port": port,
            "api_server_tls_cert_src": str(cert),
            "api_server_tls_key_src": str(key),
            "api_server_sites": {
                site: {"commands": ["sample", "slow"]},
                "other": {"commands": ["x"]},
            },
            "api_server_settings": {"claim_wait_max": 2, "heartbeat_seconds": 1, "threads": 16},
            "api_server_users": [{"name": "mint"}, {"name": "boss", "admin": True}],
            "api_server_service_manager": "none",
            "api_server_logrotate_dir": str(root / "logrotate.d"),
        }
        (root / "logrotate.d").mkdir()
        install = root / "poller"
        poller_vars: dict[str, Any] = {
            **conn,
            "poller_host_site": site,
            "poller_host_url": url,
            "poller_host_user": poller_user,
            "poller_host_home": str(root / "poller-home"),
            "poller_host_install_dir": str(install),
            "poller_host_wheel_dir": str(wheels),
            "poller_host_config_dir": str(root / "poller-etc"),
            "poller_host_state_dir": str(root / "poller-var" / "state"),
            "poller_host_work_base": str(root / "poller-var" / "work"),
            "poller_host_ca_file_src": str(cert),
            "poller_host_programs_src": str(programs),
            "poller_host_claim_wait": 2,
            "poller_host_retry_count": 2,
            "poller_host_retry_interval": 1,
            "poller_host_commands": {
                "sample": {"argv": [f"{install}/programs/sample.sh"], "timeout": 60},
                "slow": {"argv": [f"{install}/programs/slow.sh"], "timeout": 120},
            },
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
        inventory_dir = root / "inventory"
        inventory_dir.mkdir()
        password_file = root / "vault-password"
        password_file.write_text("not-a-secret\n")
        password_file.chmod(0o600)
        vault = f"--vault-password-file {password_file}"
        private = root / "runner"
        runs: dict[str, PlayResult] = {}
        inv = save_inventory(inventory_dir, inventory)
        runs["api1"] = ok(run_playbook("setup_api_server.yml", inv, private))
        runs["api2"] = run_playbook("setup_api_server.yml", inv, private)
        runs["apicheck"] = run_playbook("setup_api_server.yml", inv, private, check=True)

        serve = runs["api1"].debug_msgs("Show the server's command line (service manager none)")
        assert len(serve) == 1, runs["api1"].stdout[-3000:]
        log = root / "server.out"
        server = _start(str(serve[0]), log)
        procs.append(server)
        _wait_port(port, server, log)
        client_token = _token(api_vars, "mint", "workflow")
        poller_token = _token(api_vars, "mint", f"poller:{site}")
        _vault_group_vars(inventory_dir, password_file, poller_token)

        # A venv an earlier set-up built from a Python the service account cannot run.
        bad_python = _private_python(root)
        install.mkdir()
        subprocess.run([str(bad_python), "-m", "venv", str(install / "venv")], check=True)

        # The poller: from the wheel the api_server role built (a file this time, not the repo).
        wheel = next(wheels.glob("mint_extcomp-*.whl"))
        poller_vars["poller_host_package_src"] = str(wheel)
        poller_vars["poller_host_python"] = str(bad_python)
        inv = save_inventory(inventory_dir, inventory)
        runs["pollbadpython"] = run_playbook("setup_poller.yml", inv, private, cmdline=vault)
        del poller_vars["poller_host_python"]  # the default, the system's Python
        inv = save_inventory(inventory_dir, inventory)
        runs["poll1"] = ok(run_playbook("setup_poller.yml", inv, private, cmdline=vault))
        runs["poll2"] = run_playbook("setup_poller.yml", inv, private, cmdline=vault)
        runs["pollcheck"] = run_playbook(
            "setup_poller.yml", inv, private, check=True, cmdline=vault
        )
        poller_vars["poller_host_package_src"] = str(_repacked(wheel, root / "wheels-new"))
        inv = save_inventory(inventory_dir, inventory)
        runs["pollwheel"] = run_playbook("setup_poller.yml", inv, private, cmdline=vault)
        cmd = runs["poll1"].debug_msgs("Show the poller's command line (service manager none)")
        assert len(cmd) == 1, runs["poll1"].stdout[-3000:]
        poller = _start(str(cmd[0]), root / "poller.out")
        procs.append(poller)
        yield ApiWorld(
            root=root,
            site=site,
            api_user=api_user,
            poller_user=poller_user,
            url=url,
            ca=cert,
            inventory=inventory,
            inventory_dir=inventory_dir,
            vault_password_file=password_file,
            runs=runs,
            client_token=client_token,
            poller_token=poller_token,
            poller=poller,
            api_vars=api_vars,
            poller_vars=poller_vars,
            server_start=str(serve[0]),
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
    # In api1 the venv install and the TLS files notify the server's (config edits need none).
    assert set(world.runs["api1"].notified()) == {"api_server : Restart the server"}
    assert world.runs["api2"].notified() == []
    # A wheel with other bytes is force-reinstalled, and that alone restarts the poller.
    run = ok(world.runs["pollwheel"])
    assert run.changed_tasks() == [
        "Copy the wheel to the host",
        "Create the venv and install the package with its extra",
    ]
    assert run.notified() == ["poller_host : Restart the poller"]


def test_a_python_the_account_cannot_run_is_named_and_the_venv_rebuilt(world: ApiWorld) -> None:
    bad = world.runs["pollbadpython"]
    assert bad.rc != 0
    message = " ".join(bad.failures())
    assert "poller_host_python" in message and world.poller_user in message, message
    # The next run, with the default (/usr/bin/python3), rebuilt the venv from that Python.
    assert "Remove a venv built from another Python" in world.runs["poll1"].changed_tasks()
    cfg = (Path(world.poller_vars["poller_host_install_dir"]) / "venv" / "pyvenv.cfg").read_text()
    assert "home = /usr/bin\n" in cfg, cfg


def test_files_modes_and_owners(world: ApiWorld) -> None:
    etc = Path(world.poller_vars["poller_host_config_dir"])
    token = etc / f"{world.site}.token"
    assert token.stat().st_mode & 0o777 == 0o600
    assert token.owner() == world.poller_user
    assert token.read_text().strip() == world.poller_token  # from the vault
    config = yaml.safe_load((etc / f"{world.site}.yml").read_text())
    assert config["site"] == world.site and config["token_file"] == str(token)
    assert "token" not in config
    # The private CA and the site's programs, copied from the controller.
    ca = etc / f"{world.site}-ca.pem"
    assert config["ca_file"] == str(ca)
    assert ca.read_bytes() == world.ca.read_bytes() and ca.stat().st_mode & 0o777 == 0o644
    program = Path(world.poller_vars["poller_host_install_dir"]) / "programs" / "sample.sh"
    assert program.owner() == "root" and program.stat().st_mode & 0o777 == 0o755
    venv = Path(world.poller_vars["poller_host_install_dir"]) / "venv"
    check = "import importlib.util as u; print(u.find_spec('bottle'), u.find_spec('ansible'))"
    found = subprocess.run([venv / "bin" / "python", "-c", check], capture_output=True, text=True)
    assert found.stdout.split() == ["None", "None"], "the poller venv has only the poll extra"
    users = Path(world.api_vars["api_server_users_file"])
    assert users.owner() == world.api_user and users.stat().st_mode & 0o777 == 0o600
    api_etc = Path(world.api_vars["api_server_config_dir"])
    server_conf = yaml.safe_load((api_etc / "config.yml").read_text())
    assert server_conf["port"] == world.api_vars["api_server_port"]
    assert server_conf["sites"][world.site] == {"commands": ["sample", "slow"]}
    # The TLS key, installed from the controller: root's, readable by the server's group only.
    assert server_conf["tls"] == {
        "cert": str(api_etc / "cert.pem"),
        "key": str(api_etc / "key.pem"),
    }
    key = (api_etc / "key.pem").stat()
    assert (key.st_uid, key.st_mode & 0o777) == (0, 0o640)
    assert key.st_gid == Path(world.api_vars["api_server_users_file"]).stat().st_gid
    rotate = (Path(world.api_vars["api_server_logrotate_dir"]) / "extcomp-api").read_text()
    assert "copytruncate" in rotate
    cron = (world.root / "cron.d" / f"extcomp-poller-{world.site}-cleanup").read_text()
    assert f"{world.poller_user} {venv}/bin/extcomp-poller cleanup --config" in cron


def test_printed_command_lines_switch_to_the_accounts(world: ApiWorld) -> None:
    assert world.server_start.startswith(f"runuser -u {world.api_user} -- ")
    cmd = world.runs["poll1"].debug_msgs("Show the poller's command line (service manager none)")
    assert str(cmd[0]).startswith(f"runuser -u {world.poller_user} -- ")


def test_calc_runs_through_the_installed_poller(world: ApiWorld, tmp_path: Path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("one two three\n")
    with world.client() as client:
        result = client.run(world.site, "sample", ["x"], [data], results_dir=tmp_path / "out")
    assert result.ok and result.exit_code == 0, result.calc
    text = (tmp_path / "out" / "result.out").read_text().splitlines()
    assert text == [f"ran as {world.poller_user} with: x", "3"]


def test_unreadable_tls_key_is_named(world: ApiWorld) -> None:
    """The role says which variable; the server says which file, in one line, with exit 2."""
    here = world.root / "unreadable-key"
    here.mkdir(mode=0o755)
    key = here / "root-only-key.pem"
    shutil.copy(world.root / "tls" / "key.pem", key)
    key.chmod(0o600)
    extra = {"api_server_tls_key_src": "", "api_server_tls_key": str(key)}
    bad = run_playbook(
        "setup_api_server.yml", world.inventory, world.root / "runner", extravars=extra
    )
    assert bad.rc != 0
    message = " ".join(bad.failures())
    assert "api_server_tls_key" in message and str(key) in message, message
    assert world.api_user in message and "0640" in message, message

    api_etc = Path(world.api_vars["api_server_config_dir"])
    conf = yaml.safe_load((api_etc / "config.yml").read_text())
    conf["tls"]["key"] = str(key)
    conf["data_dir"] = str(here / "data")  # not the running server's
    config = here / "config.yml"
    config.write_text(yaml.safe_dump(conf))
    config.chmod(0o644)
    command = shlex.split(world.server_start)
    command[command.index("--config") + 1] = str(config)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"tls.key {key}: permission denied" in done.stderr, done.stderr
    assert world.api_user in done.stderr, done.stderr


def _rendered_unit(run: PlayResult, task: str) -> str:
    for event in run.events:
        data = event.get("event_data", {})
        if event.get("event") == "runner_on_ok" and data.get("task") == task:
            diff = data["res"]["diff"]
            return str((diff[0] if isinstance(diff, list) else diff)["after"])
    raise AssertionError(f"no {task!r} in {run.stdout[-3000:]}")


@pytest.mark.parametrize(
    ("playbook", "prefix", "restart_prevent"),
    [
        pytest.param("setup_api_server.yml", "api_server", "2", id="api_server"),
        pytest.param("setup_poller.yml", "poller_host", "2 251 254", id="poller"),
    ],
)
def test_units_restart_on_failure_but_not_on_config_or_refusal(
    world: ApiWorld, playbook: str, prefix: str, restart_prevent: str
) -> None:
    """The systemd units (check mode: this machine may run no systemd): exit 2 (config error) and
    254 (the server refused the poller) stop them; any other failure restarts them after a delay,
    255 (server unreachable after the retries) included."""
    units = world.root / f"units-{prefix}"
    units.mkdir()
    extra = {f"{prefix}_service_manager": "systemd", f"{prefix}_systemd_dir": str(units)}
    if prefix == "poller_host":
        extra["poller_host_cleanup_manager"] = "cron"  # the cron file of the test, unchanged
    run = run_playbook(
        playbook,
        world.inventory_dir,
        world.root / "runner",
        extravars=extra,
        check=True,
        cmdline=f"--vault-password-file {world.vault_password_file}",
    )
    # Without systemd as PID 1 only the tasks that ask systemd fail (the first of them ends it).
    assert {f.split(":")[0] for f in run.failures()} <= {
        "Reload systemd",
        "Restart the server",
        "Restart the poller",
        "Enable and start the server",
        "Enable and start the poller",
    }, run.failures()
    unit = _rendered_unit(run, "Install the systemd unit")
    lines = unit.splitlines()
    assert "Restart=on-failure" in lines
    assert f"RestartPreventExitStatus={restart_prevent}" in lines
    assert any(line.startswith("RestartSec=") for line in lines)
    user = world.api_user if prefix == "api_server" else world.poller_user
    assert f"User={user}" in lines
    if shutil.which("systemd-analyze"):
        path = units / "extcomp-check.service"
        path.write_text(unit)
        done = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True
        )
        complaints = [x for x in done.stderr.splitlines() if "extcomp-check.service:" in x]
        assert not complaints, done.stderr


def test_retire_revokes_first_and_stops_the_running_poller(world: ApiWorld, tmp_path: Path) -> None:
    """retire.yml as docs/setup.md gives it: no vault password, a second poller host down."""
    # The poller is busy with a calc when the retire starts.
    with world.client() as client:
        calc = client.submit(world.site, "slow", ["40"])
        deadline = time.monotonic() + 30
        while client.show(calc.id).state != "running":
            assert time.monotonic() < deadline, client.show(calc.id)
            time.sleep(0.2)
    gone_site = f"g{world.site}"
    gone_token = _token(world.api_vars, "mint", f"poller:{gone_site}")
    pollers = world.inventory["all"]["children"]["pollers"]["hosts"]
    pollers["poller-gone"] = {
        **world.poller_vars,
        "ansible_port": free_port(),  # nothing listens: unreachable
        "poller_host_site": gone_site,
    }
    inv = world.save_inventory()
    private = world.root / "runner"
    first = run_playbook("retire.yml", inv, private)
    assert first.stats.get("dark", {}).get("poller-gone"), first.stdout[-3000:]
    assert not first.stats.get("failures"), first.stdout[-6000:]
    # Stopped by the play itself, although busy: with service manager none nothing else would.
    world.poller.wait(timeout=5)
    for token in (world.poller_token, gone_token):
        with world.client(token) as poller_client, pytest.raises(ApiError) as info:
            poller_client.list()
        assert info.value.status == 401
    with world.client() as client:  # the workflow side's own token is untouched
        client.list()
    for key in ("poller_host_install_dir", "poller_host_state_dir", "poller_host_work_base"):
        assert not Path(world.poller_vars[key]).exists(), key
    etc = Path(world.poller_vars["poller_host_config_dir"])
    assert not (etc / f"{world.site}.token").exists()
    assert not (world.root / "cron.d" / f"extcomp-poller-{world.site}-cleanup").exists()
    del pollers["poller-gone"]
    again = ok(run_playbook("retire.yml", world.save_inventory(), private))
    assert again.changed == 0, again.changed_tasks()
    # The calc's program outlives its poller; wait for it so the account can be removed.
    deadline = time.monotonic() + 60
    while _processes_of(world.poller_user) and time.monotonic() < deadline:
        time.sleep(0.5)
