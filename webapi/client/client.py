"""The workflow side of WebAPI mode: register a calc, upload inputs, wait, download results.

Uses only `requests` + PyYAML + stdlib. A broken connection while waiting is survived: the calc
id is kept, so the client reconnects and continues (`patience` bounds how long it keeps trying).
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from webapi.contract.calc import CalcState, CalcView, FileEntry, Registration
from webapi.contract.names import check_name, safe_join, sha256_file
from webapi.errors import ApiError, BadRequest, MalformedAnswer, TransportError
from webapi.transport import Transport, TransportSettings, login, quote_name

log = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class InputFile:
    """One local file and the relative name it gets on the server."""

    name: str
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class SubmitSpec:
    """Everything needed to register one calc."""

    site: str
    command: str
    args: tuple[str, ...] = ()
    inputs: tuple[InputFile, ...] = ()
    timeout: int | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def registration(self) -> Registration:
        return Registration(
            site=self.site,
            command=self.command,
            args=self.args,
            inputs=tuple(FileEntry(f.name, f.size, f.sha256) for f in self.inputs),
            timeout=self.timeout,
            request_id=self.request_id,
        )


@dataclass(frozen=True, slots=True)
class RunResult:
    """What `Client.run` hands back."""

    calc: CalcView
    exit_code: int | None
    results_dir: Path | None
    files: tuple[Path, ...] = ()

    @property
    def ok(self) -> bool:
        return self.calc.state is CalcState.SUCCEEDED


def collect_inputs(paths: Iterable[Path]) -> tuple[InputFile, ...]:
    """Files keep their base name; a directory adds every file under it as `dirname/rel/path`."""
    found: dict[str, InputFile] = {}

    def add(name: str, path: Path) -> None:
        try:
            check_name(name)
        except BadRequest as exc:
            raise ValueError(f"input {path}: {exc.message}") from None
        if name in found:
            raise ValueError(f"two inputs would both be named {name!r} on the server")
        found[name] = InputFile(name, path, path.stat().st_size, sha256_file(path))

    for raw in paths:
        path = Path(raw)
        if path.is_symlink() and path.is_dir():
            raise ValueError(f"input {path} is a symbolic link to a directory; give the target")
        if path.is_file():
            add(path.name, path)
        elif path.is_dir():
            base = path.resolve().name
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames.sort()
                for fname in sorted(filenames):
                    file = Path(dirpath) / fname
                    if file.is_file():
                        add(f"{base}/{file.relative_to(path).as_posix()}", file)
        else:
            raise ValueError(f"input {path} does not exist or is not a file or directory")
    return tuple(found.values())


class Client:
    """Python API for module scripts. `Client(url, token).run(...)` does the whole round trip."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        ca_file: Path | None = None,
        verify: bool = True,
        retries: int = 5,
        poll_interval: float = 2.0,
        patience: float = 600.0,
    ) -> None:
        self.transport = Transport(
            TransportSettings(url=url, token=token, ca_file=ca_file, verify=verify, retries=retries)
        )
        self.poll_interval = poll_interval
        self.patience = patience

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls ------------------------------------------------------------------------------
    def login(self, user: str, password: str) -> tuple[str, str | None]:
        """Exchange an ID and password for a token; returns (token, expires)."""
        grant = login(self.transport, user, password)
        return grant.token, grant.expires

    def register(self, spec: SubmitSpec) -> CalcView:
        _, body = self.transport.call("POST", "/api/v1/calcs", json=spec.registration().to_json())
        return CalcView.from_json(body)

    def upload_inputs(self, calc: CalcView, spec: SubmitSpec) -> CalcView:
        """Upload each input the server does not yet hold, from where it stands."""
        have = {f.name: f.received for f in calc.inputs}
        for item in spec.inputs:
            received = have.get(item.name, 0)
            if received >= item.size and item.size > 0:
                continue
            self.transport.upload(
                f"/api/v1/calcs/{calc.id}/inputs/{quote_name(item.name)}",
                item.path,
                offset=received,
            )
        return self.show(calc.id)

    def submit(
        self,
        site: str,
        command: str,
        args: Sequence[str] = (),
        inputs: Sequence[Path] = (),
        timeout: int | None = None,
        request_id: str | None = None,
    ) -> CalcView:
        """Register a calc and upload its inputs; returns the calc (normally `queued`)."""
        spec = SubmitSpec(
            site=site,
            command=command,
            args=tuple(args),
            inputs=collect_inputs(inputs),
            timeout=timeout,
            request_id=request_id or uuid.uuid4().hex,
        )
        return self.submit_spec(spec)

    def submit_spec(self, spec: SubmitSpec) -> CalcView:
        calc = self._patiently(lambda: self.register(spec))
        try:
            # Uploads resume from the server's offset, so a retry after a break continues.
            return self._patiently(lambda: self.upload_inputs(self.show(calc.id), spec))
        except BaseException:
            # This client gives up on the calc: cancel it, so it can never run later without
            # anyone waiting for it (the server would otherwise queue it once its inputs are in).
            with contextlib.suppress(ApiError, TransportError, MalformedAnswer):
                self.cancel(calc.id)
                log.warning("calc %s cancelled: its inputs could not all be uploaded", calc.id)
            raise

    def show(self, calc_id: str) -> CalcView:
        _, body = self.transport.call("GET", f"/api/v1/calcs/{calc_id}")
        return CalcView.from_json(body)

    def list(self, state: str | None = None, site: str | None = None) -> builtins.list[CalcView]:
        params = {k: v for k, v in (("state", state), ("site", site)) if v}
        _, body = self.transport.call("GET", "/api/v1/calcs", params=params)
        calcs = body.get("calcs") if isinstance(body, dict) else None
        if not isinstance(calcs, builtins.list):
            raise MalformedAnswer("the server's calc list has no 'calcs' list")
        return [CalcView.from_json(c) for c in calcs]

    def cancel(self, calc_id: str) -> CalcView:
        _, body = self.transport.call("POST", f"/api/v1/calcs/{calc_id}/cancel")
        return CalcView.from_json(body)

    def wait(
        self,
        calc_id: str,
        on_status: Callable[[CalcView], None] | None = None,
        timeout: float | None = None,
    ) -> CalcView:
        """Poll until the calc is terminal; `on_status` sees each change of state/progress."""
        deadline = None if timeout is None else time.monotonic() + timeout
        interval, last = 0.2, None
        while True:
            calc = self._patiently(lambda: self.show(calc_id))
            seen = (calc.state, calc.reason, calc.progress, calc.updated)
            if seen != last and on_status is not None:
                on_status(calc)
            if calc.done:
                return calc
            interval = interval if seen != last else min(interval * 1.5, self.poll_interval)
            last = seen
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"calc {calc_id} still {calc.state} after {timeout:g} s")
            time.sleep(interval)

    def download_results(self, calc_id: str, dest_dir: Path) -> builtins.list[Path]:
        """Stream every result into `dest_dir` (temp file + fsync + rename, sha256 verified)."""
        calc = self._patiently(lambda: self.show(calc_id))
        out = []
        for item in calc.results:
            target = safe_join(dest_dir, item.name)
            if (
                target.is_file()
                and target.stat().st_size == item.size
                and sha256_file(target) == item.sha256
            ):
                out.append(target)  # already here from an interrupted earlier download
                continue

            def fetch(item: FileEntry = item, target: Path = target) -> Path:
                return self.transport.download(
                    f"/api/v1/calcs/{calc_id}/results/{quote_name(item.name)}",
                    target,
                    size=item.size,
                    sha256=item.sha256,
                )

            out.append(self._patiently(fetch))
        return out

    def run(
        self,
        site: str,
        command: str,
        args: Sequence[str] = (),
        inputs: Sequence[Path] = (),
        results_dir: Path | None = None,
        timeout: int | None = None,
        on_status: Callable[[CalcView], None] | None = None,
    ) -> RunResult:
        """Submit, upload, wait, download into `results_dir` (if given); never raises for a
        remote failure — look at `result.calc.state` / `result.exit_code`."""
        calc = self.submit(site, command, args, inputs, timeout=timeout)
        final = self.wait(calc.id, on_status=on_status)
        files: list[Path] = []
        ended = (CalcState.SUCCEEDED, CalcState.FAILED)
        if results_dir is not None and final.state in ended and final.results:
            files = self.download_results(final.id, results_dir)
        return RunResult(final, final.exit_code, results_dir, tuple(files))

    # -- helpers ----------------------------------------------------------------------------
    def _patiently(self, action: Callable[[], _T]) -> _T:
        """Repeat `action` across broken connections for up to `patience` seconds.

        Each attempt already has urllib3's retries with backoff; this outer loop covers longer
        outages (server restart, network gap) without losing the calc id.
        """
        give_up = time.monotonic() + self.patience
        pause = 1.0
        while True:
            try:
                return action()
            except TransportError as exc:
                if time.monotonic() + pause > give_up:
                    raise
                log.warning("connection problem (%s); trying again in %.0f s", exc, pause)
                time.sleep(pause)
                pause = min(pause * 2, 30.0)


def partial_dir(dest: Path) -> Path:
    """The `.partial` sibling that results are downloaded into before the final rename."""
    return dest.with_name(dest.name + ".partial")


def publish_dir(partial: Path, dest: Path) -> None:
    """Move a completed `.partial` dir into place (dest must be absent or empty)."""
    if dest.exists():
        if any(dest.iterdir()):
            raise FileExistsError(f"{dest} is not empty")
        shutil.rmtree(dest)
    os.replace(partial, dest)
