"""Run playbooks/run_step.yml through ansible-runner: the only module that imports ansible_runner.

One call of `play()` is one ansible-playbook run with some of the step's tags. It builds the ssh
options (pinned host keys, one ControlMaster connection shared by Ansible's raw tasks and rsync,
keep-alives so a dead link is noticed), the inventory and the extra vars, and reports each event
to a callback; failures come back as typed errors from runner.events. ansible-playbook, its
workers and the ssh and rsync they run never outlive the runner, however it ends (see _GUARD).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from runner import resources, sshgate
from runner.answers import NOT_SENT_RC, write_answer
from runner.errors import Interrupted, StepError, TransportError, UsageError
from runner.events import (
    SSH_KNOWN_HOSTS,
    TASKS,
    TaskDone,
    answer_of,
    classify_failure,
    classify_unreachable,
)
from runner.steps import HostSpec
from runner.transfer import Rsynced, rsync_argv, rsync_remote, run_rsync

log = logging.getLogger(__name__)

# AES-GCM first: this class of machine has AES-NI, where it beats chacha20 for bulk rsync data.
_CIPHERS = "aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes256-gcm@openssh.com"
CONNECT_TIMEOUT_S = 10
# How long the playbook's first task waits for the answer of the command sent beside it before
# sending it itself: a handshake's timeout and a little.
SIDE_WAIT_S = CONNECT_TIMEOUT_S + 5
EX_USAGE = 64  # extcomp-remote's exit code for a usage error (an option it does not know)
INVENTORY_HOST = "extcomp_target"

# ansible-playbook runs below this guard (ansible_runner's `binary` is `python -I -S -c _GUARD`),
# so that it cannot outlive the runner, whatever ends the runner (kill -9 included). The guard
# asks Linux to send it SIGTERM when the runner dies (prctl PR_SET_PDEATHSIG, checked against the
# race with getppid), starts ansible-playbook as its child and passes SIGTERM on, the runner's
# Ctrl-C included. ansible-playbook passes SIGTERM on to its workers (each in its own session) and
# each worker to its process group: the ssh and rsync it runs. SIGKILL follows if that hangs.
# Only the ssh ControlMaster stays: it detaches by design (ControlPersist) and idles out.
# Arguments: RUNNER_PID PIDFILE ansible-playbook ARGS...
_GUARD = """
import ctypes, os, signal, sys
runner, pidfile, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
child = 0
def stop(signum, frame):
    if child:
        os.kill(child, signal.SIGTERM)
        signal.alarm(15)
def kill(signum, frame):
    os.kill(child, signal.SIGKILL)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGALRM, kill)
prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
if prctl is not None:
    prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != runner:
    sys.exit(143)  # the runner died before the request took effect
with open(pidfile + ".new", "w") as fh:
    fh.write(str(os.getpid()))
os.replace(pidfile + ".new", pidfile)
child = os.fork()
if child == 0:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
sys.exit(128 - code if code < 0 else code)
"""


@dataclass(frozen=True, slots=True)
class PlayRequest:
    """What one ansible-playbook run needs: the host, tags, the step's extra vars, a work dir."""

    host: HostSpec
    tags: tuple[str, ...]
    extravars: dict[str, Any]
    private_dir: Path
    ident: str
    # ansible's own reconnects (rc 255, backoff 2**n - 1 s). Zero until the host was reached once:
    # a wrong port, key or host key is a configuration error to report at once, not a blip.
    ssh_retries: int = 3
    # What to send beside ansible-playbook while it starts up (when the mkdir tag is run); the
    # playbook's tasks take the answers. None: just open the master connection meanwhile.
    side: SidePlan | None = None


@dataclass
class PlayEvents:
    """Callbacks the driver passes in; all optional."""

    on_start: Callable[[str], None] = lambda phase: None
    on_done: Callable[[TaskDone], None] = lambda done: None
    on_retry: Callable[[str], None] = lambda phase: None


