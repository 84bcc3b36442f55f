"""The original-protocol commands of `extcomp-api`: `wf` (the original workflow client's command
line) and `import-ini` (the original server's ini as our config)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from webapi.errors import Exit
from webapi.mint.codec.ids import calc_id_of

WF_DESCRIPTION = """Run a calc through the original MInt protocol with the original workflow
client's command line: register it (inputs streamed as base64), release it, wait on calc-status,
then write every requested result and the two logs into the current directory. Exit 0 when the
calc completed and every requested result came back, else 1 (2 for usage errors). `:50443` is
appended to BASE_URL unless it names a port, as the original did."""


def calc_id_of_any(raw: str) -> str:
    """Our calc id, also from an original-protocol accept_id (the same uuid with dashes)."""
    return calc_id_of(raw) or raw


def cmd_import_ini(args: argparse.Namespace) -> int:
    from webapi.mint.ini import ini_to_yaml, load_ini

    path = Path(args.file)
    sys.stdout.write(ini_to_yaml(load_ini(path), path))
    return Exit.OK


def cmd_wf(args: argparse.Namespace) -> int:
    from webapi.mint.wf import cmd_wf as run_wf  # needs requests: loaded only to run

    return run_wf(args)


def add_wf_command(sub: Any) -> None:
    p = sub.add_parser(
        "wf",
        help="run a calc through the original MInt protocol (the original workflow client's "
        "command line)",
        description=WF_DESCRIPTION,
    )
    p.add_argument("base_url", metavar="BASE_URL", help="e.g. https://host (port 50443 added)")
    p.add_argument("site", metavar="SITE")
    p.add_argument("token", metavar="TOKEN", help="'-': from --token-file or the environment")
    p.add_argument("command", metavar="COMMAND")
    p.add_argument("inputs", metavar="IN1:IN2", help="input files, ':'-separated ('' for none)")
    p.add_argument("outputs", metavar="OUT1:OUT2", help="result file names, ':'-separated")
    p.add_argument("parameters", metavar="PARAMS", nargs="?", default="")
    p.add_argument(
        "--token-file",
        type=Path,
        help="token file (env EXTCOMP_API_TOKEN_FILE or EXTCOMP_API_TOKEN)",
    )
    p.add_argument("--ca-file", type=Path, help="CA bundle for TLS (env EXTCOMP_API_CA)")
    p.add_argument(
        "--timeout", type=float, metavar="S", help="give up (and cancel the calc) after S seconds"
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between calc-status calls (default 5)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="quick HTTP retries on connection errors (default 3)",
    )
    p.set_defaults(func=cmd_wf)


def add_mint_commands(sub: Any) -> None:
    add_wf_command(sub)
    help_ = "Print the YAML config equivalent to an original mi_distributed_computing_assist.ini"
    p = sub.add_parser("import-ini", help=help_, description=help_)
    p.add_argument("--config", default=argparse.SUPPRESS, help="server config YAML")
    p.add_argument("file")
    p.set_defaults(func=cmd_import_ini)
