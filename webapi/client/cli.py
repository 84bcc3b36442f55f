"""Client commands of `extcomp-api`: submit, calcs list|show|cancel, login (added to a parser).

Settings resolve flag → environment (EXTCOMP_API_URL, EXTCOMP_API_TOKEN_FILE, EXTCOMP_API_TOKEN,
EXTCOMP_API_CA) → default. Exit codes: the remote program's own code, else webapi.errors.Exit
(CLIENT_EXIT_CODES). `requests` is imported only when a command runs, so `--help` works on a host
without it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from webapi.contract.calc import CalcState, CalcView
from webapi.contract.timefmt import format_ts
from webapi.contract.workfiles import STDERR_NAME, tail
from webapi.errors import (
    ApiError,
    ConfigError,
    Exit,
    Forbidden,
    MalformedAnswer,
    TransportError,
    Unauthorized,
    UsageError,
)
from webapi.fs import write_secret

if TYPE_CHECKING:
    from webapi.client.client import Client

# The server's refusals, each with its own exit code.
REFUSALS = {
    "unknown_site": Exit.UNKNOWN_SITE,
    "command_not_allowed": Exit.COMMAND_REFUSED,
    "no_poller_for_user": Exit.NO_POLLER,
    "insufficient_storage": Exit.SERVER_FULL,
    "forbidden": Exit.REFUSED,
    "unauthorized": Exit.REFUSED,
}
DEFAULT_TOKEN_FILE = Path("~/.config/extcomp/token")
CLIENT_EXIT_CODES = (
    Exit.USAGE,
    Exit.FAILED,
    Exit.TIMEOUT,
    Exit.HOST_ERROR,
    Exit.NOT_ALLOWED,
    Exit.INTERRUPTED,
    Exit.NO_POLLER,
    Exit.SERVER_FULL,
    Exit.UNKNOWN_SITE,
    Exit.COMMAND_REFUSED,
    Exit.CANCELLED,
    Exit.REFUSED,
    Exit.UNREACHABLE,
)


def add_client_commands(subparsers: Any) -> None:
    """Add `submit`, `calcs` and `login` to an argparse subparsers object."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="API base URL (env EXTCOMP_API_URL)")
    common.add_argument("--token-file", type=Path, help="token file (env EXTCOMP_API_TOKEN_FILE)")
    common.add_argument("--ca-file", type=Path, help="CA bundle for TLS (env EXTCOMP_API_CA)")
    common.add_argument("--json", action="store_true", help="print JSON on stdout")
    common.add_argument(
        "--retries",
        type=int,
        default=5,
        metavar="N",
        help="HTTP retries on transient errors (default 5)",
    )

    p = subparsers.add_parser(
        "submit", parents=[common], help="run a command on a site and fetch its results"
    )
    p.add_argument("--site", required=True)
    p.add_argument("--command", required=True, help="a command on the site's allow-list")
    p.add_argument(
        "--input",
        action="append",
        type=Path,
        default=[],
        metavar="PATH",
        help="input file or directory (repeatable)",
    )
    p.add_argument("--results", type=Path, help="results directory (default ./<calc id>)")
    p.add_argument("--force", action="store_true", help="replace a non-empty results directory")
    p.add_argument("--timeout", type=int, help="remote time limit in seconds")
    p.add_argument("--no-wait", action="store_true", help="print the calc id and return")
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- ARGS... passed to the program")
    p.set_defaults(func=cmd_submit)

    calcs = subparsers.add_parser("calcs", help="list, show, cancel, wait for or fetch calcs")
    sub = calcs.add_subparsers(dest="calcs_cmd", required=True)
    ls = sub.add_parser("list", parents=[common], help="your calcs (admin: all)")
    ls.add_argument("--state")
    ls.add_argument("--site")
    ls.set_defaults(func=cmd_list)
    for name, func in (("show", cmd_show), ("cancel", cmd_cancel)):
        sp = sub.add_parser(name, parents=[common], help=f"{name} one calc")
        sp.add_argument("calc_id", metavar="ID")
        sp.set_defaults(func=func)
    for name, func, help_ in (
        ("wait", cmd_wait, "wait until a calc is over, then fetch its results"),
        ("fetch", cmd_fetch, "fetch the results of a calc that is over"),
    ):
        sp = sub.add_parser(name, parents=[common], help=help_, description=help_)
        sp.add_argument("calc_id", metavar="ID")
        sp.add_argument("--results", type=Path, help="results directory (default ./<calc id>)")
        sp.add_argument("--force", action="store_true", help="replace a non-empty results dir")
        sp.set_defaults(func=func)

    lg = subparsers.add_parser("login", parents=[common], help="get a token (written mode 0600)")
    lg.add_argument("--user", help="ID (prompted if omitted)")
    lg.set_defaults(func=cmd_login)


