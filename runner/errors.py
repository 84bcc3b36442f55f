"""Exception hierarchy of SSH mode; each error carries the CLI exit code that reports it."""

from __future__ import annotations


class StepError(Exception):
    """A step could not be carried out; `exit_code` is what `extcomp-ssh` exits with."""

    exit_code = 125
    kind = "remote-error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UsageError(StepError):
    """Bad flags, step file, input path or results dir: nothing was sent anywhere."""

    exit_code, kind = 2, "usage"


class RemoteError(StepError):
    """The helper on the host failed (cannot create the work dir, work dir gone, lost program)."""

    exit_code, kind = 125, "remote-error"


class EntryNotExecutable(StepError):
    exit_code, kind = 126, "not-executable"


class RemoteMissing(StepError):
    """The helper or the entry script is not installed on the host."""

    exit_code, kind = 127, "missing"


class Interrupted(StepError):
    """Stopped by Ctrl-C or SIGTERM; the step record lets `extcomp-ssh resume` finish it."""

    exit_code, kind = 130, "interrupted"


class TransferError(StepError):
    """rsync failed: remote disk full, I/O error, protocol error."""

    exit_code, kind = 251, "transfer"


class HostKeyError(StepError):
    """The host key is not in the pinned known_hosts file, or it changed."""

    exit_code, kind = 252, "host-key"


class AuthError(StepError):
    exit_code, kind = 253, "auth"


class RefusedError(StepError):
    """The host's gate (forced command) refused what we asked."""

    exit_code, kind = 254, "refused"


class TransportError(StepError):
    """The host could not be reached, or the connection broke and did not come back."""

    exit_code, kind = 255, "transport"


# Exit codes the runner itself uses; a remote program exiting with one of these is still
# reported with it, and the step record/--json output says which it was (outcome field).
EXIT_TIMEOUT = 124
EXIT_BASE_UNUSABLE = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_MISSING = 127
EXIT_CODES: dict[int, str] = {
    2: "usage or configuration error (nothing was run)",
    EXIT_TIMEOUT: "step timeout: the remote program was killed, what existed was pulled",
    EXIT_BASE_UNUSABLE: "the remote helper failed (work dir could not be created, vanished, "
    "program lost)",
    EXIT_NOT_EXECUTABLE: "the entry script is not executable",
    EXIT_MISSING: "the helper, rsync or the entry script is missing on the host",
    130: "interrupted (Ctrl-C); finish it with `extcomp-ssh resume STEP_ID`",
    251: "transfer failed (rsync: remote disk full, I/O error)",
    252: "host key unknown or changed (host keys are pinned)",
    253: "authentication refused",
    254: "refused by the host's gate (command not allowed for this key)",
    255: "host unreachable or connection lost",
}
