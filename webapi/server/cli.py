"""The API server's commands of `extcomp-api`: serve, and administer users, tokens, sites and calcs.

Imports only the standard library at module level: Bottle, cheroot and the store are loaded when a
command runs, so `extcomp-api --help` works on a host without the `api` extra.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from webapi.errors import Exit, UsageError

ENV_CONFIG = "EXTCOMP_API_CONFIG"
DEFAULT_CONFIG = Path("/etc/extcomp-api/config.yml")
EXIT_OK = Exit.OK
log = logging.getLogger("webapi.cli")


if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
Command = Callable[[argparse.Namespace], int]


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
    from webapi.server.auth import UserStore
    from webapi.server.config import load_config

    return UserStore(load_config(_config_path(args)).users_file)


def cmd_serve(args: argparse.Namespace) -> int:
    from webapi.server.config import load_config
    from webapi.server.serve import file_error, run

    path = _config_path(args)
    conf = load_config(path)
    try:
        _setup_logging(conf.log_file, args.verbose)
    except OSError as exc:  # only opening the log file can fail: a ConfigError naming it (exit 2)
        raise file_error("log_file", conf.log_file or path, exc, "create and write") from None
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


def cmd_users_password(args: argparse.Namespace) -> int:
    password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise UsageError("users password: read an empty password from stdin")
    _users(args).set_password(args.name, password)
    print(f"password of {args.name} changed (stored hashed); their tokens stay valid")
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
    from webapi.server.config import load_config

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
    from webapi.server.config import ConfigSource, site_policy
    from webapi.store.yaml_store import YamlJobStore

    source = ConfigSource(_config_path(args))
    # Beside a running server this store never repairs (the server owns the data dir) and makes
    # each change under the store's lock, as the server does.
    return YamlJobStore.beside_server(source.current.data_dir, site_policy(source))


# Turns what an operator typed into a calc id; the composition root (webapi.cli) may widen it
# (e.g. to accept the original protocol's accept_id).
CalcIdParser = Callable[[str], str]


def cmd_admin_requeue(args: argparse.Namespace) -> int:
    calc = _store(args).requeue(args.calc_id_parser(args.calc_id))
    print(f"calc {calc.id} is {calc.state}")
    return EXIT_OK


def cmd_admin_fail(args: argparse.Namespace) -> int:
    reason = f"failed by an admin: {args.reason}"
    calc = _store(args).fail(args.calc_id_parser(args.calc_id), reason)
    print(f"calc {calc.id} is {calc.state}: {calc.reason}")
    return EXIT_OK


def cmd_admin_purge(args: argparse.Namespace) -> int:
    from webapi.server.config import load_config

    conf = load_config(_config_path(args))
    if not (conf.retention.active or any(s.retention for s in conf.sites.values())):
        raise UsageError(
            "no retention rule is configured: add 'retention: {max_age_days: N, keep: N}' to "
            "the server config (or a site's settings); see docs/job-store.md"
        )
    report = _store(args).purge(conf.site_retention, dry_run=args.dry_run)
    for calc in report.calcs:
        verb = "would remove" if args.dry_run else "removed"
        print(
            f"{verb} {calc.id}\tsite {calc.site}\t{calc.state}\tended {calc.ended_ago:.0f} s ago"
            f"\t{calc.files} file(s)\t{calc.bytes} bytes\t{calc.why}"
        )
    print(report.summary())
    return EXIT_OK


def add_command(
    parent: SubParsers, name: str, func: Command, help_: str
) -> argparse.ArgumentParser:
    """A subcommand that takes `--config` after its name too (`extcomp-api serve --config F`)."""
    p: argparse.ArgumentParser = parent.add_parser(name, help=help_, description=help_)
    p.add_argument("--config", default=argparse.SUPPRESS, help="server config YAML")
    p.set_defaults(func=func)
    return p


def add_server_commands(sub: SubParsers, calc_id: CalcIdParser = lambda raw: raw) -> None:
    """Add serve, users, sites and admin to the `extcomp-api` parser."""
    add = add_command
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
        "--token-stdin",
        action="store_true",
        help="read an existing MInt API token (64 hex digits) from stdin; stored hashed",
    )
    p = add(users, "token", cmd_users_token, "Make a new token for a user and print it once")
    p.add_argument("name")
    p.add_argument("--label", default="", help="a note to tell tokens apart")
    p.add_argument("--expires-days", type=float, default=None, help="default: never")
    p.add_argument(
        "--token-stdin",
        action="store_true",
        help="store an existing MInt API token read from stdin instead",
    )
    p = add(users, "password", cmd_users_password, "Set a user's login password (read from stdin)")
    p.add_argument("name")
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
    p.set_defaults(calc_id_parser=calc_id)
    p = add(admin, "fail", cmd_admin_fail, "End a calc that has not finished as failed")
    p.add_argument("calc_id", help="calc id or original-protocol accept_id")
    p.add_argument("--reason", required=True, help="why (shown to the calc's owner)")
    p.set_defaults(calc_id_parser=calc_id)
    p = add(
        admin,
        "purge",
        cmd_admin_purge,
        "Remove final calcs (succeeded, failed, cancelled) and their files past the configured "
        "retention (max_age_days, keep per site); safe beside a running server",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="only print what would be removed, remove nothing"
    )
