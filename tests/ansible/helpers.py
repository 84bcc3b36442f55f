"""Run the set-up playbooks through ansible-runner, and start a second sshd for a role's output."""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner

from tests.fixtures.sshd import SSHD, SshHost, free_port

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"


@dataclass
class PlayResult:
    rc: int
    status: str
    stats: dict[str, dict[str, int]]
    events: list[dict[str, Any]] = field(repr=False)
    stdout: str = field(repr=False)
    seconds: float = 0.0

    @property
    def changed(self) -> int:
        return sum(self.stats.get("changed", {}).values())

    def changed_tasks(self) -> list[str]:
        return [
            str(e["event_data"].get("task"))
            for e in self.events
            if e.get("event") == "runner_on_ok" and e["event_data"].get("res", {}).get("changed")
        ]

    def notified(self) -> list[str]:
        """Handlers notified in this run ("role : handler"), whether their `when` held or not."""
        return [
            str(e["event_data"].get("handler"))
            for e in self.events
            if e.get("event") == "playbook_on_notify"
        ]

    def failures(self) -> list[str]:
        """The messages of the failed tasks ("task: msg")."""
        return [
            f"{e['event_data'].get('task')}: {e['event_data'].get('res', {}).get('msg')}"
            for e in self.events
            if e.get("event") == "runner_on_failed"
        ]

    def debug_msgs(self, task: str) -> list[Any]:
        return [
            e["event_data"]["res"].get("msg")
            for e in self.events
            if e.get("event") == "runner_on_ok" and e["event_data"].get("task") == task
        ]


def run_playbook(
    name: str,
    inventory: dict[str, Any] | Path,
    private_dir: Path,
    *,
    extravars: dict[str, Any] | None = None,
    check: bool = False,
    cmdline: str = "",
) -> PlayResult:
    """ansible-playbook NAME through ansible-runner with the repo's ansible.cfg.

    `inventory` is a dict or an inventory dir/file (for group_vars files, e.g. with a vault);
    `cmdline` holds more ansible-playbook arguments as a shell would give them (e.g. `-e k=v`).
    """
    # A fresh private dir per run: ansible-runner keeps env/cmdline (--check!) and extravars in it.
    ident = f"{name.removesuffix('.yml')}-{'check-' if check else ''}{secrets.token_hex(3)}"
    private_dir = private_dir / ident
    (private_dir / "tmp").mkdir(parents=True)
    envvars = {
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_HOST_KEY_CHECKING": "True",  # ansible-runner turns it off unless told
        # One ssh round trip per task instead of three or four: halves the playbook time here.
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_LOCAL_TEMP": str(private_dir / "tmp"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(private_dir.parent / "cp"),
    }
    started = time.monotonic()
    result = ansible_runner.run(
        private_data_dir=str(private_dir),
        playbook=str(PLAYBOOKS / name),
        inventory=str(inventory) if isinstance(inventory, Path) else inventory,
        extravars=extravars or {},
        envvars=envvars,
        cmdline=" ".join(x for x in ("--check --diff" if check else "", cmdline) if x) or None,
        quiet=True,
        ident=ident,
    )
    stdout = (private_dir / "artifacts" / ident / "stdout").read_text(errors="replace")
    return PlayResult(
        rc=int(result.rc),
        status=str(result.status),
        stats=result.stats or {},
        events=list(result.events),
        stdout=stdout,
        seconds=time.monotonic() - started,
    )


def ok(result: PlayResult) -> PlayResult:
    assert result.rc == 0 and result.status == "successful", result.stdout[-6000:]
    return result


def connection_vars(host: SshHost) -> dict[str, Any]:
    """Host vars that log in as root through the fixture's unrestricted key."""
    return {
        "ansible_host": host.host,
        "ansible_port": host.port,
        "ansible_user": host.user,
        "ansible_connection": "ssh",
        "ansible_ssh_private_key_file": str(host.key),
        "ansible_ssh_common_args": shlex.join(
            ["-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={host.known_hosts}"]
        ),
        "ansible_python_interpreter": "/usr/bin/python3",
    }


@dataclass(frozen=True)
class AccountSshd:
    """A second sshd that lets one account in with the authorized_keys a role wrote."""

    port: int
    host_pub: str  # "ssh-ed25519 AAAA..."
    pidfile: Path
    log: Path

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(self.pidfile.read_text().strip()), signal.SIGTERM)


def start_account_sshd(root: Path, user: str, authorized_keys: Path) -> AccountSshd:
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = root / "host_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "account host", "-f", str(key)],
        check=True,
    )
    pidfile, log, config = root / "sshd.pid", root / "sshd.log", root / "sshd_config"
    for _ in range(5):
        port = free_port()
        # StrictModes no: the key file lies under /tmp (world-writable parent), see facts.md.
        config.write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {key}
PidFile {pidfile}
AuthorizedKeysFile {authorized_keys}
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers {user}
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
LogLevel VERBOSE
""")
        subprocess.run([SSHD, "-t", "-f", str(config)], check=True)
        subprocess.run([SSHD, "-f", str(config), "-E", str(log)], check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if pidfile.exists():
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    pub = " ".join((root / "host_ed25519.pub").read_text().split()[:2])
                    return AccountSshd(port, pub, pidfile, log)
            time.sleep(0.05)
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
    raise RuntimeError(f"account sshd did not start; see {log}")


def throwaway_account() -> str:
    return f"extcomp-t{secrets.token_hex(3)}"


def make_account(name: str, home: Path) -> None:
    """A login account with its home at `home` (as the account that runs the MInt workflow)."""
    subprocess.run(["useradd", "-m", "-d", str(home), "-s", "/bin/sh", name], check=True)


def remove_account(name: str) -> None:
    # Its processes (steps detached by the helper) end on their own; retry while they do.
    for _ in range(50):
        done = subprocess.run(["userdel", name], check=False, capture_output=True, text=True)
        if done.returncode != 8:  # 8: the account is still in use
            break
        time.sleep(0.1)
    subprocess.run(["groupdel", name], check=False, capture_output=True)


def world_readable_tmpdir(prefix: str) -> Path:
    """A temp dir other accounts can traverse (pytest's tmp_path is 0700, root only)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def vault_poller_token(password_file: Path, token: str, env: dict[str, str] | None = None) -> str:
    """The poller's token as docs/setup.md step 4 has the operator vault it: the YAML of
    `ansible-vault encrypt_string --name vault_poller_host_token`, for group_vars/pollers.yml."""
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-vault"),
            "encrypt_string",
            "--vault-password-file",
            str(password_file),
            "--name",
            "vault_poller_host_token",
            token,
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return done.stdout
