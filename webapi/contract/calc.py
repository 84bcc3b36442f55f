"""The calc and file shapes that cross the wire, defined once for the server, client and poller.

Requests are parsed with `from_json` and raise BadRequest (the server answers 400); answers are
parsed with `from_json` too and raise MalformedAnswer (the client or poller reports a server
that broke the contract). `to_json` gives the exact wire form either way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NoReturn

from webapi.contract.names import COMMAND_RE, check_name
from webapi.contract.timefmt import format_ts, parse_ts
from webapi.errors import BadRequest, MalformedAnswer

CALC_ID_RE = re.compile(r"^c-[0-9a-f]{32}$")
LEASE_ID_RE = re.compile(r"^l-[0-9a-f]{24}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
POLLER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$")
MAX_ARGS = 1000
MAX_ARG_CHARS = 4096
MAX_PROGRESS = 1000
MAX_REASON = 4000
MAX_POLLER_COMMANDS = 1000  # a claim's `commands` list; a poller with more sends none (any calc)
DEFAULT_WAIT = 50


class CalcState(StrEnum):
    REGISTERED = "registered"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({CalcState.SUCCEEDED, CalcState.FAILED, CalcState.CANCELLED})


class _Doc:
    """Typed access to one JSON object; `fail` raises the side's error (BadRequest or
    MalformedAnswer) with a message that names the field."""

    def __init__(self, raw: Any, what: str, fail: Callable[[str], NoReturn]) -> None:
        if not isinstance(raw, dict):
            fail(f"{what} must be a JSON object")
        self.raw: dict[str, Any] = raw
        self.what = what
        self.fail = fail

    def only(self, keys: set[str]) -> None:
        unknown = set(self.raw) - keys
        if unknown:
            self.fail(f"unknown keys {sorted(unknown)}; allowed: {sorted(keys)}")

    def text(self, key: str, *, optional: bool = False, max_len: int = 1 << 16) -> Any:
        value = self.raw.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or len(value) > max_len:
            self.fail(f"{self.what}: '{key}' must be a string of at most {max_len} characters")
        return value

    def integer(self, key: str, *, optional: bool = False, lo: int = 0, hi: int = 1 << 62) -> Any:
        value = self.raw.get(key)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.fail(f"{self.what}: '{key}' must be a whole number {lo}..{hi}")
        return value

    def time(self, key: str, *, optional: bool = False) -> Any:
        value = self.text(key, optional=optional, max_len=64)
        if value is None:
            return None
        try:
            return parse_ts(value)
        except ValueError:
            self.fail(f"{self.what}: '{key}' must be an RFC 3339 time, not {value!r}")


def _bad_request(message: str) -> NoReturn:
    raise BadRequest(message)


def _bad_answer(message: str) -> NoReturn:
    raise MalformedAnswer(f"the server's answer broke the contract: {message}")


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One input or result file: its declared size and sha256, and how much the server holds."""

    name: str
    size: int
    sha256: str
    received: int = 0

    @property
    def complete(self) -> bool:
        return self.received == self.size

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "received": self.received,
        }

    def manifest_json(self) -> dict[str, Any]:
        """The declaration form sent at registration and finish (no `received`)."""
        return {"name": self.name, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_json(cls, raw: Any) -> FileEntry:
        """A file entry of an answer (the server's view, with `received`)."""
        doc = _Doc(raw, "a file entry", _bad_answer)
        name = doc.text("name", max_len=4096)
        try:
            check_name(name)
        except BadRequest as exc:
            _bad_answer(exc.message)
        size = doc.integer("size")
        digest = doc.text("sha256", max_len=64)
        if not SHA256_RE.match(digest):
            _bad_answer(f"file {name!r}: 'sha256' is not 64 lowercase hex digits")
        received = doc.integer("received", hi=size) if "received" in doc.raw else 0
        return cls(name, size, digest, received)


def parse_manifest(raw: Any, kind: str) -> tuple[FileEntry, ...]:
    """Validate a request's list of {name, size, sha256}; BadRequest says what is wrong."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise BadRequest(f"'{kind}' must be a list of {{name, size, sha256}}")
    seen: set[str] = set()
    out = []
    for item in raw:
        if not isinstance(item, dict) or set(item) - {"name", "size", "sha256"}:
            raise BadRequest(f"each entry of '{kind}' must be {{name, size, sha256}}")
        name = check_name(item.get("name"))  # type: ignore[arg-type]
        size, digest = item.get("size"), item.get("sha256")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BadRequest(f"{kind} {name!r}: 'size' must be a byte count ≥ 0")
        if not isinstance(digest, str) or not SHA256_RE.match(digest):
            raise BadRequest(f"{kind} {name!r}: 'sha256' must be 64 lowercase hex digits")
        # A name that is a prefix directory of another ('a' and 'a/b') cannot both be files.
        for other in seen:
            if other == name or other.startswith(name + "/") or name.startswith(other + "/"):
                raise BadRequest(f"{kind} {name!r} clashes with {other!r}")
        seen.add(name)
        out.append(FileEntry(name, size, digest, 0))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class LeaseView:
    """Who holds a running calc, as its owner sees it (the lease id stays secret)."""

    poller: str
    expires: float


@dataclass(frozen=True, slots=True)
class CalcView:
    """The calc object of the HTTP contract (docs/api.md)."""

    id: str
    user: str
    site: str
    command: str
    args: tuple[str, ...]
    state: CalcState
    created: float
    updated: float
    reason: str | None = None
    timeout: int | None = None
    attempts: int = 0
    exit_code: int | None = None
    inputs: tuple[FileEntry, ...] = ()
    results: tuple[FileEntry, ...] = ()
    lease: LeaseView | None = None
    progress: str | None = None

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "site": self.site,
            "command": self.command,
            "args": list(self.args),
            "state": str(self.state),
            "reason": self.reason,
            "created": format_ts(self.created),
            "updated": format_ts(self.updated),
            "timeout": self.timeout,
            "attempts": self.attempts,
            "exit_code": self.exit_code,
            "inputs": [f.to_json() for f in self.inputs],
            "results": [f.to_json() for f in self.results],
            "lease": None
            if self.lease is None
            else {"poller": self.lease.poller, "expires": format_ts(self.lease.expires)},
            "progress": self.progress,
        }

    @classmethod
    def from_json(cls, raw: Any) -> CalcView:
        doc = _Doc(raw, "a calc", _bad_answer)
        calc_id = doc.text("id", max_len=64)
        if not CALC_ID_RE.match(calc_id):
            _bad_answer(f"calc id {calc_id!r} is not c-<32 hex digits>")
        try:
            state = CalcState(str(doc.raw.get("state")))
        except ValueError:
            _bad_answer(f"calc {calc_id}: unknown state {doc.raw.get('state')!r}")
        args = doc.raw.get("args") or []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            _bad_answer(f"calc {calc_id}: 'args' must be a list of strings")
        lease = None
        if doc.raw.get("lease") is not None:
            ldoc = _Doc(doc.raw["lease"], f"calc {calc_id}: lease", _bad_answer)
            lease = LeaseView(ldoc.text("poller", max_len=128), ldoc.time("expires"))
        return cls(
            id=calc_id,
            user=doc.text("user", max_len=64),
            site=doc.text("site", max_len=64),
            command=doc.text("command", max_len=255),
            args=tuple(args),
            state=state,
            created=doc.time("created"),
            updated=doc.time("updated"),
            reason=doc.text("reason", optional=True),
            timeout=doc.integer("timeout", optional=True),
            attempts=doc.integer("attempts", optional=True) or 0,
            exit_code=doc.integer("exit_code", optional=True, lo=-(1 << 31), hi=1 << 31),
            inputs=_files(doc, "inputs"),
            results=_files(doc, "results"),
            lease=lease,
            progress=doc.text("progress", optional=True),
        )


def _files(doc: _Doc, key: str) -> tuple[FileEntry, ...]:
    raw = doc.raw.get(key) or []
    if not isinstance(raw, list):
        _bad_answer(f"{doc.what}: '{key}' must be a list")
    return tuple(FileEntry.from_json(item) for item in raw)


def _args(raw: Any) -> tuple[str, ...]:
    if (
        not isinstance(raw, list)
        or len(raw) > MAX_ARGS
        or not all(isinstance(a, str) and "\x00" not in a and len(a) <= MAX_ARG_CHARS for a in raw)
    ):
        raise BadRequest(f"'args' must be a list of at most {MAX_ARGS} strings without NUL")
    return tuple(raw)


@dataclass(frozen=True, slots=True)
class Registration:
    """POST /api/v1/calcs: what to run where, and the inputs that will be uploaded."""

    site: str
    command: str
    args: tuple[str, ...] = ()
    inputs: tuple[FileEntry, ...] = ()
    timeout: int | None = None
    request_id: str | None = None

    KEYS = frozenset({"site", "command", "args", "inputs", "timeout", "request_id"})

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "site": self.site,
            "command": self.command,
            "args": list(self.args),
            "inputs": [f.manifest_json() for f in self.inputs],
        }
        if self.request_id is not None:
            body["request_id"] = self.request_id
        if self.timeout is not None:
            body["timeout"] = self.timeout
        return body

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Registration:
        unknown = set(raw) - cls.KEYS
        if unknown:
            raise BadRequest(f"unknown keys {sorted(unknown)}; allowed: {sorted(cls.KEYS)}")
        site, command = raw.get("site"), raw.get("command")
        if not isinstance(site, str) or not site:
            raise BadRequest("'site' must be a site name (see GET /api/v1/sites)")
        if not isinstance(command, str) or not command:
            raise BadRequest("'command' must be a command name")
        timeout = raw.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0
        ):
            raise BadRequest("'timeout' must be a whole number of seconds > 0")
        request_id = raw.get("request_id")
        if request_id is not None and (
            not isinstance(request_id, str) or not 1 <= len(request_id) <= 200
        ):
            raise BadRequest("'request_id' must be a string of 1..200 characters")
        return cls(
            site=site,
            command=command,
            args=_args(raw.get("args", [])),
            inputs=parse_manifest(raw.get("inputs"), "inputs"),
            timeout=timeout,
            request_id=request_id,
        )


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """POST /api/v1/sites/{site}/claim: who asks, and how long it may wait for a calc.

    `confirm`: the poller will confirm it got the calc with a heartbeat right away; until then
    the lease is short, so a calc answered into a closed connection is back in the queue soon.
    """

    poller: str
    wait: float = DEFAULT_WAIT
    confirm: bool = False
    # The command names the poller runs: it is handed only calcs of these. None (older pollers):
    # any calc of the site.
    commands: tuple[str, ...] | None = None

    KEYS = frozenset({"poller", "wait", "confirm", "commands"})

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"poller": self.poller, "wait": self.wait, "confirm": self.confirm}
        if self.commands is not None:
            body["commands"] = list(self.commands)
        return body

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], default_poller: str) -> ClaimRequest:
        poller = raw.get("poller", default_poller)
        if not isinstance(poller, str) or not POLLER_RE.match(poller):
            raise BadRequest("'poller' must be a short id: letters, digits and '._@:-'")
        wait = raw.get("wait", DEFAULT_WAIT)
        if (
            isinstance(wait, bool)
            or not isinstance(wait, int | float)
            or not math.isfinite(wait)
            or wait < 0
        ):
            raise BadRequest("'wait' must be a number of seconds ≥ 0")
        confirm = raw.get("confirm", False)
        if not isinstance(confirm, bool):
            raise BadRequest("'confirm' must be true or false")
        return cls(poller, float(wait), confirm, _claim_commands(raw.get("commands")))


def _claim_commands(raw: Any) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) > MAX_POLLER_COMMANDS:
        raise BadRequest(
            f"'commands' must be a list of at most {MAX_POLLER_COMMANDS} command names"
            " (or left out to take any calc)"
        )
    for name in raw:
        if not isinstance(name, str) or not COMMAND_RE.match(name):
            shown = repr(name)[:80]
            raise BadRequest(
                f"'commands' has a bad command name {shown}: use letters, digits and"
                " '._+/=,:@%~-' (at most 255 characters)"
            )
    return tuple(dict.fromkeys(raw))


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """The lease a claim hands the poller: its secret id, expiry and heartbeat interval."""

    id: str
    expires: float
    heartbeat: float

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "expires": format_ts(self.expires), "heartbeat": self.heartbeat}


@dataclass(frozen=True, slots=True)
class ClaimGrant:
    """The answer to a claim that got a calc."""

    calc: CalcView
    lease: LeaseGrant

    def to_json(self) -> dict[str, Any]:
        return {"calc": self.calc.to_json(), "lease": self.lease.to_json()}

    @classmethod
    def from_json(cls, raw: Any) -> ClaimGrant:
        doc = _Doc(raw, "a claim answer", _bad_answer)
        calc = CalcView.from_json(doc.raw.get("calc"))
        ldoc = _Doc(doc.raw.get("lease"), "a claim answer's lease", _bad_answer)
        lease_id = ldoc.text("id", max_len=64)
        if not LEASE_ID_RE.match(lease_id):
            _bad_answer("the lease id is not l-<24 hex digits>")
        beat = ldoc.raw.get("heartbeat", 60)
        if isinstance(beat, bool) or not isinstance(beat, int | float) or not 0 < beat < 1e6:
            _bad_answer("the lease's 'heartbeat' must be a number of seconds > 0")
        return cls(calc, LeaseGrant(lease_id, ldoc.time("expires"), float(beat)))


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """POST /api/v1/calcs/{id}/heartbeat: keep the lease; report progress."""

    lease: str
    progress: str | None = None

    KEYS = frozenset({"lease", "progress"})

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"lease": self.lease}
        if self.progress:
            body["progress"] = self.progress
        return body

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Heartbeat:
        progress = raw.get("progress")
        if progress is not None and (not isinstance(progress, str) or len(progress) > MAX_PROGRESS):
            raise BadRequest(f"'progress' must be a string of at most {MAX_PROGRESS} characters")
        return cls(lease_of(raw), progress)


@dataclass(frozen=True, slots=True)
class HeartbeatReply:
    """Whether the calc was cancelled, and until when the lease now holds."""

    cancel: bool
    expires: float | None

    def to_json(self) -> dict[str, Any]:
        expires = None if self.expires is None else format_ts(self.expires)
        return {"cancel": self.cancel, "expires": expires}

    @classmethod
    def from_json(cls, raw: Any) -> HeartbeatReply:
        doc = _Doc(raw, "a heartbeat answer", _bad_answer)
        return cls(bool(doc.raw.get("cancel")), doc.time("expires", optional=True))


@dataclass(frozen=True, slots=True)
class FinishReport:
    """POST /api/v1/calcs/{id}/finish: the exit code, why, and the results to upload."""

    lease: str
    exit_code: int
    results: tuple[FileEntry, ...] = ()
    reason: str | None = None

    KEYS = frozenset({"lease", "exit_code", "results", "reason"})

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "lease": self.lease,
            "exit_code": self.exit_code,
            "results": [f.manifest_json() for f in self.results],
        }
        if self.reason:
            body["reason"] = self.reason
        return body

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FinishReport:
        exit_code = raw.get("exit_code")
        if (
            isinstance(exit_code, bool)
            or not isinstance(exit_code, int)
            or not 0 <= exit_code < 256
        ):
            raise BadRequest("'exit_code' must be a whole number 0..255")
        reason = raw.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON):
            raise BadRequest(f"'reason' must be a string of at most {MAX_REASON} characters")
        return cls(
            lease=lease_of(raw),
            exit_code=exit_code,
            results=parse_manifest(raw.get("results"), "results"),
            reason=reason,
        )


@dataclass(frozen=True, slots=True)
class Unclaim:
    """POST /api/v1/calcs/{id}/unclaim: the poller gives a calc back before running it."""

    lease: str
    reason: str

    KEYS = frozenset({"lease", "reason"})

    def to_json(self) -> dict[str, Any]:
        return {"lease": self.lease, "reason": self.reason}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Unclaim:
        reason = raw.get("reason")
        if not isinstance(reason, str) or not 0 < len(reason) <= MAX_REASON:
            raise BadRequest(f"'reason' must be a string of 1..{MAX_REASON} characters")
        return cls(lease_of(raw), reason)


def lease_of(raw: Mapping[str, Any]) -> str:
    lease = raw.get("lease")
    if not isinstance(lease, str) or not lease:
        raise BadRequest("'lease' must be the lease id returned by claim")
    return lease


@dataclass(frozen=True, slots=True)
class FileAck:
    """The answer to a file upload: how many bytes of it the server now holds."""

    name: str
    received: int
    complete: bool

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "received": self.received, "complete": self.complete}

    @classmethod
    def from_json(cls, raw: Any) -> FileAck:
        doc = _Doc(raw, "an upload answer", _bad_answer)
        return cls(
            doc.text("name", max_len=4096), doc.integer("received"), bool(doc.raw.get("complete"))
        )


@dataclass(frozen=True, slots=True)
class LoginGrant:
    """The answer to a login: a new token (shown once) and when it expires."""

    token: str = field(repr=False)
    expires: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"token": self.token, "expires": self.expires}

    @classmethod
    def from_json(cls, raw: Any) -> LoginGrant:
        doc = _Doc(raw, "a login answer", _bad_answer)
        return cls(doc.text("token", max_len=512), doc.text("expires", optional=True))
