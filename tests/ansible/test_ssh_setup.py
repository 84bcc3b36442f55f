"""setup_workflow_host + setup_ssh_target for real, a step through the gated key, then retire.yml.

The "external host" is this machine: the playbooks log in as root through the fixture sshd and
install into a temp dir for a throwaway account; a second sshd lets that account in with the
authorized_keys file the role wrote, so the key line, the gate and the restrictions are the ones
an operator would get. The workflow side is another throwaway account, named in
workflow_host_owner as an operator running the play as root does. Tests run in file order and
share one set-up (module-scoped fixture).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runner import HostSpec, Outcome, StepError, StepSpec, run_step
from runner.steps import DEFAULT_HELPER
from tests.ansible.helpers import (
    AccountSshd,
    PlayResult,
    connection_vars,
    make_account,
    ok,
    remove_account,
    run_playbook,
    start_account_sshd,
    throwaway_account,
    world_readable_tmpdir,
)
from tests.fixtures.sshd import start_sshd, stop_sshd

pytestmark = [
    pytest.mark.slow,
    # The module's set-up runs six playbooks (up to 40 s each on a busy machine).
    pytest.mark.timeout(900),
    pytest.mark.skipif(os.geteuid() != 0, reason="creates an account: needs root"),
]

UNRELATED = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHc0d2F5c1VucmVsYXRlZEtleUZvclRlc3RzAA other@elsewhere"
)


@dataclass
class SshWorld:
    root: Path
    user: str
    site: str
    alias: str
    sshd: AccountSshd
    inventory: dict[str, Any]
    runs: dict[str, PlayResult]
    authorized_keys: Path
    site_dir: Path
    base: Path
    ssh_dir: Path  # the workflow side's ~/.ssh
    unrelated: str  # a key line of someone else, already in authorized_keys
    wf_user: str  # the account that runs the workflow

    @property
    def key(self) -> Path:
        return self.ssh_dir / "id_extcomp_ed25519"

    @property
    def config(self) -> Path:
        return self.ssh_dir / "config"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts_extcomp"

    def ssh(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """ssh through the alias the workflow_host role wrote (its key, its pinned host key)."""
        return subprocess.run(
            ["ssh", "-F", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def spec(self, results: Path, *inputs: Path, known_hosts: Path | None = None) -> StepSpec:
        host = HostSpec.parse(
            f"{self.user}@127.0.0.1:{self.sshd.port}",
            key=self.key,
            known_hosts=known_hosts or self.known_hosts,
        )
        return StepSpec(
            host=host,
            results_dir=results,
            inputs=inputs,
            args=("hello",),
            helper=str(self.site_dir / "bin" / "extcomp-remote"),
            remote_base=str(self.base),
            reconnect_attempts=0,
        )


@pytest.fixture(scope="module")
def world() -> Iterator[SshWorld]:
    root = world_readable_tmpdir("extcomp-ansible-ssh-")
    user, wf_user = throwaway_account(), throwaway_account()
    site = f"t{user[-6:]}"
    host = start_sshd(root / "admin")  # root's own door for the set-up playbooks
    sshd: AccountSshd | None = None
    try:
        make_account(wf_user, root / "wf-home")
        (root / "home").mkdir()
        (root / "cron.d").mkdir()
        keys = root / "keys" / user / "authorized_keys"
        keys.parent.mkdir(parents=True)
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "other@elsewhere",
                "-f",
                str(root / "other"),
            ],
            check=True,
        )
        unrelated = 'from="10.0.0.1" ' + (root / "other.pub").read_text().strip()
        keys.write_text(unrelated + "\n")
        sshd = start_account_sshd(root / "sshd2", user, keys)
        ssh_dir = root / "wf-home" / ".ssh"  # found by the role from the account
        alias = f"extcomp-{site}"
        conn = connection_vars(host)
        target_vars = {
            **conn,
            "ssh_target_site": site,
            "ssh_target_user": user,
            "ssh_target_home": str(root / "home" / user),
            "ssh_target_authorized_keys_file": str(keys),
            "ssh_target_from": ["127.0.0.1", "::1"],
            "ssh_target_cleanup_manager": "cron",
            "ssh_target_batch_conf": "EXTCOMP_BATCH_POLL=30\n",
            "ssh_target_cron_dir": str(root / "cron.d"),
        }
        wf_vars = {
            **conn,
            "workflow_host_owner": wf_user,
            "workflow_host_sites": [
                {
                    "alias": alias,
                    "host": "127.0.0.1",
                    "port": sshd.port,
                    "user": user,
                    "host_keys": [sshd.host_pub],
                }
            ],
        }
        inventory: dict[str, Any] = {
            "all": {
                "children": {
                    "workflow_hosts": {"hosts": {"mint": wf_vars}},
                    "ssh_targets": {"hosts": {"hpc": target_vars}},
                }
            }
        }
        runs: dict[str, PlayResult] = {}
        private = root / "runner"
        runs["wf1"] = run_playbook("setup_workflow_host.yml", inventory, private)
        ok(runs["wf1"])
        target_vars["ssh_target_public_key_file"] = str(ssh_dir / "id_extcomp_ed25519.pub")
        runs["st1"] = run_playbook("setup_ssh_target.yml", inventory, private)
        ok(runs["st1"])
        for name in ("setup_workflow_host.yml", "setup_ssh_target.yml"):
            short = "wf" if "workflow" in name else "st"
            runs[f"{short}2"] = run_playbook(name, inventory, private)
            runs[f"{short}check"] = run_playbook(name, inventory, private, check=True)
        yield SshWorld(
            root=root,
            user=user,
            site=site,
            alias=alias,
            sshd=sshd,
            inventory=inventory,
            runs=runs,
            authorized_keys=keys,
            site_dir=root / "home" / user / "extcomp" / site,
            base=root / "home" / user / "extcomp-work" / site,
            ssh_dir=ssh_dir,
            unrelated=unrelated,
            wf_user=wf_user,
        )
    finally:
        if sshd is not None:
            sshd.stop()
        stop_sshd(host)
        remove_account(user)
        remove_account(wf_user)
        shutil.rmtree(root, ignore_errors=True)


def test_setup_changes_things_then_nothing(world: SshWorld) -> None:
    assert world.runs["wf1"].changed > 0
    assert world.runs["st1"].changed > 0
    for name in ("wf2", "st2"):
        run = ok(world.runs[name])
        assert run.changed == 0, (name, run.changed_tasks())


def test_check_mode_runs_and_reports_nothing_to_change(world: SshWorld) -> None:
    for name in ("wfcheck", "stcheck"):
        run = ok(world.runs[name])
        assert run.changed == 0, (name, run.changed_tasks())


def test_files_and_modes(world: SshWorld) -> None:
    key = world.key
    assert key.stat().st_mode & 0o777 == 0o600
    # In the workflow account's home, its own, although the play ran as root.
    for path in (world.ssh_dir, key, world.config, world.known_hosts):
        assert (path.owner(), path.group()) == (world.wf_user, world.wf_user), path
    assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert (world.ssh_dir.stat().st_mode & 0o777) == 0o700
    assert "StrictHostKeyChecking yes" in world.config.read_text()
    assert "StrictHostKeyChecking no" not in world.config.read_text()
    assert world.known_hosts.read_text().split() == [
        f"[127.0.0.1]:{world.sshd.port}",
        *world.sshd.host_pub.split(),
    ]
    keys = world.authorized_keys
    assert keys.stat().st_mode & 0o777 == 0o600
    assert keys.parent.stat().st_mode & 0o777 == 0o700
    assert keys.stat().st_uid == keys.parent.stat().st_uid != 0
    lines = keys.read_text().splitlines()
    assert lines[0] == world.unrelated
    pub = " ".join(Path(f"{key}.pub").read_text().split()[:2])
    assert lines[1] == (
        f'restrict,command="{world.site_dir}/bin/extcomp-remote --gate --base {world.base} '
        f'--rrsync /usr/bin/rrsync",from="127.0.0.1,::1" {pub} extcomp-site:{world.site}'
    )
    assert os.access(world.site_dir / "bin" / "extcomp-remote", os.X_OK)
    assert (world.site_dir / "remote-side_scripts" / "sample_program.sh").stat().st_mode & 0o111
    assert world.base.stat().st_mode & 0o777 == 0o700
    # The Slurm entry script's settings: root's, so the account cannot change what jobs run.
    batch_conf = world.site_dir / "batch.conf"
    assert batch_conf.read_text() == "EXTCOMP_BATCH_POLL=30\n"
    assert (batch_conf.owner(), batch_conf.stat().st_mode & 0o777) == ("root", 0o644)
    shadow = {
        line.split(":")[0]: line.split(":")[1]
        for line in Path("/etc/shadow").read_text().splitlines()
    }
    assert shadow[world.user] == "*"


def test_cleanup_job_removes_only_old_work_dirs(world: SshWorld) -> None:
    cron = world.root / "cron.d" / f"extcomp-cleanup-{world.site}"
    line = next(x for x in cron.read_text().splitlines() if x and not x.startswith("#"))
    fields = line.split(None, 6)
    assert fields[5] == world.user and "-mtime +30" in fields[6]
    old = world.base / "0a0a0a0a-0000-4000-8000-000000000001"
    new = world.base / "0a0a0a0a-0000-4000-8000-000000000002"
    other = world.base / "not-a-work-dir"
    for d in (old, new, other):
        d.mkdir()
        shutil.chown(d, world.user, world.user)
    month_ago = time.time() - 40 * 86400
    for d in (old, other):
        os.utime(d, (month_ago, month_ago))
    subprocess.run(["runuser", "-u", world.user, "--", "sh", "-c", fields[6]], check=True)
    assert not old.exists()
    assert new.is_dir() and other.is_dir()
    new.rmdir()
    other.rmdir()


def test_step_succeeds_through_the_restricted_key(world: SshWorld, tmp_path: Path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("hello world\nsecond line\n")
    spec = world.spec(tmp_path / "results", data)
    result = run_step(spec)
    assert (result.outcome, result.exit_code) == (Outcome.SUCCEEDED, 0), result
    assert (spec.results_dir / "summary.txt").read_text().startswith("in.txt\t2 lines")
    assert list(world.base.iterdir()) == []  # cleaned after the pull


def test_alias_reaches_the_helper(world: SshWorld) -> None:
    done = world.ssh(world.alias, "extcomp-remote", "version")
    assert done.returncode == 0, done.stderr
    assert '"helper": "extcomp-remote"' in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["id"], id="command"),
        pytest.param([], id="shell"),
        pytest.param(["sh", "-c", "id"], id="sh-c"),
        pytest.param(["extcomp-remote", "--base", "/", "mkdir", "x"], id="other-base"),
    ],
)
def test_other_commands_are_refused(world: SshWorld, args: list[str]) -> None:
    done = world.ssh("-T", world.alias, *args)
    assert done.returncode == 77, (done.stdout, done.stderr)
    assert "refused" in done.stderr
    assert "uid=" not in done.stdout


def test_port_forwarding_is_refused(world: SshWorld) -> None:
    done = world.ssh("-W", f"127.0.0.1:{world.sshd.port}", world.alias, timeout=20)
    assert done.returncode != 0
    assert "prohibited" in done.stderr or "refused" in done.stderr, done.stderr
    assert "SSH-2.0" not in done.stdout


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        pytest.param("/etc/hostname", "{alias}:/tmp/extcomp-should-not-exist", id="push-abs"),
        pytest.param("{alias}:../../../etc/passwd", "{tmp}/passwd", id="pull-up"),
        pytest.param("{alias}:/etc/passwd", "{tmp}/passwd", id="pull-abs"),
        pytest.param("/etc/hostname", "{alias}:extcomp-not-a-work-dir/", id="push-not-workdir"),
    ],
)
def test_rsync_outside_the_work_dirs_is_refused(
    world: SshWorld, tmp_path: Path, src: str, dst: str
) -> None:
    fill = {"alias": world.alias, "tmp": str(tmp_path)}
    done = subprocess.run(
        ["rsync", "-a", "-e", f"ssh -F {world.config}", src.format(**fill), dst.format(**fill)],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode != 0
    assert not (tmp_path / "passwd").exists()
    assert not Path("/tmp/extcomp-should-not-exist").exists()


def test_a_public_key_cut_by_the_command_line_is_named(world: SshWorld) -> None:
    """-e ssh_target_public_key="$(cat key.pub)": the shell passes one word, Ansible keeps its
    first part ("ssh-ed25519"); the play says so and gives the forms that work."""
    pub = Path(f"{world.key}.pub").read_text().strip()
    args = "-e ssh_target_public_key_file= -e " + shlex.quote(f"ssh_target_public_key={pub}")
    bad = run_playbook("setup_ssh_target.yml", world.inventory, world.root / "runner", cmdline=args)
    assert bad.rc != 0
    message = " ".join(bad.failures())
    assert 'ssh_target_public_key gives "ssh-ed25519"' in message, message
    assert "-e ssh_target_public_key_file=$PWD/key.pub" in message, message
    assert world.authorized_keys.read_text().count("extcomp-site:") == 1  # nothing written


def test_the_documented_quoted_key_form_works(world: SshWorld) -> None:
    pub = Path(f"{world.key}.pub").read_text().strip()
    args = "-e ssh_target_public_key_file= -e " + shlex.quote(f"ssh_target_public_key='{pub}'")
    run = ok(
        run_playbook("setup_ssh_target.yml", world.inventory, world.root / "runner", cmdline=args)
    )
    assert run.changed == 0, run.changed_tasks()


def test_unrestricted_key_works_with_the_runner_defaults(world: SshWorld, tmp_path: Path) -> None:
    """No --helper, no --remote-base: the shim at the runner's default path finds the site."""
    private = world.root / "runner"
    extra = {"ssh_target_restricted": False}
    ok(run_playbook("setup_ssh_target.yml", world.inventory, private, extravars=extra))
    shim = world.root / "home" / world.user / DEFAULT_HELPER.removeprefix("~/")
    assert os.access(shim, os.X_OK) and shim.owner() == "root"
    data = tmp_path / "in.txt"
    data.write_text("one line\n")
    host = HostSpec.parse(
        f"{world.user}@127.0.0.1:{world.sshd.port}", key=world.key, known_hosts=world.known_hosts
    )
    spec = StepSpec(
        host=host,
        results_dir=tmp_path / "results",
        inputs=(data,),
        args=("hello",),
        keep_remote=True,
        reconnect_attempts=0,
    )
    result = run_step(spec)
    assert (result.outcome, result.exit_code) == (Outcome.SUCCEEDED, 0), result
    assert (spec.results_dir / "summary.txt").read_text().startswith("in.txt\t1 lines")
    kept = list(world.base.iterdir())  # the site's base, not the helper's own default (/tmp)
    assert len(kept) == 1, kept
    shutil.rmtree(kept[0])
    # Back to the gated key: the shim goes with the setting.
    ok(run_playbook("setup_ssh_target.yml", world.inventory, private))
    assert not shim.exists()


