"""The lab: three real hosts with systemd (API server, SSH target, poller host) and the controller
as the workflow host, set up from a copy of inventories/example by the steps docs/setup.md names.

The `site` fixture does what a new operator does, in the docs' order, and records each run; the
tests in test_lab.py then check the records and the hosts. What the docs do not name is done only
where the lab must go on, and each such step has a strict-xfail test that shows the finding.
"""

from __future__ import annotations

import difflib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.ansible.helpers import vault_poller_token
from tests.fixtures.lab import (
    REPO,
    Lab,
    LabHost,
    Play,
    controller_env,
    home_dir,
    lab_unavailable,
    pick_octet,
    reap_orphans,
    run_playbook,
    wheelhouse,
    workflow_home_argv,
)

_SKIPPED: list[str] = []
TIMINGS: dict[str, float] = {}

SITE = "nims-xrd"
ALIAS = "extcomp-nims-xrd"
API_CLI = [
    "runuser",
    "-u",
    "extcomp-api",
    "--",
    "/opt/extcomp-api/venv/bin/extcomp-api",
    "--config",
    "/etc/extcomp-api/config.yml",
]
WHEELS = "/srv/extcomp-wheels"  # the sites' local package mirror (see wheelhouse())

# The site's own program for the poller (the example's allow-list runs it as xrd-fit).
FIT = """#!/bin/sh
# Lab stand-in for the site's xrd-fit: optionally sleep, then count the words of the inputs.
set -eu
if [ "${1:-}" = "--sleep" ]; then sleep "$2"; fi
{ echo "fit on $(hostname) as $(id -un) with: $*"; cat ./*.txt | wc -w; } > fit.out
echo "licence" > licence.secret
"""

# The site's own programs for SSH mode (ssh_target_scripts_src): the sample, plus a sleep.
SAMPLE_PROGRAM = """#!/bin/sh
# Lab site program (program D): optionally sleep, then summarise the inputs like the sample.
set -eu
if [ "${1:-}" = "--sleep" ]; then sleep "$2"; fi
out=summary.txt
: >"$out"
for f in *; do
  case "$f" in summary.txt|remote_program_exec.log) continue ;; esac
  [ -f "$f" ] || continue
  printf '%s\\t%s words\\n' "$f" "$(wc -w <"$f")" >>"$out"
done
echo "ran on $(hostname) as $(id -un)" >>"$out"
echo "licence server token: do-not-export" >licence.secret
echo "sample_program: arguments: $*"
"""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "lab: boots real hosts with systemd in namespaces (tests/lab, docs/testing.md); needs root",
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _SKIPPED:
        terminalreporter.write_line(f"lab tests SKIPPED: {_SKIPPED[0]}", yellow=True, bold=True)
    if TIMINGS:
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in TIMINGS.items())
        terminalreporter.write_line(f"lab timings: {parts}")


def skip_unless_lab_can_run() -> None:
    """Skip the calling test module with one line (also repeated in the summary) if need be."""
    reason = lab_unavailable()
    if reason is not None:
        line = f"the lab cannot run here: {reason}"
        if not _SKIPPED:
            _SKIPPED.append(line)
        pytest.skip(line, allow_module_level=True)


