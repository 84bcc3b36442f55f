"""The `extcomp-poller` console script: read the command line or a config file, run the loop.

    extcomp-poller SITE_ID URL TOKEN|login [retry:N,INTERVAL] [--allow NAME=PROGRAM]...
    extcomp-poller --config FILE [--once]
    extcomp-poller --protocol mint SITE_ID URL TOKEN|login|- [port:N] … (webapi/mint/poller_cli.py)
    extcomp-poller cleanup [--config FILE | --work-base DIR --state-dir DIR] [--older-than DAYS]

Both protocols run the same loop (webapi.poller.loop) with their own adapter; this module is
where the two are put together.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType

from webapi.errors import (
    ApiError,
    ConfigError,
    Exit,
    MalformedAnswer,
    TransportError,
    exit_epilog,
    missing_extra,
)
from webapi.poller.config import (
    PollerConfig,
    RunSpec,
    default_state_dir,
    load_config,
    parse_config,
    parse_retry,
    with_allowed,
)
from webapi.poller.loop import Adapter, Poller
from webapi.poller.metrics import MetricsOutput, PollerMetrics
from webapi.poller.state import StateDir

log = logging.getLogger("extcomp-poller")
EXIT_CODES = (Exit.OK, Exit.USAGE, Exit.UNKNOWN_SITE, Exit.REFUSED, Exit.UNREACHABLE)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="extcomp-poller",
        description="Claim calcs of one site from the MInt API server and run them here.",
        epilog="Positional form: SITE_ID URL TOKEN|login [retry:N,INTERVAL]. "
        "Prefer --config with token_file: a token on the command line shows in `ps`.\n\n"
        + exit_epilog(EXIT_CODES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("positional", nargs="*", metavar="SITE_ID URL TOKEN|login [retry:N,INTERVAL]")
    p.add_argument("--config", type=Path, help="poller config YAML (see docs/webapi-mode.md)")
    p.add_argument(
        "--once",
        action="store_true",
        help="handle at most one calc (or one empty claim), then exit",
    )
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="NAME=PROGRAM",
        help="allow-list entry for the positional form (repeatable)",
    )
    p.add_argument("--state-dir", type=Path, help="where the per-calc state files live")
    p.add_argument("--work-base", type=Path, help="where per-calc work dirs are made")
    p.add_argument("--ca-file", type=Path, help="CA bundle for the server's TLS certificate")
    p.add_argument(
        "--http-retries",
        type=int,
        metavar="N",
        help="quick HTTP retries inside one attempt (default 2)",
    )
    p.add_argument(
        "--protocol",
        choices=["native", "mint"],
        default="native",
        help="mint: talk the original MInt protocol (see extcomp-poller --protocol mint --help)",
    )
    m = p.add_argument_group(
        "metrics (Prometheus; optional; they win over the config's metrics: {textfile, port})"
    )
    m.add_argument(
        "--metrics-textfile",
        type=Path,
        metavar="PATH",
        help="keep a node-exporter textfile here (rewritten atomically; name it *.prom)",
    )
    m.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve GET /metrics on this port (0: any free one)",
    )
    m.add_argument(
        "--metrics-listen",
        metavar="ADDR",
        help="address of --metrics-port (default 127.0.0.1: only this host may scrape)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def metrics_output(
    args: argparse.Namespace, configured: MetricsOutput | None
) -> MetricsOutput | None:
    """The metrics flags over the config's `metrics:`, checked: a bad one is a usage error now,
    not a warning later."""
    base = configured or MetricsOutput()
    textfile = args.metrics_textfile if args.metrics_textfile is not None else base.textfile
    port = args.metrics_port if args.metrics_port is not None else base.port
    listen = args.metrics_listen or base.listen
    if textfile is None and port is None:
        return None
    if textfile is not None:
        parent = textfile.expanduser().parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(
                f"--metrics-textfile {textfile}: {parent} is not a writable dir; create it "
                "(node-exporter's --collector.textfile.directory) or choose another path"
            )
        textfile = textfile.expanduser()
    if port is not None and not 0 <= port <= 65535:
        raise ConfigError(f"--metrics-port {port}: give a port 0-65535")
    return MetricsOutput(textfile=textfile, port=port, listen=listen)


def _protocol(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg == "--protocol" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--protocol="):
            return arg.split("=", 1)[1]
    return "native"


def build_cleanup_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="extcomp-poller cleanup",
        description="Remove old per-calc work dirs and finished state records (both protocols).",
    )
    p.add_argument("--config", type=Path, help="the poller's config (gives both dirs)")
    p.add_argument("--work-base", type=Path)
    p.add_argument("--state-dir", type=Path)
    p.add_argument("--older-than", type=float, default=30.0, metavar="DAYS")
    return p


def config_from_args(args: argparse.Namespace) -> PollerConfig:
    """Merge --config and the positional form (positional values win)."""
    config: PollerConfig | None = load_config(args.config) if args.config else None
    pos = list(args.positional)
    if not pos and config is None:
        raise ConfigError("give SITE_ID URL TOKEN|login [retry:N,INTERVAL] or --config FILE")
    if pos:
        if len(pos) not in (3, 4):
            raise ConfigError(f"expected SITE_ID URL TOKEN|login [retry:N,INTERVAL], got {pos}")
        site, url, token = pos[:3]
        data: dict[str, object] = {"site": site, "url": url}
        if token == "login":
            data["login"] = {"user": os.environ.get("EXTCOMP_POLLER_USER") or "?"}
        else:
            log.warning(
                "a token given on the command line shows in `ps`; "
                "prefer --config with token_file (mode 0600)"
            )
            data["token"] = token
        parsed = parse_config({**data, "state_dir": str(default_state_dir(site))})
        retry = parse_retry(pos[3]) if len(pos) == 4 else parsed.retry
        if config is None:
            config = dataclasses.replace(parsed, retry=retry)
        else:
            config = dataclasses.replace(
                config,
                site=parsed.site,
                url=parsed.url,
                token=parsed.token,
                token_file=None if parsed.token else config.token_file,
                login=parsed.login or (None if parsed.token else config.login),
                retry=retry if len(pos) == 4 else config.retry,
            )
    assert config is not None
    commands = with_allowed(config.commands, args.allow)
    return dataclasses.replace(
        config,
        commands=commands,
        state_dir=args.state_dir or config.state_dir,
        work_base=args.work_base or config.work_base,
        ca_file=args.ca_file or config.ca_file,
        http_retries=config.http_retries if args.http_retries is None else args.http_retries,
    )


def parse(argv: list[str]) -> RunSpec:
    """The command line as a run spec, for either protocol; ConfigError if it is bad."""
    if _protocol(argv) == "mint":
        from webapi.mint.poller_cli import parse as parse_mint

        return parse_mint(argv)
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    return RunSpec(
        config,
        "native",
        once=args.once,
        verbose=args.verbose,
        metrics=metrics_output(args, config.metrics),
    )


def resolve_token(config: PollerConfig) -> str:
    """token / token_file, or log in with ID + password (env or TTY prompt)."""
    token = config.read_token()
    if token:
        return token
    if config.login is None:
        raise ConfigError("no token: set token_file, or use `login`")
    user = config.login.user
    if user == "?":
        user = os.environ.get("EXTCOMP_POLLER_USER") or ""
    password = os.environ.get(config.login.password_env)
    if not user or password is None:
        if not sys.stdin.isatty():
            raise ConfigError(
                f"login: set EXTCOMP_POLLER_USER and {config.login.password_env} "
                "(no TTY to prompt on)"
            )
        user = user or input("ID: ").strip()
        password = getpass.getpass("Password: ") if password is None else password
    from webapi.transport import Transport, TransportSettings, login

    settings = TransportSettings(
        url=config.url, ca_file=config.ca_file, verify=config.verify, retries=config.http_retries
    )
    transport = Transport(settings)
    try:
        return login(transport, user, password).token
    finally:
        transport.close()


def start_failed(exc: Exception) -> int:
    """One line on stderr, and the exit code, for a poller that cannot start."""
    if isinstance(exc, ConfigError):
        sys.stderr.write(f"extcomp-poller: {exc}\n")
        return Exit.USAGE
    if isinstance(exc, TransportError | MalformedAnswer):
        sys.stderr.write(f"extcomp-poller: cannot log in: {exc}\n")
        return Exit.UNREACHABLE
    message = exc.message if isinstance(exc, ApiError) else str(exc)
    sys.stderr.write(f"extcomp-poller: login refused: {message}\n")
    return Exit.REFUSED


def make_poller(spec: RunSpec, token: str) -> Poller:
    """The loop with the adapter of `spec.protocol`, owning its state dir."""
    config = spec.config
    if not config.poller_id:
        config = dataclasses.replace(config, poller_id=socket.gethostname())
    state = StateDir(config.state_dir)
    state.claim_ownership(spec.protocol)
    if spec.protocol == "mint":
        from webapi.mint.poller import MintAdapter

        adapter: Adapter = MintAdapter(
            config, token, state, config.poller_id, poll_interval=spec.poll_interval
        )
    else:
        from webapi.poller.native import NativeAdapter

        adapter = NativeAdapter(config, token, state, config.poller_id)
    metrics = None
    if spec.metrics is not None:
        metrics = PollerMetrics(config.site, config.poller_id, spec.metrics)
    return Poller(config, adapter, state, metrics=metrics)


def cleanup_main(argv: list[str]) -> int:
    from webapi.poller.workdir import cleanup

    args = build_cleanup_parser().parse_args(argv)
    try:
        config = load_config(args.config) if args.config else None
    except ConfigError as exc:
        sys.stderr.write(f"extcomp-poller: {exc}\n")
        return Exit.USAGE
    work_base = args.work_base or (config.work_base if config else None)
    state_dir = args.state_dir or (config.state_dir if config else None)
    if work_base is None:
        sys.stderr.write("extcomp-poller cleanup: give --config, or --work-base and --state-dir\n")
        return Exit.USAGE
    cutoff = time.time() - args.older_than * 86400
    keep: list[str] = []
    pruned = 0
    if state_dir is not None and state_dir.is_dir():
        state = StateDir(state_dir)
        keep = [r.key for r in state.pending()]
        pruned = state.prune(cutoff)
    removed = cleanup(work_base, args.older_than, keep=keep)
    print(
        f"removed {len(removed)} work dirs older than {args.older_than:g} days from {work_base}"
        f" and {pruned} finished state records"
    )
    return Exit.OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["cleanup"]:
        return cleanup_main(argv[1:])
    try:
        spec = parse(argv)
    except ConfigError as exc:
        return start_failed(exc)
    logging.basicConfig(
        level=logging.DEBUG if spec.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = spec.config
    try:
        if not config.commands:
            log.warning("the allow-list is empty: every calc will be refused (use --allow)")
        poller = make_poller(spec, resolve_token(config))
    except (ConfigError, TransportError, MalformedAnswer, ApiError) as exc:
        return start_failed(exc)
    except ModuleNotFoundError as exc:
        said = missing_extra(exc)
        if said is None:
            raise
        return start_failed(ConfigError(said))

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if poller.stop_event.is_set() or not poller.busy:
            # Idle, or asked twice: state is on disk and a running program keeps running.
            log.info("stopping (signal %d)", signum)
            raise SystemExit(0 if not poller.busy else 128 + signum)
        log.info("stopping after the current step (signal %d); send again to exit now", signum)
        poller.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "%s poller %s serving site %s at %s (allow-list: %s)",
        spec.protocol,
        poller.poller_id,
        config.site,
        config.url,
        ", ".join(sorted(config.commands)) or "empty",
    )
    if poller.metrics is not None:
        try:
            poller.metrics.start()
        except OSError as exc:
            return start_failed(
                ConfigError(
                    f"--metrics-port {spec.metrics.port if spec.metrics else ''}: cannot listen "
                    f"({exc.strerror or exc}); choose a free port"
                )
            )
    try:
        return poller.run(once=spec.once)
    finally:
        if poller.metrics is not None:
            poller.metrics.stop()


if __name__ == "__main__":
    sys.exit(main())
