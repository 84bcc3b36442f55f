"""`extcomp-poller --protocol mint …`: the original poller's command line, run by our mint poller.

    extcomp-poller --protocol mint SITE_ID URL TOKEN|login|- [port:N] [retry:N,INTERVAL]
                   [no_auth[:CA_FILE]] [calc_base:DIR] [debug]
                   [--config FILE] [--allow NAME=PROGRAM]... [--token-file FILE]
                   [--poll-interval S] [--state-dir DIR] [--once] [-v]

The positional part is the original's (port default 50443, appended to URL unless it names one).
Our additions: the allow-list (`--allow` or `commands:` of a `--config` file; nothing runs
without it), a token kept off the command line (`-` with `--token-file` or the config's
`token_file`), the poll interval and the state dir. It runs the same loop as the native poller
(webapi.poller.loop) with the original protocol's adapter; exit codes as `extcomp-poller`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path

from webapi.errors import ConfigError
from webapi.mint.codec.wire import DEFAULT_PORT, with_port
from webapi.poller.config import (
    PollerConfig,
    RunSpec,
    default_state_dir,
    load_config,
    parse_config,
    parse_retry,
    with_allowed,
)

log = logging.getLogger("extcomp-poller")
USAGE = (
    "SITE_ID URL TOKEN|login|- [port:N] [retry:N,INTERVAL] [no_auth[:CA]] [calc_base:DIR] [debug]"
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="extcomp-poller --protocol mint",
        description="Take calcs of one site from an original-protocol MInt server (/mi-distcomp-"
        "api/, the original server or ours) and run the allow-listed ones here.",
    )
    p.add_argument("positional", nargs="*", metavar=USAGE)
    p.add_argument("--protocol", choices=["mint"], default="mint", help=argparse.SUPPRESS)
    p.add_argument("--config", type=Path, help="poller config YAML: commands, token_file, …")
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="NAME=PROGRAM",
        help="allow-list entry: the server's command NAME runs PROGRAM",
    )
    p.add_argument("--token-file", type=Path, help="token file (mode 0600), with TOKEN '-'")
    p.add_argument(
        "--poll-interval",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between calc-request polls when idle (default 10)",
    )
    p.add_argument("--state-dir", type=Path, help="where the per-calc state files live")
    p.add_argument("--once", action="store_true", help="handle one calc, then exit")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    """The original's optional positional words."""

    port: int | None = None
    retry: str | None = None
    verify: bool = True
    ca_file: Path | None = None
    calc_base: Path | None = None
    debug: bool = False


def parse_options(words: list[str]) -> Options:
    opts = Options()
    for word in words:
        key, sep, value = word.partition(":")
        if key == "port" and sep:
            if not value.isdigit() or not 0 < int(value) < 65536:
                raise ConfigError(f"{word!r}: expected port:N with N in 1..65535")
            opts = dataclasses.replace(opts, port=int(value))
        elif key == "retry" and sep:
            opts = dataclasses.replace(opts, retry=word)
        elif key == "no_auth":
            ca = Path(value).expanduser() if sep and value else None
            opts = dataclasses.replace(opts, verify=ca is not None, ca_file=ca)
        elif key == "calc_base" and sep and value:
            opts = dataclasses.replace(opts, calc_base=Path(value).expanduser())
        elif word == "debug":
            opts = dataclasses.replace(opts, debug=True)
        else:
            raise ConfigError(f"unknown argument {word!r}; expected {USAGE}")
    return opts


def config_from_args(args: argparse.Namespace) -> tuple[PollerConfig, Options]:
    """The positional form, merged over an optional --config file (positional values win)."""
    base = load_config(args.config) if args.config else None
    pos = list(args.positional)
    if len(pos) < 3:
        raise ConfigError(f"expected {USAGE}")
    site, url, token = pos[:3]
    opts = parse_options(pos[3:])
    try:
        url = with_port(url, opts.port or DEFAULT_PORT)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if opts.port is not None and not url.endswith(f":{opts.port}"):
        raise ConfigError(f"the URL names a port and port:{opts.port} names another; give one")
    data: dict[str, object] = {"site": site, "url": url}
    if token == "login":
        data["login"] = {"user": os.environ.get("EXTCOMP_POLLER_USER") or "?"}
    elif token == "-":
        token_file = args.token_file or (base.token_file if base else None)
        if token_file is None:
            raise ConfigError("TOKEN '-' needs --token-file FILE or token_file in --config")
        data["token_file"] = str(token_file)
    else:
        log.warning(
            "a token given on the command line shows in `ps`; "
            "prefer '-' with --token-file (mode 0600)"
        )
        data["token"] = token
    config = parse_config(data)
    if base is not None:
        # The command line names the server, site and token; everything else is the file's.
        config = dataclasses.replace(
            base,
            site=config.site,
            url=config.url,
            token=config.token,
            token_file=config.token_file,
            login=config.login,
        )
    else:
        config = dataclasses.replace(config, state_dir=default_state_dir(site))
    commands = with_allowed(config.commands, args.allow)
    return dataclasses.replace(
        config,
        commands=commands,
        retry=parse_retry(opts.retry) if opts.retry else config.retry,
        verify=config.verify and opts.verify,
        ca_file=opts.ca_file or config.ca_file,
        work_base=opts.calc_base or config.work_base,
        state_dir=args.state_dir or config.state_dir,
    ), opts


def parse(argv: list[str]) -> RunSpec:
    """The whole command line (`--protocol mint …`) as a run spec; ConfigError if it is bad."""
    # Intermixed: the original's optional words may come after our --options.
    args = build_parser().parse_intermixed_args(argv)
    config, opts = config_from_args(args)
    if args.poll_interval < 0:
        raise ConfigError("--poll-interval must be >= 0")
    return RunSpec(
        config,
        "mint",
        once=args.once,
        verbose=args.verbose or opts.debug,
        poll_interval=args.poll_interval,
    )
