"""Turn ansible-runner events into phase progress and into typed, one-line failure reasons."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from runner.errors import (
    AuthError,
    EntryNotExecutable,
    HostKeyError,
    RefusedError,
    RemoteError,
    RemoteMissing,
    StepError,
    TransferError,
    TransportError,
)

# Task names of playbooks/run_step.yml -> what they do (a test keeps the two in step).
TASKS: dict[str, str] = {
    "Create the work dir on the host": "mkdir",
    "Push the input files": "push",
    "Start the entry script, detached from this connection": "start",
    "Wait for the entry script to finish": "wait",
    "Remove what must never leave the host": "purge",
    "Pull the whole work dir back": "pull",
    "Remove the work dir from the host": "clean",
    "Check the host's set-up": "check",
    "Ask the host for the step's state": "status",
    "Stop the entry script": "kill",
    "Remove orphaned work dirs": "sweep",
}

_HOST_KEY = (
    "host key verification failed",
    "remote host identification has changed",
    "no matching host key",
    "host key for",
    "is not known",
)
_AUTH = ("permission denied", "too many authentication failures", "no supported authentication")
_GATE = "extcomp-remote: refused"
# ssh's own refusal ("Permission denied (publickey)"), not rsync's "Permission denied (13)".
_SSH_AUTH_RE = re.compile(
    r"permission denied \([a-z]|too many authentication failures|no supported authentication"
)
# rsync's exit codes for a connection that broke rather than for bad data: 12 the protocol stream
# ended (the other end vanished), 30 a timeout in data send/receive, 35 a timeout waiting for the
# connection, 255 ssh itself failed. What rsync and ssh print then says the same.
_RSYNC_CONNECTION_RCS = frozenset({12, 30, 35, 255})
_CONNECTION_LOST = (
    "connection unexpectedly closed",
    "connection closed",
    "closed by remote host",
    "connection reset",
    "connection refused",
    "connection timed out",
    "broken pipe",
    "no route to host",
    "network is unreachable",
    "kex_exchange_identification",
    "timeout in data send/receive",
    "timeout waiting for daemon connection",
)


@dataclass
class TaskDone:
    """A task that finished (ok or skipped), with its parsed JSON answer when it gave one."""

    phase: str
    result: dict[str, Any]
    answer: dict[str, Any] = field(default_factory=dict)


def answer_of(res: dict[str, Any]) -> dict[str, Any]:
    """The helper prints one JSON line; anything else (a login banner) is ignored."""
    for line in reversed(str(res.get("stdout", "")).splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                return parsed
    return {}


def _text(res: dict[str, Any]) -> str:
    return " ".join(str(res.get(k, "")) for k in ("msg", "stderr", "stdout", "module_stderr"))


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else text.strip()


# Which file a host-key error points at when the step names none of its own.
SSH_KNOWN_HOSTS = "~/.ssh/known_hosts (or the UserKnownHostsFile of your ssh config or inventory)"


def classify_unreachable(
    res: dict[str, Any], host: str, known_hosts: str = SSH_KNOWN_HOSTS
) -> StepError:
    text = _text(res)
    low = text.lower()
    if any(s in low for s in _HOST_KEY):
        return HostKeyError(
            f"host key of {host} is not pinned or changed: add the right key to "
            f"{known_hosts} (ssh-keyscan, checked out of band); never disable "
            f"checking ({_last_line(text)})"
        )
    if _GATE in text:
        return RefusedError(_gate_line(text))
    if any(s in low for s in _AUTH):
        return AuthError(
            f"authentication to {host} refused: check the user and that the key is "
            f"in its authorized_keys ({_last_line(text)})"
        )
    return TransportError(f"cannot reach {host}: {_last_line(text)}")


def _gate_line(text: str) -> str:
    for line in text.splitlines():
        if _GATE in line:
            return "host refused the command: " + line.split("extcomp-remote: ", 1)[1].strip()
    return "host refused the command"


def classify_failure(
    phase: str, res: dict[str, Any], host: str, known_hosts: str = SSH_KNOWN_HOSTS
) -> StepError:
    """A failed task: map the helper's exit codes (see runner/remote/extcomp-remote) to errors."""
    rc = res.get("rc")
    text = _text(res)
    if _GATE in text or rc == 77:
        return RefusedError(_gate_line(text))
    if phase in ("push", "pull"):
        return _classify_rsync(phase, rc, text, str(res.get("stderr", "")), host, known_hosts)
    if rc == 255 or (isinstance(rc, int) and rc < 0):
        return TransportError(f"connection to {host} lost during {phase} (rc {rc})")
    stderr = str(res.get("stderr", "")) + str(res.get("stdout", ""))
    if rc == 127:
        if "entry script" in stderr:
            return RemoteMissing(_helper_line(stderr))
        return RemoteMissing(
            f"the helper is not installed on {host} (install extcomp-remote, "
            f"or give its path with --helper): {_last_line(stderr)}"
        )
    if rc == 126:
        return EntryNotExecutable(_helper_line(stderr))
    if rc in (64, 65, 66, 73):
        return RemoteError(f"{phase} failed on {host}: {_helper_line(stderr)}")
    return RemoteError(f"{phase} failed on {host} (rc {rc}): {_short(text)}")


def _classify_rsync(
    phase: str, rc: object, text: str, stderr: str, host: str, known_hosts: str
) -> StepError:
    """A failed rsync: what the data or the far end did (251), or a lost connection (255).

    The order matters: a full disk or a refusal also ends in a broken protocol stream (rc 12), and
    a reconnect that meets a changed host key or a revoked key is no blip to retry.
    """
    low = text.lower()
    # rsync's own first complaint says what happened; its progress lines on stdout do not.
    said = next((ln.strip() for ln in stderr.splitlines() if ln.strip()), "") or _last_line(text)
    if "no space left" in low or "disk quota" in low:
        return TransferError(f"{phase} failed: the disk is full ({_short(text)})")
    if "rrsync error" in low:
        return RefusedError(f"host refused the {phase}: {_short(said)}")
    if any(s in low for s in _HOST_KEY) or _SSH_AUTH_RE.search(low):
        # ssh under rsync could not log in
        return classify_unreachable({"msg": text}, host, known_hosts)
    if "rsync: command not found" in low or "rsync: not found" in low:
        return RemoteMissing(f"rsync is not installed on {host}")
    if rc in _RSYNC_CONNECTION_RCS or any(s in low for s in _CONNECTION_LOST):
        return TransportError(f"connection to {host} lost during {phase}: {_short(said)}")
    return TransferError(f"{phase} failed (rsync rc {rc}): {_short(said)}")


def _helper_line(text: str) -> str:
    for line in text.splitlines():
        if "extcomp-remote:" in line:
            return line.split("extcomp-remote:", 1)[1].strip()
    return _last_line(text)


def _short(text: str) -> str:
    line = _last_line(text)
    return line if len(line) < 300 else line[:297] + "..."