def _workflow_only(world: SshWorld, **role_vars: Any) -> dict[str, Any]:
    mint = world.inventory["all"]["children"]["workflow_hosts"]["hosts"]["mint"]
    conn = {k: v for k, v in mint.items() if k.startswith("ansible_")}
    sites = mint["workflow_host_sites"]
    return {
        "all": {
            "children": {
                "workflow_hosts": {
                    "hosts": {"mint": {**conn, "workflow_host_sites": sites, **role_vars}}
                }
            }
        }
    }


def test_workflow_host_run_as_root_needs_the_account(world: SshWorld) -> None:
    run = run_playbook("setup_workflow_host.yml", _workflow_only(world), world.root / "runner")
    assert run.rc != 0
    message = " ".join(run.failures())
    assert "runs as root" in message and "workflow_host_owner" in message, message


def test_retire_creates_nothing_in_a_home_without_ssh(world: SshWorld) -> None:
    other = throwaway_account()
    home = world.root / "other-home"
    try:
        make_account(other, home)
        shutil.rmtree(home / ".ssh", ignore_errors=True)
        inventory = _workflow_only(world, workflow_host_owner=other)
        extra = {"retire_workflow_aliases": [world.alias]}
        ok(run_playbook("retire.yml", inventory, world.root / "runner", extravars=extra))
        assert not (home / ".ssh").exists()
    finally:
        remove_account(other)


