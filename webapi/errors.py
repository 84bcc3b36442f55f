"""Exceptions of WebAPI mode and the one table of its commands' exit codes.

Each API error carries a stable code and an HTTP status; `Exit` is what `extcomp-api` and
`extcomp-poller` exit with.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum


class ApiError(Exception):
    """An error with a stable machine code, an HTTP status and a message for humans."""

    code = "internal"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_json(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message}


class BadRequest(ApiError):
    code, status = "bad_request", 400


class Unauthorized(ApiError):
    code, status = "unauthorized", 401


class Forbidden(ApiError):
    code, status = "forbidden", 403


class NotFound(ApiError):
    code, status = "not_found", 404


class Conflict(ApiError):
    code, status = "conflict", 409


class LengthRequired(ApiError):
    code, status = "length_required", 411


class TooLarge(ApiError):
    code, status = "too_large", 413


class ChecksumMismatch(ApiError):
    code, status = "checksum_mismatch", 422


class InsufficientStorage(ApiError):
    """The server's disk cannot take what was asked now; nothing was lost, try again later."""

    code, status = "insufficient_storage", 507


class Damaged(ApiError):
    """A stored file does not match its record (the server's disk was tampered with or broke)."""

    code, status = "damaged", 500


class OffsetMismatch(Conflict):
    """An upload started at an offset other than the bytes the server already holds."""

    code = "offset_mismatch"

    def __init__(self, message: str, *, offset: int) -> None:
        super().__init__(message)
        self.offset = offset

    def to_json(self) -> dict[str, object]:
        return {**super().to_json(), "offset": self.offset}


class ConfigError(Exception):
    """A configuration file is missing, unreadable or invalid; the message says where and why."""


class TransportError(Exception):
    """The server could not be reached, or the connection broke, even after the retries."""


class MalformedAnswer(Exception):
    """The server's answer does not follow the wire contract (a bug or a wrong server)."""


class UsageError(Exception):
    """Bad command-line input or settings: nothing was sent; exit code 2."""


class Exit(IntEnum):
    """Exit codes of the WebAPI-mode commands; `EXIT_CODES` says what each means."""

    OK = 0
    FAILED = 1
    USAGE = 2
    TIMEOUT = 124
    HOST_ERROR = 125
    NOT_ALLOWED = 126
    CANNOT_START = 127
    INTERRUPTED = 130
    NO_POLLER = 249
    SERVER_FULL = 250
    UNKNOWN_SITE = 251
    COMMAND_REFUSED = 252
    CANCELLED = 253
    REFUSED = 254
    UNREACHABLE = 255


EXIT_CODES: dict[Exit, str] = {
    Exit.OK: "success (the calc succeeded; the poller stopped normally)",
    Exit.FAILED: "the calc or the command failed without an exit code of its own",
    Exit.USAGE: "usage or configuration error (nothing was sent)",
    Exit.TIMEOUT: "the remote program hit its time limit and was stopped",
    Exit.HOST_ERROR: "the external host could not run or record the calc (disk full, …)",
    Exit.NOT_ALLOWED: "the poller refused the command (not on its allow-list)",
    Exit.CANNOT_START: "the program could not be started on the external host",
    Exit.INTERRUPTED: "interrupted (Ctrl-C); the calc goes on on the server",
    Exit.NO_POLLER: "refused: the site's pollers all belong to other users",
    Exit.SERVER_FULL: "the server's disk cannot take the files now (nothing lost; try later)",
    Exit.UNKNOWN_SITE: "the server does not know the site",
    Exit.COMMAND_REFUSED: "refused: the command is not on the site's list at the server",
    Exit.CANCELLED: "the calc was cancelled",
    Exit.REFUSED: "the token was refused (unknown, expired or not allowed)",
    Exit.UNREACHABLE: "the server could not be reached or answered off-protocol",
}


# Which extra brings a third-party package, for the one-line error when it is not installed.
EXTRA_OF = {"requests": "poll", "urllib3": "poll", "bottle": "api", "cheroot": "api"}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The one-line error for a package of an extra this host did not install (None: not ours)."""
    root = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(root)
    if extra is None:
        return None
    return (
        f"this command needs {root}, which is not installed here: install the {extra!r} extra "
        f"(pip install 'mint-extcomp[{extra}]'; on a workflow host 'mint-extcomp[workflow]')"
    )


def exit_epilog(codes: Iterable[Exit], *, program_codes: bool = False) -> str:
    """An argparse epilog listing `codes` (use RawDescriptionHelpFormatter)."""
    lines = ["exit codes:"]
    if program_codes:
        lines.append("  0-255  the remote program's own exit code, when it ran")
    lines += [f"  {int(code):<5}  {EXIT_CODES[code]}" for code in sorted(codes)]
    return "\n".join(lines)