@dataclass
class _Collector:
    host_label: str
    events: PlayEvents
    known_hosts: str
    failure: StepError | None = None
    done: list[TaskDone] = field(default_factory=list)

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        phase = TASKS.get(str(data.get("task") or ""), "")
        res = data.get("res") or {}
        if kind == "runner_on_start" and phase:
            self.events.on_start(phase)
        elif kind in ("runner_on_ok", "runner_on_skipped") and phase:
            done = TaskDone(phase, res, answer_of(res))
            self.done.append(done)
            self.events.on_done(done)
        elif kind == "runner_retry" and phase:
            self.events.on_retry(phase)
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            self.failure = self.failure or classify_failure(
                phase or "task", res, self.host_label, self.known_hosts
            )
        elif kind == "runner_on_unreachable":
            self.failure = self.failure or classify_unreachable(
                res, self.host_label, self.known_hosts
            )
        return True  # keep ansible-runner's own job_events files: they are the step's audit log


def control_dir() -> Path:
    """A short private dir for ControlMaster sockets (a socket path must stay under ~100 bytes)."""
    path = Path("/tmp") / f"extcomp-cp-{os.getuid()}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        st = path.lstat()
        if not path.is_dir() or path.is_symlink() or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise TransportError(f"{path} is not a private dir of this user; remove it") from None
    return path


def control_path(host: HostSpec) -> Path:
    """One master connection per (host, port, user, key, known_hosts, inventory).

    ssh's own %C token hashes host, port and user only: two steps to the same account with
    different keys (say a gated and an unrestricted one) would share a connection, and the second
    would silently run with the first one's key and restrictions.
    """
    identity = "\0".join(
        str(x)
        for x in (host.host, host.port, host.user, host.key, host.known_hosts, host.inventory)
    )
    digest = hashlib.sha256(identity.encode()).hexdigest()[:24]
    return control_dir() / digest


def ssh_args(host: HostSpec) -> str:
    """ssh options for Ansible's connection and, through the action plugin, for rsync."""
    opts = {
        "ControlMaster": "auto",
        "ControlPersist": "60s",
        "ControlPath": str(control_path(host)),
        "BatchMode": "yes",
        "StrictHostKeyChecking": "yes",
        "ServerAliveInterval": "15",
        "ServerAliveCountMax": "3",
        "Ciphers": _CIPHERS,
    }
    return " ".join(f"-o {k}={v}" for k, v in opts.items())


def inventory_for(host: HostSpec) -> tuple[dict[str, Any] | str, str | None]:
    """An inventory (dict, or the user's inventory path) and the host pattern to use."""
    if host.inventory is not None:
        return str(host.inventory), host.host
    hostvars: dict[str, Any] = {"ansible_host": host.host, "ansible_connection": "ssh"}
    common: list[str] = []
    if host.port:
        hostvars["ansible_port"] = host.port
    if host.user:
        hostvars["ansible_user"] = host.user
    if host.key:
        hostvars["ansible_ssh_private_key_file"] = str(host.key.resolve())
        common += ["-o", "IdentitiesOnly=yes"]
    if host.known_hosts:
        common += ["-o", f"UserKnownHostsFile={host.known_hosts.resolve()}"]
    if common:
        hostvars["ansible_ssh_common_args"] = shlex.join(common)
    return {"all": {"hosts": {INVENTORY_HOST: hostvars}}}, None


def _envvars(private_dir: Path, host: HostSpec, ssh_retries: int) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "/usr/bin:/bin")]),
        "ANSIBLE_CONFIG": str(resources.ansible_cfg()),
        "ANSIBLE_SSH_ARGS": ssh_args(host),
        "ANSIBLE_TIMEOUT": str(CONNECT_TIMEOUT_S),
        "ANSIBLE_SSH_RETRIES": str(ssh_retries),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_USETTY": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(private_dir / "tmp"),
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        # The inventory the runner writes (hosts.json) is read by the yaml plugin; loading the
        # other five default plugins (and parsing their docs) costs ansible-playbook ~0.05 s
        # CPU at every start. An operator's own inventory may be of any kind: all stay enabled.
        **({"ANSIBLE_INVENTORY_ENABLED": "yaml"} if host.inventory is None else {}),
    }