@dataclass
class Site:
    """The lab, the operator's inventory copy, and what each step of the set-up gave."""

    lab: Lab
    root: Path
    inventory: Path
    files: Path  # <inventory>-files: the TLS files and the sites' programs
    home: Path  # the workflow account's home on the controller (see workflow_home_argv)
    vault_pass: Path
    ca: Path
    logs: Path  # each run's output, kept under pytest's basetemp
    runs: dict[str, Play] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> LabHost:
        return self.lab.hosts["api"]

    @property
    def hpc(self) -> LabHost:
        return self.lab.hosts["hpc"]

    @property
    def poller(self) -> LabHost:
        return self.lab.hosts["poller"]

    @property
    def url(self) -> str:
        return f"https://{self.api.address}:50443"

    def playbook(self, name: str, *args: str, log: str = "") -> Play:
        play = run_playbook(
            self.lab,
            self.home,
            self.inventory,
            name,
            "--vault-password-file",
            str(self.vault_pass),
            *args,
        )
        n = len(list(self.logs.glob("*.log")))
        (self.logs / f"{n:02d}-{log or name}.log").write_text(play.tail(10**9))
        return play

    def as_workflow(
        self, *argv: str, timeout: float = 300, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A command of the workflow account on the controller (program A's view)."""
        return subprocess.run(
            workflow_home_argv(self.home, list(argv)),
            env=controller_env(self.lab),
            cwd=cwd or self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def mint_token(self, user: str, label: str) -> str:
        """docs/setup.md §0 step 4: make a token on the API server host."""
        done = self.api.run(*API_CLI, "users", "token", user, "--label", label)
        return done.stdout.strip().splitlines()[-1]

    def api_serving(self) -> bool:
        """The API server's unit is active and answers TLS on its port (from the controller)."""
        import socket
        import ssl

        if self.api.systemctl("is-active", "extcomp-api.service") != "active":
            return False
        ctx = ssl.create_default_context(cafile=str(self.ca))
        try:
            with (
                socket.create_connection((self.api.address, 50443), timeout=3) as raw,
                ctx.wrap_socket(raw, server_hostname=self.api.address),
            ):
                return True
        except OSError:
            return False

    def wait_api(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.api_serving():
                return True
            time.sleep(0.5)
        return False


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"inventories/example changed: {old!r} is no longer in {path.name}"
    path.write_text(text.replace(old, new, 1))


def _documented_edits(site: Site) -> None:
    """§0 step 2 of docs/setup.md in the copy (and nothing else), each a replacement of a line of
    the example's own, so a changed example fails the lab loudly.

    The table: hosts.yml (each host's address; the controller itself as the workflow host),
    all.yml (the account with sudo: root here), workflow_hosts.yml (the workflow account, the
    site's host and host key), ssh_targets.yml (from=, and the site's own programs), pollers.yml
    (the URL, the programs beside it); the TLS files in <inventory>-files/tls. The hosts reach no
    package index: "What the hosts need" names `*_pip_extra_args` for a mirror, the example's
    own commented lines.
    """
    inv, files, lab = site.inventory, site.files, site.lab
    hosts = inv / "hosts.yml"
    _edit(
        hosts,
        "mint1:\n          ansible_host: mint.example.org",
        "mint1:\n          ansible_connection: local",
    )
    _edit(
        hosts,
        "api1:\n          ansible_host: mint.example.org",
        f"api1:\n          ansible_host: {site.api.address}",
    )
    _edit(hosts, "ansible_host: hpc.example.org", f"ansible_host: {site.hpc.address}")
    _edit(hosts, "ansible_host: lab-pc.example.org", f"ansible_host: {site.poller.address}")
    # The lab's hosts let root in with the operator's key (the hosts have sudo, as §0 asks).
    _edit(inv / "group_vars" / "all.yml", "ansible_user: admin", "ansible_user: root")
    wf = inv / "group_vars" / "workflow_hosts.yml"
    # The account running the tests is the lab's workflow account (see workflow_home_argv).
    _edit(wf, "workflow_host_owner: mint", "workflow_host_owner: root")
    _edit(wf, "host: hpc.example.org", f"host: {site.hpc.address}")
    # The host key "from the site's admin": cat /etc/ssh/ssh_host_ed25519_key.pub on the site.
    host_key = site.hpc.run("cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2]
    _edit(
        wf,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleOnlyReplaceWithTheSitesRealHostKeyXX",
        " ".join(host_key),
    )
    st = inv / "group_vars" / "ssh_targets.yml"
    _edit(st, "ssh_target_from: [192.0.2.10]", f"ssh_target_from: [{lab.controller}]")
    _edit(
        st,
        '# ssh_target_scripts_src: "{{ inventory_dir }}-files/nims-xrd-scripts/"\n',
        'ssh_target_scripts_src: "{{ inventory_dir }}-files/nims-xrd-scripts/"\n',
    )
    _edit(
        inv / "group_vars" / "api_servers.yml",
        '# api_server_pip_extra_args: ""',
        f'api_server_pip_extra_args: "--no-index --find-links {WHEELS}"',
    )
    pol = inv / "group_vars" / "pollers.yml"
    _edit(pol, "poller_host_url: https://mint.example.org:50443", f"poller_host_url: {site.url}")
    _edit(
        pol,
        '# poller_host_pip_extra_args: ""',
        f'poller_host_pip_extra_args: "--no-index --find-links {WHEELS}"',
    )
    # The site's programs beside the inventory: the poller's replaces the example's placeholder.
    scripts = files / "nims-xrd-scripts"
    scripts.mkdir()
    (scripts / "sample_program.sh").write_text(SAMPLE_PROGRAM)
    (scripts / "sample_program.sh").chmod(0o755)
    fit = files / "nims-xrd-programs" / "xrd-fit"
    fit.write_text(FIT)
    fit.chmod(0o755)
    # §0 step 2's self-signed certificate for a test set-up, for the API server's address.
    tls = files / "tls"
    tls.mkdir()
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "825",
            "-subj",
            "/CN=api",
            "-addext",
            f"subjectAltName=IP:{site.api.address}",
            "-keyout",
            str(tls / "privkey.pem"),
            "-out",
            str(tls / "fullchain.pem"),
        ],
        check=True,
        capture_output=True,
    )
    shutil.copy(tls / "fullchain.pem", tls / "ca.pem")


def _vault_token(site: Site, token: str) -> None:
    """docs/setup.md §4: the token from a vault (encrypt_string --name vault_poller_host_token)."""
    vaulted = vault_poller_token(site.vault_pass, token, env=controller_env(site.lab))
    with (site.inventory / "group_vars" / "pollers.yml").open("a") as f:
        f.write(vaulted)


def _diff(a: Path, b: Path) -> str:
    out: list[str] = []
    for path in sorted(p for p in a.rglob("*") if p.is_file()):
        rel = path.relative_to(a)
        out += difflib.unified_diff(
            path.read_text().splitlines(keepends=True),
            (b / rel).read_text().splitlines(keepends=True),
            f"example/{rel}",
            f"prod/{rel}",
        )
    return "".join(out)


def _operator_ssh(site: Site) -> None:
    """What the operator has before docs/setup.md starts: ssh from the controller to every host
    as an account with sudo (§0 "What the hosts need"), with their own key and known_hosts."""
    ssh = site.home / ".ssh"
    ssh.mkdir(mode=0o700)
    shutil.copy(site.lab.key, ssh / "id_ed25519")
    (ssh / "id_ed25519").chmod(0o600)
    shutil.copy(site.lab.known_hosts, ssh / "known_hosts")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    t_start = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="xlab-"))
    root.chmod(0o755)
    reap_orphans()  # what labs of killed test runs left behind
    lab = Lab(root, pick_octet())  # the lab owns root: its teardown (or reaper) removes it
    try:
        lab.start()
        wheels = wheelhouse(home_dir() / ".cache" / "mint-extcomp" / "lab-wheelhouse")
        wheel_files = {f"{WHEELS}/{w.name}": (w.read_bytes(), 0o644) for w in wheels.glob("*.whl")}
        # New hosts; the API server and the poller host have the sites' local package mirror.
        api = lab.add_host("api", 1, wheel_files)
        hpc = lab.add_host("hpc", 2, {})
        poller = lab.add_host("poller", 3, wheel_files)
        t0 = time.monotonic()
        lab.boot_all([api, hpc, poller])
        TIMINGS["boot 3 hosts"] = time.monotonic() - t0
        home = root / "workflow-home"
        home.mkdir(mode=0o700)
        vault_pass = root / "vault-pass"
        vault_pass.write_text("lab-vault-password\n")
        vault_pass.chmod(0o600)
        # §0 step 1: cp -r inventories/example inventories/prod (and example-files prod-files).
        inventory = root / "inventories" / "prod"
        files = root / "inventories" / "prod-files"
        shutil.copytree(REPO / "inventories" / "example", inventory)
        shutil.copytree(REPO / "inventories" / "example-files", files)
        logs = tmp_path_factory.mktemp("lab-runs")
        site = Site(lab, root, inventory, files, home, vault_pass, files / "tls" / "ca.pem", logs)
        _operator_ssh(site)
        _documented_edits(site)  # step 2
        site.notes["files"] = "\n".join(
            sorted(str(p.relative_to(files)) for p in files.rglob("*") if p.is_file())
        )

        # Step 3's preview on the new hosts (--check --diff, before anything is installed).
        site.runs["preview"] = site.playbook(
            "site.yml", "--limit", "all:!pollers", "--check", "--diff", log="preview"
        )
        # Step 3: everything but the pollers.
        site.runs["first"] = site.playbook("site.yml", "--limit", "all:!pollers", log="first")
        site.notes["api_after_first"] = (
            "serving"
            if site.wait_api(15)
            else site.api.run(
                "journalctl", "-u", "extcomp-api.service", "-n", "12", "--no-pager", check=False
            ).stdout
        )
        # Step 4: the poller's token (and step 6's for the workflow), the poller's into the vault.
        site.tokens["poller"] = site.mint_token("mint", f"poller:{SITE}")
        site.tokens["workflow"] = site.mint_token("mint", "workflow")
        _vault_token(site, site.tokens["poller"])
        site.notes["edits"] = _diff(REPO / "inventories" / "example", inventory)
        (logs / "inventory-edits.diff").write_text(site.notes["edits"])
        (logs / "inventory-files.txt").write_text(site.notes["files"] + "\n")
        # Step 5: the whole site; then again (changed=0), and in check mode (changed=0).
        site.runs["complete"] = site.playbook("site.yml", log="complete")
        site.runs["again"] = site.playbook("site.yml", log="again")
        site.runs["check"] = site.playbook("site.yml", "--check", "--diff", log="check")
        TIMINGS["set-up (5 site.yml runs)"] = sum(
            site.runs[k].seconds for k in ("preview", "first", "complete", "again", "check")
        )
        yield site
    finally:
        t0 = time.monotonic()
        lab.close()  # already done by the last test, unless an earlier one stopped the module
        TIMINGS.setdefault("teardown", time.monotonic() - t0)
        shutil.rmtree(root, ignore_errors=True)
        TIMINGS["lab module"] = time.monotonic() - t_start
