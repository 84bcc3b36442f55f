"""The lab, end to end: site.yml from a copy of inventories/example, both data paths through what
it installed, the services and timers under systemd, link cuts, retire.yml, and a clean teardown.

The tests run in file order on one lab (see conftest.py); each states what it checks. A strict
xfail is a finding in the roles, playbooks or docs: its reason says what is wrong.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fixtures.lab import VENV_BIN, LabHost, controller_env, workflow_home_argv
from tests.lab.conftest import ALIAS, API_CLI, SITE, TIMINGS, Site, skip_unless_lab_can_run

skip_unless_lab_can_run()
pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(1200)]

POLLER_UNIT = f"extcomp-poller-{SITE}.service"
POLLER_CLEANUP = f"extcomp-poller-{SITE}-cleanup"
SSH_CLEANUP = f"extcomp-cleanup-{SITE}"
SSH_BASE = f"/home/extcomp/extcomp-work/{SITE}"
POLLER_WORK = f"/var/tmp/extcomp-poller/{SITE}"


def wait_for(what: str, check: Callable[[], bool], seconds: float, every: float = 0.5) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"not within {seconds:g}s: {what}")


def _inputs(site: Site, name: str) -> Path:
    d = site.root / "inputs" / name
    d.mkdir(parents=True)
    (d / "a.txt").write_text("one two three\n")
    (d / "b.txt").write_text("four five\n")
    return d


def ssh_step(site: Site, name: str, *args: str) -> tuple[subprocess.Popen[str], Path]:
    """`extcomp-ssh run --host <alias>` as docs/setup.md §1 shows, as the workflow account."""
    inputs = _inputs(site, name)
    results = site.root / "results" / name
    results.parent.mkdir(exist_ok=True)
    argv = [
        str(VENV_BIN / "extcomp-ssh"),
        "run",
        "--host",
        ALIAS,
        "--name",
        name,
        "--input",
        str(inputs / "a.txt"),
        "--input",
        str(inputs / "b.txt"),
        "--results",
        str(results),
        "--json",
        "--",
        *args,
    ]
    proc = subprocess.Popen(
        workflow_home_argv(site.home, argv),
        env=controller_env(site.lab),
        cwd=site.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, results


def webapi_calc(site: Site, name: str, *args: str) -> tuple[subprocess.Popen[str], Path]:
    """`extcomp-api submit` (docs/webapi-mode.md) with the workflow's token, as its account."""
    inputs = _inputs(site, name)
    results = site.root / "results" / name
    results.parent.mkdir(exist_ok=True)
    argv = [
        str(VENV_BIN / "extcomp-api"),
        "submit",
        "--url",
        site.url,
        "--ca-file",
        str(site.ca),
        "--site",
        SITE,
        "--command",
        "xrd-fit",
        "--input",
        str(inputs / "a.txt"),
        "--input",
        str(inputs / "b.txt"),
        "--results",
        str(results),
        "--json",
        "--",
        *args,
    ]
    proc = subprocess.Popen(
        workflow_home_argv(site.home, argv),
        env=controller_env(site.lab),
        cwd=site.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, results


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def check_ssh_results(results: Path, rc: int, out: str, err: str) -> None:
    assert rc == 0, f"rc {rc}\n{out}\n{err[-3000:]}"
    summary = (results / "summary.txt").read_text()
    assert "a.txt\t3 words" in summary and "b.txt\t2 words" in summary, summary
    assert "ran on hpc as extcomp" in summary, summary
    assert not (results / "licence.secret").exists(), "the entry script's policy was not applied"


def check_fit_results(results: Path, rc: int, out: str, err: str, args: str) -> None:
    assert rc == 0, f"rc {rc}\n{out}\n{err[-3000:]}"
    fit = (results / "fit.out").read_text().splitlines()
    assert fit == [f"fit on poller as extcomp-poller with: {args}", "5"], fit


# ---- the hosts ---------------------------------------------------------------------------------


def test_lab_hosts_are_real_systemd_hosts(site: Site) -> None:
    """Each host: systemd as PID 1 'running', its own address, host key and sshd unit."""
    keys = set()
    for host in site.lab.hosts.values():
        assert host.run("cat", "/proc/1/comm").stdout.strip() == "systemd"
        assert host.systemctl("is-system-running") == "running", host.systemctl("--failed")
        assert host.systemctl("is-active", "lab-sshd.service") == "active"
        assert f"inet {host.address}/24" in host.run("ip", "-4", "addr", "show", "eth0").stdout
        assert host.run("hostname").stdout.strip() == host.name
        keys.add(host.host_pub)
        assert host.boot_seconds < 30
    assert len(keys) == 3
    TIMINGS.update({f"boot {h.name}": h.boot_seconds for h in site.lab.hosts.values()})


# ---- site.yml, as docs/setup.md §0 says --------------------------------------------------------


def test_preview_in_check_mode_covers_every_host(site: Site) -> None:
    """Step 3's preview on new hosts: every host of the run is previewed, none fails, though the
    workflow key does not exist yet (the SSH target previews with a stand-in)."""
    preview = site.runs["preview"]
    assert set(preview.recap) == {"mint1", "hpc1", "api1"}, preview.tail()
    assert preview.rc == 0 and preview.failed == 0, preview.tail()


def test_first_run_without_the_pollers_completes(site: Site) -> None:
    """§0 step 3 on new hosts: `site.yml --limit 'all:!pollers'` needs no token and completes."""
    first = site.runs["first"]
    assert first.rc == 0 and first.failed == 0, first.tail()
    assert set(first.recap) == {"mint1", "hpc1", "api1"}, first.tail()


def test_api_server_serves_after_the_first_run(site: Site) -> None:
    """The role installed the TLS files from <inventory>-files/tls (key root:extcomp-api 0640) and
    the server answers TLS with no manual step before the token is made (step 4)."""
    assert site.notes["api_after_first"] == "serving", site.notes["api_after_first"]
    key = site.api.run("stat", "-c", "%U:%G %a", "/etc/extcomp-api/key.pem").stdout.split()
    assert key == ["root:extcomp-api", "640"], key


def test_site_completes_once_the_token_is_in_the_vault(site: Site) -> None:
    """Steps 4-5: the token made on the API server, vaulted into group_vars/pollers.yml, then
    the whole site.yml."""
    complete = site.runs["complete"]
    assert complete.rc == 0 and complete.failed == 0, complete.tail()
    assert set(complete.recap) == {"mint1", "hpc1", "api1", "poller1"}


def test_second_site_run_changes_nothing(site: Site) -> None:
    again = site.runs["again"]
    assert again.rc == 0, again.tail()
    assert again.changed == 0, again.changed_tasks()


def test_check_mode_on_the_set_up_site_changes_nothing(site: Site) -> None:
    check = site.runs["check"]
    assert check.rc == 0, check.tail()
    assert check.changed == 0, check.changed_tasks()


def test_inventory_edits_are_only_the_documented_ones(site: Site) -> None:
    """The copy differs from the example only where docs/setup.md §0 sends the operator, and the
    files dir holds only the files it names."""
    edits = site.notes["edits"]
    changed = [
        ln[1:].strip().removeprefix("- ").removeprefix("# ")
        for ln in edits.splitlines()
        if ln[:1] in "+-" and ln[:3] not in ("+++", "---")
    ]
    allowed = (
        # Step 2's table: hosts.yml (addresses; the controller itself as the workflow host),
        # all.yml's login, workflow_hosts.yml (the account, the site's host and host key),
        # ssh_targets.yml (from= and the site's programs), pollers.yml's URL.
        "ansible_host:",
        "ansible_connection: local",
        "ansible_user:",
        "workflow_host_owner:",
        "host:",
        "ssh-ed25519 ",
        "ssh_target_from:",
        "ssh_target_scripts_src:",
        "poller_host_url:",
        # "What the hosts need": a package mirror; step 4: the vaulted token.
        "api_server_pip_extra_args:",
        "poller_host_pip_extra_args:",
        "vault_poller_host_token: !vault |",
        "$ANSIBLE_VAULT;",
    )
    odd = [ln for ln in changed if not ln.startswith(allowed) and not ln.isalnum()]
    assert not odd, edits
    assert site.notes["files"].splitlines() == [
        "nims-xrd-programs/xrd-fit",
        "nims-xrd-scripts/sample_program.sh",
        "tls/ca.pem",
        "tls/fullchain.pem",
        "tls/privkey.pem",
    ]


# ---- both data paths through what site.yml installed ------------------------------------------


def test_ssh_step_through_the_alias(site: Site) -> None:
    """§1: `extcomp-ssh run --host extcomp-nims-xrd` through the gate the role installed."""
    rc, out, err = finish(ssh_step(site, "plain")[0])
    check_ssh_results(site.root / "results" / "plain", rc, out, err)
    # The key can only run the gate's verbs (docs/setup.md §2: `ssh alias id` is refused).
    shell = site.as_workflow("ssh", ALIAS, "id")
    assert shell.returncode == 77, (shell.returncode, shell.stdout, shell.stderr)
    check = site.as_workflow("ssh", ALIAS, "extcomp-remote", "check")
    assert json.loads(check.stdout)["gated"] is True, check.stdout


def test_webapi_calc_through_the_api_server_and_poller(site: Site) -> None:
    """§3/§4 and docs/webapi-mode.md: a calc to the poller the role started, with a fresh token."""
    token = site.home / ".config" / "extcomp" / "token"  # submit's documented default
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text(site.tokens["workflow"] + "\n")
    token.chmod(0o600)
    rc, out, err = finish(webapi_calc(site, "calc", "--steps", "3")[0])
    check_fit_results(site.root / "results" / "calc", rc, out, err, "--steps 3")


# ---- services and timers under systemd ---------------------------------------------------------


def test_services_and_timers_are_enabled_and_running(site: Site) -> None:
    for host, unit in (
        (site.api, "extcomp-api.service"),
        (site.poller, POLLER_UNIT),
        (site.poller, f"{POLLER_CLEANUP}.timer"),
        (site.hpc, f"{SSH_CLEANUP}.timer"),
    ):
        assert host.systemctl("is-active", unit) == "active", (host.name, unit)
        assert host.systemctl("is-enabled", unit) == "enabled", (host.name, unit)
    assert site.poller.run("pgrep", "-u", "extcomp-poller", "-f", "extcomp-poller").returncode == 0
    assert site.api.run("pgrep", "-u", "extcomp-api", "-f", "extcomp-api").returncode == 0


def test_services_restart_after_kill_9(site: Site) -> None:
    """systemd restarts both after SIGKILL of the main pid (Restart=on-failure)."""
    before = {}
    for host, unit in ((site.api, "extcomp-api.service"), (site.poller, POLLER_UNIT)):
        pid = host.show(unit, "MainPID")
        assert pid not in ("", "0"), (unit, pid)
        before[unit] = (host, pid)
        host.run("kill", "-9", pid)
    t0 = time.monotonic()
    for unit, (host, pid) in before.items():

        def restarted(host: LabHost = host, unit: str = unit, pid: str = pid) -> bool:
            new = host.show(unit, "MainPID")
            return new not in ("", "0", pid) and host.show(unit, "ActiveState") == "active"

        # RestartSec: 5 s for the server, 30 s for the poller.
        wait_for(f"{unit} restarted on {host.name}", restarted, 60)
        assert int(host.show(unit, "NRestarts")) >= 1
    TIMINGS["restart after kill -9"] = time.monotonic() - t0
    assert site.wait_api(20)


def test_rendered_units_pass_systemd_analyze_verify(site: Site) -> None:
    """Every unit file the roles wrote: `systemd-analyze verify` prints nothing (facts.md)."""
    units = {
        site.api: ["extcomp-api.service"],
        site.poller: [POLLER_UNIT, f"{POLLER_CLEANUP}.service", f"{POLLER_CLEANUP}.timer"],
        site.hpc: [f"{SSH_CLEANUP}.service", f"{SSH_CLEANUP}.timer"],
    }
    noisy = {}
    for host, names in units.items():
        for name in names:
            path = f"/etc/systemd/system/{name}"
            assert host.exists(path), (host.name, path)
            done = host.run("systemd-analyze", "verify", path, check=False)
            if done.stdout.strip() or done.stderr.strip() or done.returncode:
                noisy[f"{host.name}:{name}"] = (done.returncode, done.stdout + done.stderr)
    assert not noisy, noisy


def _old_and_new_dirs(host: LabHost, base: str, owner: str, old: str, new: str) -> None:
    host.sh(
        f"set -e; for d in {old} {new}; do mkdir -p {base}/$d; echo x > {base}/$d/f; done; "
        f"chown -R {owner}: {base}/{old} {base}/{new}; "
        f"touch -d '40 days ago' {base}/{old}/f {base}/{old}"
    )


OLD_ID = "00000000-0000-4000-8000-00000000000a"
NEW_ID = "00000000-0000-4000-8000-00000000000b"


def test_cleanup_jobs_remove_only_old_work_dirs(site: Site) -> None:
    """The cleanup services (what the timers start) remove dirs older than 30 days, no others."""
    _old_and_new_dirs(site.hpc, SSH_BASE, "extcomp", OLD_ID, NEW_ID)
    _old_and_new_dirs(site.poller, POLLER_WORK, "extcomp-poller", "calc-old", "calc-new")
    site.hpc.run("systemctl", "start", f"{SSH_CLEANUP}.service")
    site.poller.run("systemctl", "start", f"{POLLER_CLEANUP}.service")
    assert not site.hpc.exists(f"{SSH_BASE}/{OLD_ID}")
    assert site.hpc.exists(f"{SSH_BASE}/{NEW_ID}/f")
    assert not site.poller.exists(f"{POLLER_WORK}/calc-old")
    assert site.poller.exists(f"{POLLER_WORK}/calc-new/f")


def test_cleanup_timers_fire_on_a_short_calendar(site: Site) -> None:
    """*_cleanup_on_calendar set to every 5 s: each timer fires and removes only the old dir."""
    _old_and_new_dirs(site.hpc, SSH_BASE, "extcomp", OLD_ID, NEW_ID)
    _old_and_new_dirs(site.poller, POLLER_WORK, "extcomp-poller", "calc-old", "calc-new")
    # §2's single-playbook form (the key given with -e) and setup_poller.yml, side by side.
    key = (site.home / ".ssh" / "id_extcomp_ed25519.pub").read_text().strip()
    with ThreadPoolExecutor(2) as pool:
        plays = [
            pool.submit(
                site.playbook,
                "setup_ssh_target.yml",
                "-e",
                json.dumps(
                    {
                        "ssh_target_public_key": key,
                        "ssh_target_cleanup_on_calendar": "*:*:0/5",
                        "ssh_target_cleanup_randomized_delay": "0",
                    }
                ),
                log="short-timer-ssh",
            ),
            pool.submit(
                site.playbook,
                "setup_poller.yml",
                "-e",
                json.dumps(
                    {
                        "poller_host_cleanup_on_calendar": "*:*:0/5",
                        "poller_host_cleanup_randomized_delay": "0",
                    }
                ),
                log="short-timer-poller",
            ),
        ]
        for future in plays:
            play = future.result()
            assert play.rc == 0, play.tail()
    timers = ((site.hpc, f"{SSH_CLEANUP}.timer"), (site.poller, f"{POLLER_CLEANUP}.timer"))
    for host, timer in timers:
        calendar = host.show(timer, "TimersCalendar")
        assert "00/5" in calendar, (host.name, timer, calendar)
    props = "TimersCalendar,RandomizedDelayUSec,NextElapseUSecRealtime,LastTriggerUSec"
    wait_for(
        "both timers fired and removed the old dirs; "
        + "; ".join(f"{h.name}: {h.systemctl('show', '-p', props, t)}" for h, t in timers),
        lambda: (
            not site.hpc.exists(f"{SSH_BASE}/{OLD_ID}")
            and not site.poller.exists(f"{POLLER_WORK}/calc-old")
        ),
        45,
    )
    assert site.hpc.exists(f"{SSH_BASE}/{NEW_ID}/f")
    assert site.poller.exists(f"{POLLER_WORK}/calc-new/f")


# ---- link cuts on the lab's real network path -------------------------------------------------


def _cut_when(host: LabHost, running: str, seconds: float, proc: subprocess.Popen[str]) -> float:
    """Once `running` (a pgrep -f pattern) runs on host, cut its link for `seconds`."""
    wait_for(
        f"{running!r} running on {host.name}",
        lambda: (
            proc.poll() is None and host.run("pgrep", "-f", running, check=False).returncode == 0
        ),
        120,
        every=0.2,
    )
    t0 = time.monotonic()
    with host.link_cut(seconds):
        # The host sees its cable gone, as a real one would.
        assert "NO-CARRIER" in host.run("ip", "link", "show", "eth0").stdout
    return time.monotonic() - t0


def test_link_cut_during_an_ssh_step(site: Site) -> None:
    """The SSH target's cable is out for 30 s while its program runs: the step still ends well."""
    t0 = time.monotonic()
    proc, results = ssh_step(site, "cut", "--sleep", "40")
    cut = _cut_when(site.hpc, "sleep 40", 30, proc)
    rc, out, err = finish(proc)
    check_ssh_results(results, rc, out, err)
    assert cut >= 30
    TIMINGS["ssh step with a 30 s cut"] = time.monotonic() - t0


def test_link_cut_during_a_webapi_calc(site: Site) -> None:
    """The poller host's cable is pulled for 30 s while its calc runs: the calc still ends well."""
    t0 = time.monotonic()
    proc, results = webapi_calc(site, "calc-cut", "--sleep", "40")
    cut = _cut_when(site.poller, f"/opt/extcomp-poller/{SITE}/programs/xrd-fit", 30, proc)
    rc, out, err = finish(proc)
    check_fit_results(results, rc, out, err, "--sleep 40")
    assert cut >= 30
    TIMINGS["webapi calc with a 30 s cut"] = time.monotonic() - t0


# ---- retire.yml, as docs/setup.md §5 says ------------------------------------------------------


def test_retire_undoes_the_site_and_nothing_else(site: Site) -> None:
    hpc, poller, api = site.hpc, site.poller, site.api
    # Things that are not the site's, put there by the admins before: they must stay as they are.
    other_key = site.root / "other_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True
    )
    other_line = other_key.with_suffix(".pub").read_text().strip()
    auth = "/home/extcomp/.ssh/authorized_keys"
    hpc.sh(f"printf '%s\\n' '{other_line} admin@elsewhere' >> {auth}")
    auth_before = hpc.read(auth)
    ssh_dir = site.home / ".ssh"
    with (ssh_dir / "config").open("a") as f:
        f.write("\nHost other-site\n    HostName 192.0.2.99\n")
    with (ssh_dir / "known_hosts_extcomp").open("a") as f:
        f.write(f"other.example.org {other_line.split()[0]} {other_line.split()[1]}\n")
    config_before = (ssh_dir / "config").read_text()
    kh_before = (ssh_dir / "known_hosts_extcomp").read_text()
    users_before = json.loads(api.run(*API_CLI, "users", "list", "--json").stdout)

    retire = site.playbook(
        "retire.yml",
        "--limit",
        "hpc1,poller1,api1,mint1",
        "-e",
        json.dumps({"retire_workflow_aliases": [ALIAS]}),
        log="retire",
    )
    assert retire.rc == 0, retire.tail()

    # The key is refused (docs: "Permission denied (publickey)").
    refused = subprocess.run(
        [
            "ssh",
            "-i",
            str(ssh_dir / "id_extcomp_ed25519"),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={site.lab.known_hosts}",
            "-o",
            "BatchMode=yes",
            f"extcomp@{hpc.address}",
            "extcomp-remote",
            "version",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode == 255 and "Permission denied (publickey)" in refused.stderr, refused
    # Only the site's line left authorized_keys: every other line byte for byte.
    auth_after = hpc.read(auth)
    expected = b"".join(
        ln
        for ln in auth_before.splitlines(keepends=True)
        if not ln.rstrip().endswith(f"extcomp-site:{SITE}".encode())
    )
    assert auth_after == expected
    assert not hpc.exists(f"/home/extcomp/extcomp/{SITE}")
    assert not hpc.exists(f"/etc/systemd/system/{SSH_CLEANUP}.timer")
    assert hpc.exists(SSH_BASE), "the work dirs stay (ssh_target_retire_work_dirs: false)"

    # The poller is stopped and disabled, its files gone.
    assert poller.show(POLLER_UNIT, "ActiveState") in ("inactive", "failed")
    assert poller.systemctl("is-enabled", POLLER_UNIT) not in ("enabled", "enabled-runtime")
    assert poller.run("pgrep", "-u", "extcomp-poller", check=False).returncode == 1
    for path in (f"/etc/systemd/system/{POLLER_UNIT}", f"/etc/extcomp-poller/{SITE}.token"):
        assert not poller.exists(path), path
    assert not poller.exists(f"/etc/systemd/system/{POLLER_CLEANUP}.timer")

    # The poller's token is revoked (401 → exit 254), the workflow's still works.
    users_after = json.loads(api.run(*API_CLI, "users", "list", "--json").stdout)
    labels_before = sorted(t["label"] for u in users_before for t in u["tokens"])
    labels_after = sorted(t["label"] for u in users_after for t in u["tokens"])
    assert f"poller:{SITE}" in labels_before
    assert labels_after == [lb for lb in labels_before if lb != f"poller:{SITE}"]
    for token, want in ((site.tokens["poller"], 254), (site.tokens["workflow"], 0)):
        tf = site.root / "token-check"
        tf.write_text(token + "\n")
        tf.chmod(0o600)
        done = site.as_workflow(
            str(VENV_BIN / "extcomp-api"),
            "calcs",
            "list",
            "--url",
            site.url,
            "--ca-file",
            str(site.ca),
            "--token-file",
            str(tf),
        )
        assert done.returncode == want, (want, done.returncode, done.stdout, done.stderr)
    assert site.api_serving()

    # The alias and its pinned host key are gone; the rest of ~/.ssh stays.
    config_after = (ssh_dir / "config").read_text()
    assert f"Host {ALIAS}" not in config_after
    assert "Host other-site\n    HostName 192.0.2.99\n" in config_after
    assert config_after == "".join(
        block for block in _blocks(config_before) if f"extcomp site {ALIAS}" not in block
    )
    kh_after = (ssh_dir / "known_hosts_extcomp").read_text()
    assert hpc.address not in kh_after
    assert kh_after == "".join(
        ln for ln in kh_before.splitlines(keepends=True) if hpc.address not in ln
    )
    assert (ssh_dir / "id_extcomp_ed25519").exists(), "the key pair stays"

    again = site.playbook(
        "retire.yml",
        "--limit",
        "hpc1,poller1,api1,mint1",
        "-e",
        json.dumps({"retire_workflow_aliases": [ALIAS]}),
        log="retire-again",
    )
    assert again.rc == 0 and again.changed == 0, again.changed_tasks() or again.tail()


def _blocks(config: str) -> list[str]:
    """ssh config text cut into the role's marked blocks and the text between them."""
    out: list[str] = []
    cur: list[str] = []
    for line in config.splitlines(keepends=True):
        if line.startswith("# BEGIN extcomp site"):
            out.append("".join(cur))
            cur = [line]
        elif line.startswith("# END extcomp site"):
            cur.append(line)
            out.append("".join(cur))
            cur = []
        else:
            cur.append(line)
    out.append("".join(cur))
    return out


def test_api_server_stops_accepting_the_retired_site(site: Site) -> None:
    """§5: remove the site from api_server_sites, run setup_api_server.yml: calcs for it are
    refused, and the running server took the change without a restart (§3)."""
    pid = site.api.show("extcomp-api.service", "MainPID")
    api_vars = site.inventory / "group_vars" / "api_servers.yml"
    text = api_vars.read_text()
    block = "api_server_sites:\n  nims-xrd:\n    commands: [xrd-fit]\n"
    assert block in text
    api_vars.write_text(text.replace(block, "api_server_sites: {}\n"))
    play = site.playbook("setup_api_server.yml", log="api-without-site")
    assert play.rc == 0, play.tail()
    rc, out, err = finish(webapi_calc(site, "calc-after-retire")[0], timeout=120)
    assert rc in (251, 254), (rc, out, err)  # refused: unknown site
    assert SITE in err, err
    assert site.api.show("extcomp-api.service", "MainPID") == pid


# ---- teardown ----------------------------------------------------------------------------------


def test_teardown_leaves_nothing_behind(site: Site) -> None:
    """Power the hosts off: no process, mount, link, netns or cgroup dir of the lab is left."""
    t0 = time.monotonic()
    left = site.lab.close()
    TIMINGS["teardown"] = time.monotonic() - t0
    assert left == []