@dataclass
class _Stop:
    """What Ctrl-C or SIGTERM asked for: `stopping` once passed on to the guard (ansible-playbook
    then stops its workers and their ssh/rsync), `cancel` to have ansible-runner SIGKILL it."""

    guard_pidfile: Path
    stopping: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event = field(default_factory=threading.Event)
    on_request: Callable[[], None] | None = None  # also stop what runs beside the playbook

    def request(self) -> None:
        if self.on_request is not None:
            self.on_request()
        if not self.stopping.is_set():
            try:
                os.kill(int(self.guard_pidfile.read_text()), signal.SIGTERM)
            except (OSError, ValueError):
                pass  # not started yet, or already gone: ansible-runner's own cancel will do
            else:
                self.stopping.set()
                return
        self.cancel.set()  # a second request, or no guard to ask

    @property
    def requested(self) -> bool:
        return self.stopping.is_set() or self.cancel.is_set()


@contextmanager
def _stop_on_signals(guard_pidfile: Path) -> Iterator[_Stop]:
    """Turn Ctrl-C / SIGTERM into a stop request (ansible-runner polls `cancel`)."""
    stop = _Stop(guard_pidfile)
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: object) -> None:
        stop.request()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _ssh_argv(host: HostSpec) -> list[str]:
    """ssh with the options Ansible's connection uses, so both share one master connection."""
    argv = ["ssh", *shlex.split(ssh_args(host)), "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}"]
    if host.port:
        argv += ["-p", str(host.port)]
    if host.user:
        argv += ["-l", host.user]
    if host.key:
        argv += ["-i", str(host.key.resolve()), "-o", "IdentitiesOnly=yes"]
    if host.known_hosts:
        argv += ["-o", f"UserKnownHostsFile={host.known_hosts.resolve()}"]
    return argv


def _prewarm(host: HostSpec) -> subprocess.Popen[bytes] | None:
    """Open the master connection in the background while ansible-playbook starts up.

    ansible-playbook spends ~0.5 s importing before its first task; the ssh handshake (~0.3 s)
    fits inside that. `-N` opens no session, so a gated key's forced command never runs. Any
    failure is ignored here: the first task then reports it with its own, classified error.
    """
    if host.inventory is not None or control_path(host).exists():
        return None
    argv = _ssh_argv(host)
    argv[1:1] = ["-o", "ControlMaster=yes"]  # the first -o wins over ssh_args' "auto"
    argv += ["-f", "-N", "--", host.host]
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


@dataclass(frozen=True, slots=True)
class SideAnswer:
    """How a command sent beside the playbook ended: ssh's exit code and what it printed."""

    rc: int
    stdout: str
    stderr: str