def test_retire_removes_only_the_site(world: SshWorld, tmp_path: Path) -> None:
    private = world.root / "runner"
    extra = {"retire_workflow_aliases": [world.alias]}
    first = ok(run_playbook("retire.yml", world.inventory, private, extravars=extra))
    assert first.changed > 0
    assert world.authorized_keys.read_text() == world.unrelated + "\n", first.stdout[-8000:]
    assert not world.site_dir.exists()
    assert not (world.root / "cron.d" / f"extcomp-cleanup-{world.site}").exists()
    assert world.base.is_dir()  # work dirs stay unless ssh_target_retire_work_dirs
    assert world.alias not in world.config.read_text()
    assert world.known_hosts.read_text().strip() == ""
    assert not Path(f"{world.known_hosts}.old").exists()  # no copy of the retired host key
    assert world.key.is_file()  # the key pair may serve other sites

    # The alias and pinned key are gone too: check the key itself with a known_hosts of our own.
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{world.sshd.port} {world.sshd.host_pub}\n")
    done = subprocess.run(
        [
            "ssh",
            "-i",
            str(world.key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={known}",
            "-p",
            str(world.sshd.port),
            f"{world.user}@127.0.0.1",
            "extcomp-remote",
            "version",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 255 and "Permission denied" in done.stderr, done.stderr
    spec = world.spec(tmp_path / "results", known_hosts=known)
    try:
        result = run_step(spec)
    except StepError as exc:
        assert "denied" in str(exc).lower() or "refused" in str(exc).lower(), exc
    else:
        assert result.outcome is Outcome.ERROR, result
        assert "denied" in result.reason.lower() or "auth" in result.reason.lower(), result

    again = ok(run_playbook("retire.yml", world.inventory, private, extravars=extra))
    assert again.changed == 0, again.changed_tasks()