# -- settings ------------------------------------------------------------------------------
def _url(args: argparse.Namespace) -> str:
    url = args.url or os.environ.get("EXTCOMP_API_URL")
    if not url:
        raise UsageError("no API URL: give --url or set EXTCOMP_API_URL")
    return str(url)


def _token_file(args: argparse.Namespace) -> Path:
    raw = args.token_file or os.environ.get("EXTCOMP_API_TOKEN_FILE") or DEFAULT_TOKEN_FILE
    return Path(raw).expanduser()


def _token(args: argparse.Namespace) -> str:
    explicit = args.token_file or os.environ.get("EXTCOMP_API_TOKEN_FILE")
    if not explicit and os.environ.get("EXTCOMP_API_TOKEN"):
        return os.environ["EXTCOMP_API_TOKEN"]
    path = _token_file(args)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(
            f"cannot read token file {path}: {exc.strerror} "
            "(run `extcomp-api login`, or set EXTCOMP_API_TOKEN_FILE / EXTCOMP_API_TOKEN)"
        ) from None
    if not token:
        raise UsageError(f"token file {path} is empty")
    return token


def _client(args: argparse.Namespace, *, token: bool = True) -> Client:
    from webapi.client.client import Client

    ca = args.ca_file or os.environ.get("EXTCOMP_API_CA")
    return Client(
        _url(args),
        _token(args) if token else None,
        ca_file=Path(ca) if ca else None,
        retries=args.retries,
        patience=600.0 if args.retries else 0.0,
    )


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _err(text: str) -> None:
    sys.stderr.write(f"extcomp-api: {text}\n")


