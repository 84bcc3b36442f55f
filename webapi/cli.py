"""The `extcomp-api` command: run the API server and administer users, tokens, sites and calcs."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from webapi.errors import ApiError, ConfigError

ENV_CONFIG = "EXTCOMP_API_CONFIG"
DEFAULT_CONFIG = Path("/etc/extcomp-api/config.yml")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("webapi.cli")


if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
Command = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


def _config_path(args: argparse.Namespace) -> Path:
    """Flag → environment variable → default."""
    if getattr(args, "config", None):
        return Path(args.config)
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG])
    return DEFAULT_CONFIG


def _setup_logging(log_file: Path | None, verbose: bool = False) -> None:
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def _users(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from webapi.auth import UserStore
    from webapi.config import load_config

    return UserStore(load_config(_config_path(args)).users_file)


def cmd_serve(args: argparse.Namespace) -> int:
    from webapi.config import load_config
    from webapi.serve import run

    path = _config_path(args)
    conf = load_config(path)
    _setup_logging(conf.log_file, args.verbose)
    return run(path)


def _token_stdin(args: argparse.Namespace) -> str | None:
    if not getattr(args, "token_stdin", False):
        return None
    token = sys.stdin.readline().strip()
    if not token:
        raise UsageError("--token-stdin: read an empty token")
    return token


def cmd_users_add(args: argparse.Namespace) -> int:
    if args.password_stdin and args.token_stdin:
        raise UsageError("give at most one of --password-stdin and --token-stdin")
    password = None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise UsageError("--password-stdin: read an empty password")
    token = _token_stdin(args)
    new = _users(args).add_user(args.name, admin=args.admin, password=password, token=token)
    if token is not None:  # the caller has the secret already: never echo it
        print(f"user {new.user} added with the given token as {new.id} (stored hashed)")
        return EXIT_OK
    print(f"user {new.user} added; token {new.id} (shown once, keep it secret):")
    print(new.token)
    return EXIT_OK


def cmd_users_token(args: argparse.Namespace) -> int:
    token = _token_stdin(args)
    new = _users(args).new_token(
        args.name, label=args.label, expires_days=args.expires_days, token=token
    )
    if token is not None:
        print(f"token {new.id} for {new.user} stored (hashed), expires {new.expires or 'never'}")
        return EXIT_OK
    print(f"token {new.id} for {new.user}, expires {new.expires or 'never'} (shown once):")
    print(new.token)
    return EXIT_OK


def cmd_users_revoke(args: argparse.Namespace) -> int:
    if bool(args.token_id) == bool(args.all):
        raise UsageError("give either a TOKEN_ID or --all")
    removed = _users(args).revoke(args.name, None if args.all else args.token_id)
    print(f"revoked {removed} token(s) of {args.name}")
    return EXIT_OK


def cmd_users_list(args: argparse.Namespace) -> int:
    users = _users(args).list_users()
    if args.json:
        print(json.dumps([asdict(u) for u in users], indent=2))
        return EXIT_OK
    for u in users:
        role = "admin" if u.admin else "user"
        pw = "password" if u.has_password else "no password"
        print(f"{u.name}\t{role}\t{pw}\t{len(u.tokens)} token(s)")
        for t in u.tokens:
            print(f"  {t.id}\tcreated {t.created}\texpires {t.expires or 'never'}\t{t.label}")
    return EXIT_OK


def cmd_sites_list(args: argparse.Namespace) -> int:
    from webapi.config import load_config

    conf = load_config(_config_path(args))
    sites = [
        {
            "name": s.name,
            "commands": list(s.commands),
            "lease_seconds": conf.site_lease_seconds(s.name),
        }
        for s in conf.sites.values()
    ]
    if args.json:
        print(json.dumps(sites, indent=2))
    else:
        for s in sites:
            print(f"{s['name']}\tlease {s['lease_seconds']} s\t{', '.join(s['commands'])}")  # type: ignore[arg-type]
    return EXIT_OK


def _store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from webapi.app import site_policy
    from webapi.config import ConfigSource
    from webapi.store import YamlJobStore

    source = ConfigSource(_config_path(args))
    # Safe next to a running server: the store takes the same file lock.
    return YamlJobStore(source.current.data_dir, site_policy(source))


def _calc_id(raw: str) -> str:
    """Our calc id, also from an original-protocol accept_id (the same uuid with dashes)."""
    from webapi.mint.ids import calc_id_of

    return calc_id_of(raw) or raw


def cmd_admin_requeue(args: argparse.Namespace) -> int:
    calc = _store(args).requeue(_calc_id(args.calc_id))
    print(f"calc {calc.id} is {calc.state}")
    return EXIT_OK


def cmd_admin_fail(args: argparse.Namespace) -> int:
    calc = _store(args).fail(_calc_id(args.calc_id), f"failed by an admin: {args.reason}")
    print(f"calc {calc.id} is {calc.state}: {calc.reason}")
    return EXIT_OK


def cmd_import_ini(args: argparse.Namespace) -> int:
    from webapi.mint.ini import ini_to_yaml, load_ini

    path = Path(args.file)
    sys.stdout.write(ini_to_yaml(load_ini(path), path))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="extcomp-api", description=__doc__)
    parser.add_argument(
        "--config", help=f"server config YAML (env {ENV_CONFIG}, default {DEFAULT_CONFIG})"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(parent: SubParsers, name: str, func: Command, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_, description=help_)
        p.add_argument("--config", default=argparse.SUPPRESS, help="server config YAML")
        p.set_defaults(func=func)
        return p

    p = add(sub, "serve", cmd_serve, "Run the API server until SIGTERM/SIGINT")
    p.add_argument("--verbose", action="store_true", help="debug logging")

    users = sub.add_parser("users", help="Manage users and tokens").add_subparsers(
        dest="users_command", required=True, metavar="ACTION"
    )
    p = add(users, "add", cmd_users_add, "Add a user and print its first token once")
    p.add_argument("name")
    p.add_argument("--admin", action="store_true", help="may use admin routes")
    p.add_argument("--password-stdin", action="store_true", help="read a login password from stdin")
    p.add_argument(
        "--token-stdin", action="store_true",
        help="read an existing MInt API token (64 hex digits) from stdin; stored hashed",
    )  # fmt: skip
    p = add(users, "token", cmd_users_token, "Make a new token for a user and print it once")
    p.add_argument("name")
    p.add_argument("--label", default="", help="a note to tell tokens apart")
    p.add_argument("--expires-days", type=float, default=None, help="default: never")
    p.add_argument("--token-stdin", action="store_true",
                   help="store an existing MInt API token read from stdin instead")  # fmt: skip
    p = add(users, "revoke", cmd_users_revoke, "Revoke one token or all tokens of a user")
    p.add_argument("name")
    p.add_argument("token_id", nargs="?", help="token id as shown by 'users list'")
    p.add_argument("--all", action="store_true", help="revoke every token of the user")
    p = add(users, "list", cmd_users_list, "List users and token ids (never the tokens)")
    p.add_argument("--json", action="store_true")

    sites = sub.add_parser("sites", help="Show configured sites").add_subparsers(
        dest="sites_command", required=True, metavar="ACTION"
    )
    p = add(sites, "list", cmd_sites_list, "List sites and their allowed commands")
    p.add_argument("--json", action="store_true")

    admin = sub.add_parser("admin", help="Admin actions on calcs").add_subparsers(
        dest="admin_command", required=True, metavar="ACTION"
    )
    p = add(admin, "requeue", cmd_admin_requeue, "Run a calc again from its inputs")
    p.add_argument("calc_id", help="calc id or original-protocol accept_id")
    p = add(admin, "fail", cmd_admin_fail, "End a calc that has not finished as failed")
    p.add_argument("calc_id", help="calc id or original-protocol accept_id")
    p.add_argument("--reason", required=True, help="why (shown to the calc's owner)")

    p = add(
        sub,
        "import-ini",
        cmd_import_ini,
        "Print the YAML config equivalent to an original mi_distributed_computing_assist.ini",
    )
    p.add_argument("file")  # fmt: skip

    # The workflow-side client commands live in their own module, added when it is installed.
    if importlib.util.find_spec("webapi.cli_client") is not None:
        importlib.import_module("webapi.cli_client").add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except (ConfigError, UsageError) as exc:
        print(f"extcomp-api: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ApiError as exc:
        print(f"extcomp-api: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"extcomp-api: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
