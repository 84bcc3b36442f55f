"""Client commands of `extcomp-api`: submit, calcs list|show|cancel, login, wf (added to a parser).

Settings resolve flag → environment (EXTCOMP_API_URL, EXTCOMP_API_TOKEN_FILE, EXTCOMP_API_TOKEN,
EXTCOMP_API_CA) → default. Exit codes: the remote program's own code; 1 calc failed without an
exit code; 2 usage/config; 124 the remote program hit its time limit (reported by the poller);
253 cancelled; 254 refused (token, site, command or the poller's allow-list); 255 transport.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from webapi.client import Calc, Client, SubmitSpec, collect_inputs, partial_dir, publish_dir
from webapi.errors import ApiError, ConfigError, Forbidden, TransportError, Unauthorized
from webapi.workdir import STDERR_NAME, tail

EXIT_FAILED, EXIT_USAGE = 1, 2
EXIT_CANCELLED, EXIT_REFUSED, EXIT_TRANSPORT = 253, 254, 255
REFUSED_CODES = frozenset({"unknown_site", "command_not_allowed", "forbidden", "unauthorized"})
DEFAULT_TOKEN_FILE = Path("~/.config/extcomp/token")


class UsageError(Exception):
    """Bad flags or settings: exit code 2."""


def add_client_commands(subparsers: Any) -> None:
    """Add `submit`, `calcs` and `login` to an argparse subparsers object."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="API base URL (env EXTCOMP_API_URL)")
    common.add_argument("--token-file", type=Path, help="token file (env EXTCOMP_API_TOKEN_FILE)")
    common.add_argument("--ca-file", type=Path, help="CA bundle for TLS (env EXTCOMP_API_CA)")
    common.add_argument("--json", action="store_true", help="print JSON on stdout")
    common.add_argument("--retries", type=int, default=5, metavar="N",
                        help="HTTP retries on transient errors (default 5)")  # fmt: skip

    p = subparsers.add_parser(
        "submit", parents=[common], help="run a command on a site and fetch its results"
    )
    p.add_argument("--site", required=True)
    p.add_argument("--command", required=True, help="a command on the site's allow-list")
    p.add_argument("--input", action="append", type=Path, default=[], metavar="PATH",
                   help="input file or directory (repeatable)")  # fmt: skip
    p.add_argument("--results", type=Path, help="results directory (default ./<calc id>)")
    p.add_argument("--force", action="store_true", help="replace a non-empty results directory")
    p.add_argument("--timeout", type=int, help="remote time limit in seconds")
    p.add_argument("--no-wait", action="store_true", help="print the calc id and return")
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- ARGS... passed to the program")
    p.set_defaults(func=cmd_submit)

    calcs = subparsers.add_parser("calcs", help="list, show or cancel calcs")
    sub = calcs.add_subparsers(dest="calcs_cmd", required=True)
    ls = sub.add_parser("list", parents=[common], help="your calcs (admin: all)")
    ls.add_argument("--state")
    ls.add_argument("--site")
    ls.set_defaults(func=cmd_list)
    for name, func in (("show", cmd_show), ("cancel", cmd_cancel)):
        sp = sub.add_parser(name, parents=[common], help=f"{name} one calc")
        sp.add_argument("calc_id", metavar="ID")
        sp.set_defaults(func=func)

    lg = subparsers.add_parser("login", parents=[common], help="get a token (written mode 0600)")
    lg.add_argument("--user", help="ID (prompted if omitted)")
    lg.set_defaults(func=cmd_login)

    # The original workflow client's command line over the original protocol.
    from webapi.mint_wf import add_wf_command

    add_wf_command(subparsers)


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
    except (UsageError, ConfigError, ValueError, FileExistsError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    except TransportError as exc:
        _err(f"transport failure: {exc}")
        return EXIT_TRANSPORT
    except (Unauthorized, Forbidden) as exc:
        _err(f"refused: {exc.message}")
        return EXIT_REFUSED
    except ApiError as exc:
        _err(f"{'refused: ' if exc.code in REFUSED_CODES else ''}{exc.message}")
        return EXIT_REFUSED if exc.code in REFUSED_CODES else EXIT_FAILED
    except OSError as exc:
        _err(f"{exc.filename or ''}: {exc.strerror or exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted; the calc keeps going on the server (see `extcomp-api calcs list`)")
        return 130


def calc_exit_code(calc: Calc) -> int:
    if calc.state == "succeeded":
        return 0
    if calc.state == "cancelled":
        return EXIT_CANCELLED
    if (calc.reason or "").startswith("refused by the poller"):
        return EXIT_REFUSED
    return calc.exit_code if calc.exit_code not in (None, 0) else EXIT_FAILED


# -- commands ------------------------------------------------------------------------------
def cmd_submit(args: argparse.Namespace) -> int:
    return guarded(_submit, args)


def _submit(args: argparse.Namespace) -> int:
    prog_args = list(args.args)
    if prog_args and prog_args[0] == "--":
        prog_args = prog_args[1:]
    dest: Path | None = None
    if not args.no_wait:
        dest = args.results
        if dest is not None and dest.exists() and any(dest.iterdir()) and not args.force:
            raise UsageError(f"results directory {dest} is not empty (use --force to replace it)")
    spec = SubmitSpec(site=args.site, command=args.command, args=tuple(prog_args),
                      inputs=collect_inputs(args.input), timeout=args.timeout)  # fmt: skip
    with _client(args) as client:
        calc = client.submit_spec(spec)
        _err(f"submitted {calc.id} ({spec.command} on {spec.site}), {len(spec.inputs)} inputs")
        if args.no_wait:
            if args.json:
                _print_json(calc.raw)
            else:
                sys.stdout.write(calc.id + "\n")
            return 0
        final = client.wait(calc.id, on_status=StatusLine())
        dest = dest or Path(calc.id)
        files = []
        if final.results:
            partial = partial_dir(dest)
            files = client.download_results(final.id, partial)
            if dest.exists() and args.force:
                shutil.rmtree(dest)
            publish_dir(partial, dest)
    code = calc_exit_code(final)
    if args.json:
        _print_json({**final.raw, "results_dir": str(dest) if files else None})
    if final.state == "succeeded":
        _err(f"{final.id} succeeded; {len(files)} result files in {dest}")
    else:
        _err(f"{final.id} {final.state}: {final.reason or 'no reason given'} (exit code {code})")
        log_tail = tail(dest / STDERR_NAME, 1500).strip() if files else ""
        if log_tail:
            sys.stderr.write(f"--- tail of remote {STDERR_NAME} ---\n{log_tail}\n")
    return code


class StatusLine:
    """One status line, redrawn in place on a TTY; one line per change otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def __call__(self, calc: Calc) -> None:
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
            _print_json([c.raw for c in calcs])
            return 0
        for c in calcs:
            code = "-" if c.exit_code is None else str(c.exit_code)
            sys.stdout.write(f"{c.id}  {c.state:<10} {c.site:<12} {c.command:<12} {code:>4}  "
                             f"{c.updated}\n")  # fmt: skip
        return 0

    return guarded(run, args)


def _show_calc(calc: Calc, as_json: bool) -> None:
    if as_json:
        _print_json(calc.raw)
        return
    fields = dataclasses.asdict(calc)
    for key in ("id", "state", "reason", "exit_code", "site", "command", "args", "user",
                "attempts", "progress", "created", "updated"):  # fmt: skip
        sys.stdout.write(f"{key}: {fields[key]}\n")
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


def write_secret(path: Path, text: str) -> None:
    """Write a file only its owner can read (created 0600; never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry with only the client commands (the full CLI is `webapi.cli`)."""
    parser = argparse.ArgumentParser(prog="extcomp-api")
    add_client_commands(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))
