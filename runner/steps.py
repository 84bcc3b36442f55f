"""Typed values at the runner's boundary: where to run (HostSpec), what (StepSpec), the result."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from runner.errors import UsageError

DEFAULT_ENTRY = "execute_remote-side_program_ssh.sh"
DEFAULT_HELPER = "~/extcomp/bin/extcomp-remote"

_HOST_RE = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)"
    r"(?::(?P<port>\d{1,5}))?$"
)
_ENTRY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")
# The helper path is the operator's, sent unquoted so that a leading ~ expands on the host.
_HELPER_RE = re.compile(r"^[A-Za-z0-9_./~+-]+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Phase(StrEnum):
    """The parts of one step, in order; each is a tag of playbooks/run_step.yml."""

    MKDIR = "mkdir"
    PUSH = "push"
    START = "start"
    WAIT = "wait"
    PULL = "pull"
    CLEAN = "clean"


PHASES: tuple[Phase, ...] = tuple(Phase)


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"  # the remote program ran and exited 0
    FAILED = "failed"  # the remote program ran and exited non-zero
    TIMEOUT = "timeout"  # killed at the step timeout; what existed was pulled
    ERROR = "error"  # the step could not be carried out (see reason)
    INTERRUPTED = "interrupted"


@dataclass(frozen=True, slots=True)
class HostSpec:
    """An external host: an inventory/ssh-config alias, or user@host:port with a key."""

    host: str
    user: str | None = None
    port: int | None = None
    key: Path | None = None
    known_hosts: Path | None = None
    inventory: Path | None = None

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        key: Path | None = None,
        known_hosts: Path | None = None,
        inventory: Path | None = None,
    ) -> HostSpec:
        match = _HOST_RE.match(text or "")
        if not match:
            raise UsageError(f"bad host {text!r}: give an alias, host, user@host or user@host:port")
        port = int(match["port"]) if match["port"] else None
        if port is not None and not 0 < port < 65536:
            raise UsageError(f"bad port {port} in {text!r}: give 1-65535")
        for label, path in (("key", key), ("known_hosts", known_hosts), ("inventory", inventory)):
            if path is not None and not path.is_file():
                raise UsageError(f"{label} file {path} does not exist")
        if inventory is not None and (match["user"] or port):
            raise UsageError("with --inventory give the host's inventory name only (no user@/port)")
        return cls(match["host"].strip("[]"), match["user"], port, key, known_hosts, inventory)

    def label(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{self.host}{port}"


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step: inputs to push, the entry script and its arguments, where results go."""

    host: HostSpec
    results_dir: Path
    inputs: tuple[Path, ...] = ()
    args: tuple[str, ...] = ()
    entry: str = DEFAULT_ENTRY
    helper: str = DEFAULT_HELPER
    remote_base: str | None = None
    timeout: float | None = None
    exclude: tuple[str, ...] = ()
    keep_remote: bool = False
    force: bool = False
    name: str = "step"
    reconnect_attempts: int = 8
    # The original MInt SSH sample's contract: the program's output in one file in the work dir,
    # and the pulled files merged into an existing dir (the module's working dir).
    output_log: str | None = None
    merge_results: bool = False

    def validate(self) -> None:
        """Check everything that can be checked locally, before any connection is made."""
        if not _NAME_RE.match(self.name):
            raise UsageError(f"bad step name {self.name!r}: letters, digits, '._-', up to 64")
        if not _ENTRY_RE.match(self.entry):
            raise UsageError(f"bad entry script name {self.entry!r}: give a bare file name")
        if not _HELPER_RE.match(self.helper):
            raise UsageError(f"bad helper path {self.helper!r}: letters, digits and '_./~+-' only")
        if self.remote_base is not None and not self.remote_base.startswith("/"):
            raise UsageError(f"remote base {self.remote_base!r} must be an absolute path")
        if self.timeout is not None and self.timeout <= 0:
            raise UsageError("timeout must be a positive number of seconds")
        if self.output_log is not None and not _ENTRY_RE.match(self.output_log):
            raise UsageError(f"bad output log name {self.output_log!r}: give a bare file name")
        if self.reconnect_attempts < 0:
            raise UsageError("reconnect attempts must be 0 or more")
        names: dict[str, Path] = {}
        for path in self.inputs:
            if not path.exists():
                raise UsageError(f"input {path} does not exist")
            if path.name in names:
                raise UsageError(
                    f"inputs {names[path.name]} and {path} would both land as "
                    f"{path.name!r} in the work dir; rename one"
                )
            names[path.name] = path
        for pattern in self.exclude:
            if not pattern or "\n" in pattern:
                raise UsageError(f"bad --exclude pattern {pattern!r}")


@dataclass(frozen=True, slots=True)
class StepResult:
    """How a step ended; `exit_code` is what the CLI exits with."""

    step_id: str
    outcome: Outcome
    exit_code: int
    remote_rc: int | None
    results_dir: Path | None
    reason: str = ""
    bytes_pushed: int = 0
    bytes_pulled: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """The one summary line every step logs."""
        parts = [f"step {self.step_id}: {self.outcome}", f"rc={self.exit_code}"]
        if self.remote_rc is not None and self.remote_rc != self.exit_code:
            parts.append(f"program rc={self.remote_rc}")
        parts.append(f"pushed {_size(self.bytes_pushed)}")
        parts.append(f"pulled {_size(self.bytes_pulled)}")
        timing = " ".join(f"{k} {v:.2f}s" for k, v in self.seconds.items())
        if timing:
            parts.append(timing)
        if self.results_dir is not None:
            parts.append(f"results {self.results_dir}")
        if self.reason:
            parts.append(f"({self.reason})")
        return ", ".join(parts)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"
