"""The `extcomp-api` command: the API server's commands, the workflow side's client commands and
the original-protocol tools, put together here from whichever parts are installed.

Each part's module imports only the standard library at load time, so `--help` and usage errors
work on a host with any extra; a command loads its libraries when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from webapi.client.cli import CLIENT_EXIT_CODES, add_client_commands
from webapi.errors import ApiError, ConfigError, Exit, UsageError, exit_epilog, missing_extra
from webapi.mint.cli import add_mint_commands, calc_id_of_any
from webapi.server.cli import DEFAULT_CONFIG, ENV_CONFIG, add_server_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="extcomp-api",
        description="Run the MInt API server and administer it; submit and follow calcs "
        "(WebAPI mode).",
        epilog=exit_epilog(CLIENT_EXIT_CODES, program_codes=True),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", help=f"server config YAML (env {ENV_CONFIG}, default {DEFAULT_CONFIG})"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_server_commands(sub, calc_id=calc_id_of_any)
    add_client_commands(sub)
    add_mint_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, UsageError) as exc:
        print(f"extcomp-api: {exc}", file=sys.stderr)
        return Exit.USAGE
    except ApiError as exc:
        print(f"extcomp-api: {exc.message}", file=sys.stderr)
        return Exit.FAILED
    except ModuleNotFoundError as exc:
        said = missing_extra(exc)
        if said is None:
            raise
        print(f"extcomp-api: {said}", file=sys.stderr)
        return Exit.USAGE
    except OSError as exc:
        print(f"extcomp-api: {exc}", file=sys.stderr)
        return Exit.FAILED


if __name__ == "__main__":
    sys.exit(main())