def guarded(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; turn every expected error into one clear line and an exit code."""
    try:
        return func(args)
    except MalformedAnswer as exc:
        _err(str(exc))
        return Exit.UNREACHABLE
    except (UsageError, ConfigError, ValueError, FileExistsError) as exc:
        _err(str(exc))
        return Exit.USAGE
    except TransportError as exc:
        _err(f"transport failure: {exc}")
        return Exit.UNREACHABLE
    except (Unauthorized, Forbidden) as exc:
        _err(f"refused: {exc.message}")
        return Exit.REFUSED
    except ApiError as exc:
        code = REFUSALS.get(exc.code, Exit.FAILED)
        refused = code not in (Exit.FAILED, Exit.SERVER_FULL)
        _err(f"{'refused: ' if refused else ''}{exc.message}")
        return code
    except OSError as exc:
        _err(f"{exc.filename or ''}: {exc.strerror or exc}")
        return Exit.FAILED
    except KeyboardInterrupt:
        _err(
            "interrupted; a calc already submitted goes on on the server (`extcomp-api calcs list`)"
        )
        return Exit.INTERRUPTED


def calc_exit_code(calc: CalcView) -> int:
    if calc.state is CalcState.SUCCEEDED:
        return Exit.OK
    if calc.state is CalcState.CANCELLED:
        return Exit.CANCELLED
    return calc.exit_code if calc.exit_code not in (None, 0) else Exit.FAILED


# -- commands ------------------------------------------------------------------------------
def cmd_submit(args: argparse.Namespace) -> int:
    return guarded(_submit, args)


def _check_results_dir(dest: Path | None, force: bool) -> None:
    if dest is not None and dest.exists() and any(dest.iterdir()) and not force:
        raise UsageError(f"results directory {dest} is not empty (use --force to replace it)")


def _submit(args: argparse.Namespace) -> int:
    from webapi.client.client import SubmitSpec, collect_inputs

    prog_args = list(args.args)
    if prog_args and prog_args[0] == "--":
        prog_args = prog_args[1:]
    if not args.no_wait:
        _check_results_dir(args.results, args.force)
    spec = SubmitSpec(
        site=args.site,
        command=args.command,
        args=tuple(prog_args),
        inputs=collect_inputs(args.input),
        timeout=args.timeout,
    )
    with _client(args) as client:
        calc = client.submit_spec(spec)
        _err(f"submitted {calc.id} ({spec.command} on {spec.site}), {len(spec.inputs)} inputs")
        if args.no_wait:
            _err(f"follow it with `extcomp-api calcs wait {calc.id} --results DIR`")
            if args.json:
                _print_json(calc.to_json())
            else:
                sys.stdout.write(calc.id + "\n")
            return 0
        return _wait_and_fetch(client, args, calc.id)


def _wait_and_fetch(client: Client, args: argparse.Namespace, calc_id: str) -> int:
    """Wait until the calc is over, fetch its results, say how it went; its exit code."""
    dest: Path = args.results or Path(calc_id)
    later = f"`extcomp-api calcs wait {calc_id} --results {dest}`"
    try:
        final = client.wait(calc_id, on_status=StatusLine())
    except KeyboardInterrupt:
        _err(f"interrupted; the calc goes on on the server: {later} picks it up again")
        return Exit.INTERRUPTED
    except TransportError as exc:
        _err(f"transport failure: {exc}; the calc goes on on the server: {later} when it is back")
        return Exit.UNREACHABLE
    return _fetch(client, args, final, dest)


def _fetch(client: Client, args: argparse.Namespace, final: CalcView, dest: Path) -> int:
    from webapi.client.client import partial_dir, publish_dir

    files = []
    if final.results:
        partial = partial_dir(dest)
        files = client.download_results(final.id, partial)
        if dest.exists() and args.force:
            shutil.rmtree(dest)
        publish_dir(partial, dest)
    code = calc_exit_code(final)
    if args.json:
        _print_json({**final.to_json(), "results_dir": str(dest) if files else None})
    if final.state is CalcState.SUCCEEDED:
        _err(f"{final.id} succeeded; {len(files)} result files in {dest}")
    else:
        _err(f"{final.id} {final.state}: {final.reason or 'no reason given'} (exit code {code})")
        log_tail = tail(dest / STDERR_NAME, 1500).strip() if files else ""
        if log_tail:
            sys.stderr.write(f"--- tail of remote {STDERR_NAME} ---\n{log_tail}\n")
    return code


def cmd_wait(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        _check_results_dir(args.results, args.force)
        with _client(args) as client:
            return _wait_and_fetch(client, args, args.calc_id)

    return guarded(run, args)


def cmd_fetch(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        _check_results_dir(args.results, args.force)
        with _client(args) as client:
            calc = client.show(args.calc_id)
            if not calc.done:
                raise UsageError(
                    f"calc {calc.id} is {calc.state}, not over yet: "
                    f"`extcomp-api calcs wait {calc.id}` waits for it"
                )
            return _fetch(client, args, calc, args.results or Path(calc.id))

    return guarded(run, args)


class StatusLine:
    """One status line, redrawn in place on a TTY; one line per change otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def __call__(self, calc: CalcView) -> None:
        text = f"{calc.id}: {calc.state}"
        if calc.progress:
            text += f" - {calc.progress}"
        elif calc.reason and not calc.done:
            text += f" - {calc.reason}"
        if self.tty:
            end = "\n" if calc.done else ""
            sys.stderr.write(f"\r\x1b[K{text[:200]}{end}")
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()


def cmd_list(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        with _client(args) as client:
            calcs = client.list(state=args.state, site=args.site)
        if args.json:
            _print_json([c.to_json() for c in calcs])
            return 0
        for c in calcs:
            code = "-" if c.exit_code is None else str(c.exit_code)
            sys.stdout.write(
                f"{c.id}  {c.state:<10} {c.site:<12} {c.command:<12} {code:>4}  "
                f"{format_ts(c.updated)}\n"
            )
        return 0

    return guarded(run, args)


def _show_calc(calc: CalcView, as_json: bool) -> None:
    doc = calc.to_json()
    if as_json:
        _print_json(doc)
        return
    for key in (
        "id",
        "state",
        "reason",
        "exit_code",
        "site",
        "command",
        "args",
        "user",
        "attempts",
        "progress",
        "created",
        "updated",
    ):
        sys.stdout.write(f"{key}: {doc[key]}\n")
    for kind in ("inputs", "results"):
        for f in getattr(calc, kind):
            sys.stdout.write(f"{kind[:-1]}: {f.name} {f.received}/{f.size} bytes\n")


def cmd_show(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        with _client(args) as client:
            _show_calc(client.show(args.calc_id), args.json)
        return 0

    return guarded(run, args)


def cmd_cancel(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        with _client(args) as client:
            _show_calc(client.cancel(args.calc_id), args.json)
        return 0

    return guarded(run, args)


def cmd_login(args: argparse.Namespace) -> int:
    def run(args: argparse.Namespace) -> int:
        user = args.user or os.environ.get("EXTCOMP_API_USER")
        password = os.environ.get("EXTCOMP_API_PASSWORD")
        if not user or password is None:
            if not sys.stdin.isatty():
                raise UsageError("no TTY: give --user and set EXTCOMP_API_PASSWORD")
            user = user or input("ID: ").strip()
            password = password if password is not None else getpass.getpass("Password: ")
        with _client(args, token=False) as client:
            token, expires = client.login(user, password)
        path = _token_file(args)
        write_secret(path, token + "\n")
        if args.json:
            _print_json({"token_file": str(path), "expires": expires})
        else:
            _err(f"token written to {path} (mode 0600){f', expires {expires}' if expires else ''}")
        return 0

    return guarded(run, args)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry with only the client commands (the full CLI is `webapi.cli`)."""
    parser = argparse.ArgumentParser(prog="extcomp-api")
    add_client_commands(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))