class SideCommand:
    """One helper command sent over the step's ssh master connection, beside ansible-playbook.

    Round trips go this way where ansible-playbook works alone: the mkdir and the start while
    it starts up (the mkdir with `open_master`: this ssh opens the master, after sshgate's turn;
    see SidePlan, whose push is an rsync), and the clean after the recorded pull while it shuts
    down (only over a master that is up, never a connection of its own). Each is the command
    line the playbook's task sends, through the same gate, and one that may run twice; any
    failure is the cue to let the playbook's task send it, which reports errors with their
    classified reasons.
    """

    def __init__(self, proc: subprocess.Popen[bytes], out: Any, err: Any) -> None:
        self._proc, self._out, self._err = proc, out, err

    @classmethod
    def start(
        cls, host: HostSpec, command: str, *, open_master: bool = False
    ) -> SideCommand | None:
        """Send `command`; over the open master, or (`open_master`) opening it if it is down."""
        if host.inventory is not None or not (open_master or control_path(host).exists()):
            return None
        argv = _ssh_argv(host)
        if not open_master:
            argv[1:1] = ["-o", "ControlMaster=no"]  # a client of the master, never a new one
        # Files, not pipes: a master that ssh might still fork must not hold our pipe open.
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 (closed in finish)
        try:
            proc = subprocess.Popen(
                [*argv, "--", host.host, command], stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        except OSError:
            out.close()
            err.close()
            return None
        return cls(proc, out, err)

    def finish(self) -> SideAnswer:
        """Wait for the answer (bounded: the connect timeout, then a kill)."""
        try:
            rc = wait_bounded(self._proc, CONNECT_TIMEOUT_S + 20)
        except BaseException:  # Ctrl-C while waiting: do not leave the ssh behind
            self._proc.kill()
            self._proc.wait()
            raise
        texts = []
        for fh in (self._out, self._err):
            fh.seek(0)
            texts.append(fh.read().decode(errors="replace"))
            fh.close()
        return SideAnswer(rc, texts[0], texts[1])

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()


@dataclass(frozen=True, slots=True)
class SidePlan:
    """The round trips the runner sends itself, over the master connection it opens, while
    ansible-playbook starts up (~0.8 s of imports and parsing before its first task): the mkdir,
    which opens the master; then the push of `push` into the dir the mkdir named; then `start`;
    then, when the start's answer says the program has ended and the host has removed what must
    never leave it (the supervisor's own purge), the pull into `pull_dest`. Each only once the
    one before succeeded and no stop was asked for. Each is what the playbook's task for it
    sends, and may run twice (mkdir answers created: false, rsync sends only what is missing,
    run answers already_started); each task takes its answer from a file (runner.answers) and
    sends the command itself when the answer failed or was not sent."""

    mkdir: str
    push: tuple[str, ...] = ()
    start: str | None = None
    start_wait: float = 0.0  # how long the start task waits for the runner's answer
    progress_file: str | None = None
    pull_dest: str | None = None  # needs `start`: a pull only of a program seen to end
    pull_exclude: tuple[str, ...] = ()
    # With nothing to push, the start line with --mkdir (helper 0.4): mkdir and start in one
    # round trip, whose answer (both answers' keys) is then both tasks' answer.
    mkdir_start: str | None = None

    @property
    def first(self) -> str:
        """The command sent first, which opens the master."""
        return self.mkdir_start or self.mkdir


def ended_and_purged(answer: dict[str, Any]) -> bool:
    """Whether a start/wait answer says the program has ended and the supervisor removed what
    the never-return list names: what the playbook's purge task is skipped for, and the only
    answer after which the runner pulls beside the playbook."""
    return (
        answer.get("state", "running") not in ("running", "created", "lost")
        and "never_return_removed" in answer
    )


class _SideChain:
    """Sends a SidePlan's round trips in order on a thread; every answer file gets written."""

    def __init__(
        self, host: HostSpec, plan: SidePlan, first: SideCommand, tmp: Path, ident: str
    ) -> None:
        self.host, self.plan, self.tmp, self.ident = host, plan, tmp, ident
        self.files = {"mkdir": tmp / f"side-{ident}.json"}
        if plan.push:
            self.files["push"] = tmp / f"side-push-{ident}.json"
        if plan.start is not None:
            self.files["start"] = tmp / f"side-start-{ident}.json"
            if plan.pull_dest is not None:
                self.files["pull"] = tmp / f"side-pull-{ident}.json"
        for path in self.files.values():
            path.unlink(missing_ok=True)
        self.stopped = threading.Event()
        self._current: SideCommand | subprocess.Popen[bytes] | None = first
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="extcomp-side", daemon=True)

    def extravars(self) -> dict[str, Any]:
        # The mkdir's answer comes with the start's when both go in one round trip.
        mkdir_wait = SIDE_WAIT_S if self.plan.mkdir_start is None else self.plan.start_wait
        found = {"step_side_answer": str(self.files["mkdir"]), "step_side_wait": mkdir_wait}
        # A push or pull task waits as long as the transfer takes: the runner's rsync ends (or
        # ssh's keepalive ends it), and a runner that dies takes ansible-playbook with it.
        if "push" in self.files:
            found.update(step_side_push_answer=str(self.files["push"]), step_side_push_wait=86400)
        if "start" in self.files:
            found.update(
                step_side_start_answer=str(self.files["start"]),
                step_side_start_wait=self.plan.start_wait,
            )
        if "pull" in self.files:
            found.update(step_side_pull_answer=str(self.files["pull"]), step_side_pull_wait=86400)
        return found

    def stop(self) -> None:
        """No further round trip; the one in flight is stopped (its task sends it again)."""
        self.stopped.set()
        with self._lock:
            current = self._current
        if current is not None:
            current.stop() if isinstance(current, SideCommand) else current.terminate()

    def _run(self) -> None:
        pending = dict(self.files)
        try:
            first = self._current
            assert isinstance(first, SideCommand)
            answer = first.finish()
            started: SideAnswer | None = None
            if self.plan.mkdir_start is not None:
                if answer.rc == EX_USAGE and "--mkdir" in answer.stderr:
                    # A helper older than 0.4: mkdir, then the start, one round trip each.
                    sent = self._track(SideCommand.start(self.host, self.plan.mkdir))
                    if sent is None:
                        return
                    answer = sent.finish()
                else:
                    started = answer
            write_answer(pending.pop("mkdir"), answer.rc, answer.stdout, answer.stderr)
            if answer.rc != 0:
                return
            rsync_dir = str(json.loads(answer.stdout).get("rsync_dir") or "")
            if not rsync_dir or self.stopped.is_set():
                return
            remote = rsync_remote(self.host.host, rsync_dir)
            if "push" in pending and not self._answered(
                "push", self._rsync("push", remote), pending
            ):
                return
            if "start" not in pending or self.plan.start is None or self.stopped.is_set():
                return
            if started is None:
                sent = self._track(SideCommand.start(self.host, self.plan.start))
                if sent is None:
                    return
                started = sent.finish()
            write_answer(pending.pop("start"), started.rc, started.stdout, started.stderr)
            ended = started.rc == 0 and ended_and_purged(answer_of({"stdout": started.stdout}))
            if "pull" in pending and ended:
                self._answered("pull", self._rsync("pull", remote), pending)
        except Exception:  # whatever went wrong here, the playbook's tasks do the rest
            log.debug("a round trip beside the playbook failed", exc_info=True)
        finally:
            for path in pending.values():
                write_answer(path, NOT_SENT_RC, "", "not sent")

    @staticmethod
    def _answered(name: str, done: Rsynced, pending: dict[str, Path]) -> bool:
        write_answer(pending.pop(name), done.rc, done.stdout, done.stderr, seconds=done.seconds)
        return done.rc == 0

    def _track(self, current: SideCommand | None) -> SideCommand | None:
        with self._lock:
            if self.stopped.is_set():
                if current is not None:
                    current.stop()
                return current
            self._current = current
        return current

    def _rsync(self, direction: str, remote: str) -> Rsynced:
        """The push or pull task's rsync, over the master, under the guard (it must not outlive
        us); it has ended, whatever happens here, before its task may run its own."""
        ssh = _ssh_argv(self.host)
        ssh[1:1] = ["-o", "ControlMaster=no"]  # a client of the master, never a new one
        if direction == "pull":
            assert self.plan.pull_dest is not None
            os.makedirs(self.plan.pull_dest, exist_ok=True)
        argv = rsync_argv(
            direction,
            ssh,
            remote,
            sources=self.plan.push,
            dest=self.plan.pull_dest or "",
            exclude=self.plan.pull_exclude if direction == "pull" else (),
        )
        pidfile = self.tmp / f"guard-{direction}-{self.ident}.pid"
        guarded = [sys.executable, "-I", "-S", "-c", _GUARD, str(os.getpid()), str(pidfile)]
        with self._lock:
            if self.stopped.is_set():
                return Rsynced(NOT_SENT_RC, "", "not sent", 0, 0.0)
            proc = subprocess.Popen(
                [*guarded, *argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            self._current = proc
        try:
            return run_rsync(argv, self.plan.progress_file, direction, started=proc)
        except BaseException:
            proc.terminate()  # the guard passes it on to rsync (a SIGKILL would orphan rsync)
            wait_bounded(proc, 20)
            raise


def wait_bounded(proc: subprocess.Popen[bytes], seconds: float) -> int:
    """proc's exit code, killing it after `seconds`. Popen.wait(timeout) polls with sleeps of up
    to 50 ms (Python 3.11), which every round trip beside the playbook paid after its ssh ended;
    a blocking wait returns at once, and a timer does the bounding."""
    timer = threading.Timer(seconds, proc.kill)
    timer.daemon = True
    timer.start()
    try:
        return proc.wait()
    finally:
        timer.cancel()


def _reap(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None:
        wait_bounded(proc, CONNECT_TIMEOUT_S + 5)


def _ansible_runner() -> ModuleType:
    """ansible_runner, imported when a playbook runs: `extcomp-ssh --help`, usage errors and the
    step records work on a host that has not installed the `ssh` extra."""
    try:
        import ansible_runner
        import ptyprocess  # type: ignore[import-untyped]  # pexpect's, hence ansible-runner's
    except ImportError:
        raise UsageError(
            "SSH mode needs ansible-runner and ansible-core, which are not installed here: "
            "install the `ssh` (or `workflow`) extra, e.g. pip install 'mint-extcomp[workflow]'"
        ) from None
    _no_sleep_after_exit(ptyprocess.PtyProcess)
    return cast(ModuleType, ansible_runner)


def _no_sleep_after_exit(pty_class: Any) -> None:
    """ansible-runner closes ansible-playbook's pty only once it has seen EOF and the process
    has been reaped; ptyprocess's close() then still sleeps `delayafterclose` (0.1 s, "to give
    the kernel time to update the process status") before asking again. For a child already
    reaped there is nothing to wait for: skip that sleep, keep it for a live child."""
    if getattr(pty_class, "_extcomp_close", False):
        return
    close = pty_class.close

    def close_reaped_at_once(self: Any, force: bool = True) -> None:
        if self.terminated:
            self.delayafterclose = 0.0
        close(self, force)

    pty_class.close = close_reaped_at_once
    pty_class._extcomp_close = True


def play(request: PlayRequest, events: PlayEvents) -> list[TaskDone]:
    """Run the playbook with `request.tags`; return the finished tasks or raise a StepError."""
    inventory, pattern = inventory_for(request.host)
    limit = pattern
    extravars = {**request.extravars, "step_host": pattern or INVENTORY_HOST}
    request.private_dir.mkdir(parents=True, exist_ok=True)
    (request.private_dir / "tmp").mkdir(exist_ok=True)
    known = request.host.known_hosts
    collector = _Collector(
        request.host.label(), events, str(known.resolve()) if known else SSH_KNOWN_HOSTS
    )
    guard_pidfile = request.private_dir / "tmp" / f"guard-{request.ident}.pid"
    guard_pidfile.unlink(missing_ok=True)
    guarded = [str(os.getpid()), str(guard_pidfile), "ansible-playbook", str(resources.playbook())]
    # A new connection (no open ControlMaster) waits for this host's turn first.
    master = control_path(request.host)
    sshgate.wait_turn(request.host, needed=lambda: not master.exists())
    warming: subprocess.Popen[bytes] | None = None
    # ansible-runner writes env/extravars and env/envvars only when they are missing, and then
    # reads them in every later run, over the values passed in: run 2 of a step got run 1's
    # ANSIBLE_SSH_RETRIES (0 before the host was reached) and run 1's answer files. Nothing is
    # taken from files (suppress_env_files); files an older version left are removed.
    for name in ("envvars", "extravars", "cmdline", "settings", "passwords", "ssh_key"):
        (request.private_dir / "env" / name).unlink(missing_ok=True)
    chain: _SideChain | None = None
    with _stop_on_signals(guard_pidfile) as stop:
        if request.side is not None:
            first = SideCommand.start(request.host, request.side.first, open_master=True)
            if first is not None:
                # These round trips ride on the handshake, while ansible-playbook starts up.
                tmp = request.private_dir / "tmp"
                chain = _SideChain(request.host, request.side, first, tmp, request.ident)
                extravars.update(chain.extravars())
                stop.on_request = chain.stop
                chain.thread.start()
        if chain is None:
            warming = _prewarm(request.host)
        result = _ansible_runner().run(
            private_data_dir=str(request.private_dir),
            binary=sys.executable,
            cmdline=shlex.join(["-I", "-S", "-c", _GUARD, *guarded]),
            inventory=inventory,
            limit=limit,
            extravars=extravars,
            tags=",".join(request.tags),
            envvars=_envvars(request.private_dir, request.host, request.ssh_retries),
            event_handler=collector,
            cancel_callback=stop.cancel.is_set,
            ident=request.ident,
            quiet=True,
            rotate_artifacts=20,
            suppress_env_files=True,
        )
    _reap(warming)
    if chain is not None:
        if stop.requested:
            chain.stop()
        chain.thread.join()  # bounded: finish() kills an ssh that outlives its timeout
    if result.status == "canceled" or stop.requested:
        raise Interrupted("interrupted")
    if collector.failure is not None:
        raise collector.failure
    if result.status != "successful":
        raise StepError(
            f"ansible-playbook ended {result.status} (rc {result.rc}); see the artifacts in "
            f"{request.private_dir / 'artifacts' / request.ident}"
        )
    return collector.done
