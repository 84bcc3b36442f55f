"""`extcomp-poller --protocol mint …`: the original poller's command line, run by our mint poller.

    extcomp-poller --protocol mint SITE_ID URL TOKEN|login|- [port:N] [retry:N,INTERVAL]
                   [no_auth[:CA_FILE]] [calc_base:DIR] [debug]
                   [--config FILE] [--allow NAME=PROGRAM]... [--token-file FILE]
                   [--poll-interval S] [--state-dir DIR] [--once] [-v]

The positional part is the original's (port default 50443, appended to URL unless it names one).
Our additions: the allow-list (`--allow` or `commands:` of a `--config` file; nothing runs
without it), a token kept off the command line (`-` with `--token-file` or the config's
`token_file`), the poll interval and the state dir. Exit codes as `extcomp-poller`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from webapi.errors import ApiError, ConfigError, TransportError
from webapi.mintproto import DEFAULT_PORT, with_port
from webapi.pollconfig import PollerConfig, load_config, parse_config, parse_retry, with_allowed
from webapi.poller_cli import EXIT_USAGE, start_failed

log = logging.getLogger("extcomp-poller")
USAGE = ("SITE_ID URL TOKEN|login|- [port:N] [retry:N,INTERVAL] [no_auth[:CA]] "
         "[calc_base:DIR] [debug]")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="extcomp-poller --protocol mint",
        description="Take calcs of one site from an original-protocol MInt server (/mi-distcomp-"
        "api/, the original server or ours) and run the allow-listed ones here.",
    )
    p.add_argument("positional", nargs="*", metavar=USAGE)
    p.add_argument("--protocol", choices=["mint"], default="mint", help=argparse.SUPPRESS)
    p.add_argument("--config", type=Path, help="poller config YAML: commands, token_file, …")
    p.add_argument("--allow", action="append", default=[], metavar="NAME=PROGRAM",
                   help="allow-list entry: the server's command NAME runs PROGRAM")  # fmt: skip
    p.add_argument("--token-file", type=Path, help="token file (mode 0600), with TOKEN '-'")
    p.add_argument("--poll-interval", type=float, default=10.0, metavar="S",
                   help="seconds between calc-request polls when idle (default 10)")  # fmt: skip
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


def _default_state_dir(site: str) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "extcomp-poller" / site


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
        log.warning("a token given on the command line shows in `ps`; "
                    "prefer '-' with --token-file (mode 0600)")  # fmt: skip
        data["token"] = token
    config = parse_config(data)
    if base is not None:
        config = dataclasses.replace(
            config, ca_file=base.ca_file, verify=base.verify, work_base=base.work_base,
            state_dir=base.state_dir, retry=base.retry, http_retries=base.http_retries,
            poller_id=base.poller_id, commands=base.commands,
        )  # fmt: skip
    else:
        config = dataclasses.replace(config, state_dir=_default_state_dir(site))
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


def main(argv: list[str]) -> int:
    # Intermixed: the original's optional words may come after our --options.
    args = build_parser().parse_intermixed_args(argv)
    from webapi.mint_poller import MintPoller
    from webapi.poller_cli import resolve_token

    try:
        config, opts = config_from_args(args)
    except ConfigError as exc:
        sys.stderr.write(f"extcomp-poller: {exc}\n")
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.verbose or opts.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.poll_interval < 0:
        sys.stderr.write("extcomp-poller: --poll-interval must be >= 0\n")
        return EXIT_USAGE
    try:
        if not config.commands:
            log.warning("the allow-list is empty: every calc will be refused (use --allow)")
        poller = MintPoller(config, resolve_token(config), poll_interval=args.poll_interval)
    except (ConfigError, TransportError, ApiError) as exc:
        return start_failed(exc)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if poller.stop_event.is_set() or not poller.busy:
            # Idle, or asked twice: state is on disk and a running program keeps running.
            log.info("stopping (signal %d)", signum)
            raise SystemExit(0 if not poller.busy else 128 + signum)
        log.info("stopping after the current step (signal %d); send again to exit now", signum)
        poller.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("mint-protocol poller %s serving site %s at %s (allow-list: %s)", poller.poller_id,
             config.site, config.url, ", ".join(sorted(config.commands)) or "empty")  # fmt: skip
    return poller.run(once=args.once)
