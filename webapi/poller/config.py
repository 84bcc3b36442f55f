"""Read the poller's YAML config into a frozen dataclass, with errors that say where and why."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webapi.contract.names import SITE_RE
from webapi.errors import ConfigError
from webapi.fs import load_yaml_config
from webapi.poller.metrics import MetricsOutput

EXECUTORS = ("local", "slurm", "pbs")
DEFAULT_WORK_BASE = Path("/tmp/extcomp-poller")
DEFAULT_STATE_DIR = Path("/var/lib/extcomp-poller")
DEFAULT_MIN_FREE = 64 << 20


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One allow-listed command: the argv prefix the calc's args are appended to."""

    name: str
    argv: tuple[str, ...]
    timeout: float | None = None
    executor: str = "local"
    executor_options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Retry:
    """Give up after `count` failed attempts `interval` seconds apart while the server is away."""

    count: int = 5
    interval: float = 60.0


@dataclass(frozen=True, slots=True)
class BatchPoll:
    """Batch executors ask the scheduler `first` s after a submit, then twice as long each
    time up to `max` s (the exit file, a plain file read, is checked far more often)."""

    first: float = 5.0
    max: float = 60.0


@dataclass(frozen=True, slots=True)
class Login:
    """Log in with an ID and a password read from an environment variable."""

    user: str
    password_env: str = "EXTCOMP_POLLER_PASSWORD"


@dataclass(frozen=True, slots=True)
class PollerConfig:
    site: str
    url: str
    token_file: Path | None = None
    token: str | None = field(default=None, repr=False)
    login: Login | None = None
    ca_file: Path | None = None
    verify: bool = True
    work_base: Path = DEFAULT_WORK_BASE
    state_dir: Path = DEFAULT_STATE_DIR
    retry: Retry = Retry()
    claim_wait: float = 50.0
    # Quick urllib3 retries inside one attempt; the outer `retry` is the real patience.
    http_retries: int = 2
    poller_id: str = ""
    commands: Mapping[str, CommandSpec] = field(default_factory=dict)
    # The site's guarantee: files matching these patterns never leave this host (never uploaded
    # as results, whatever way the program ended). See docs/setup.md.
    never_return: tuple[str, ...] = ()
    # Space kept free in the state dir's and the work base's file systems: below it the poller
    # takes no new calc, and a calc's inputs must fit above it.
    min_free_bytes: int = DEFAULT_MIN_FREE
    # A cap on one calc's inputs whatever the free space (0: none).
    max_input_bytes: int = 0
    # Each request to the server as a whole: this long, plus a second per 16 KiB it carries; a
    # server that answers slower (one byte at a time, say) is given up on.
    request_deadline: float = 120.0
    # Prometheus metrics (webapi.poller.metrics): a textfile and/or a loopback port; none if None.
    metrics: MetricsOutput | None = None
    batch_poll: BatchPoll = BatchPoll()

    def read_token(self) -> str | None:
        """The token from `token` or `token_file` (which must not be readable by others)."""
        if self.token:
            return self.token
        if self.token_file is None:
            return None
        try:
            mode = self.token_file.stat().st_mode
            text = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"token_file {self.token_file}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"token_file {self.token_file} is readable by others; "
                f"run: chmod 600 {self.token_file}"
            )
        if not text:
            raise ConfigError(f"token_file {self.token_file} is empty")
        return text


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One poller run as the command line asked for it."""

    config: PollerConfig
    protocol: str = "native"
    once: bool = False
    verbose: bool = False
    poll_interval: float = 10.0  # the original protocol's pause between calc-requests
    metrics: MetricsOutput | None = None  # --metrics-textfile / --metrics-port


def default_state_dir(site: str) -> Path:
    """Where a poller started without a config keeps its records: the XDG state dir."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "extcomp-poller" / site


def _req(data: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in data or data[key] in (None, ""):
        raise ConfigError(f"{where}: '{key}' is required")
    return data[key]


def _number(value: Any, where: str, *, minimum: float = 0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ConfigError(f"{where} must be a number >= {minimum}, got {value!r}")
    return float(value)


def _int(value: Any, where: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return value


def with_allowed(commands: Mapping[str, CommandSpec], items: list[str]) -> dict[str, CommandSpec]:
    """The allow-list plus `--allow NAME=PROGRAM` items given on the command line."""
    merged = dict(commands)
    for item in items:
        name, sep, program = item.partition("=")
        if not sep or not name or not program:
            raise ConfigError(f"--allow {item!r}: expected NAME=PROGRAM")
        merged[name] = parse_command(name, [program], f"--allow {name}")
    return merged


def parse_command(name: str, raw: Any, where: str) -> CommandSpec:
    """One allow-list entry: `{argv: [...], timeout?, executor?, executor_options?}` or an argv."""
    if isinstance(raw, list):
        raw = {"argv": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with 'argv', got {type(raw).__name__}")
    unknown = set(raw) - {"argv", "timeout", "executor", "executor_options"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    argv = raw.get("argv")
    if isinstance(argv, str):
        raise ConfigError(
            f"{where}.argv must be a list such as [/opt/bin/prog, --flag], not a string"
        )
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
        raise ConfigError(f"{where}.argv must be a non-empty list of strings")
    timeout = raw.get("timeout")
    executor = raw.get("executor", "local")
    if executor not in EXECUTORS:
        raise ConfigError(
            f"{where}.executor must be one of {', '.join(EXECUTORS)}, got {executor!r}"
        )
    options = raw.get("executor_options", [])
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise ConfigError(f"{where}.executor_options must be a list of strings")
    return CommandSpec(
        name=name,
        argv=tuple(argv),
        timeout=None if timeout is None else _number(timeout, f"{where}.timeout", minimum=1),
        executor=executor,
        executor_options=tuple(options),
    )


def parse_config(data: Any, *, source: str = "config", base: Path | None = None) -> PollerConfig:
    """Validate a decoded YAML document; relative paths are taken relative to `base`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    known = {
        "site",
        "url",
        "token_file",
        "token",
        "login",
        "ca_file",
        "verify",
        "work_base",
        "state_dir",
        "retry",
        "claim_wait",
        "http_retries",
        "poller_id",
        "commands",
        "never_return",
        "min_free_bytes",
        "max_input_bytes",
        "request_deadline",
        "metrics",
        "batch_poll",
    }
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{source}: unknown keys {sorted(unknown)}")

    def path(key: str, default: Path | None) -> Path | None:
        value = data.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{key}' must be a path string")
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() or base is None else base / p

    site = str(_req(data, "site", source))
    if not SITE_RE.match(site):
        raise ConfigError(f"{source}: site {site!r} may use letters, digits and '._-' only")
    url = str(_req(data, "url", source))
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{source}: url must start with https:// (or http:// for local tests)")
    login = None
    if data.get("login") is not None:
        raw = data["login"]
        if not isinstance(raw, dict) or not raw.get("user"):
            raise ConfigError(f"{source}: login must be {{user: ID, password_env: VAR}}")
        login = Login(str(raw["user"]), str(raw.get("password_env") or "EXTCOMP_POLLER_PASSWORD"))
    token = data.get("token")
    if token is not None and not isinstance(token, str):
        raise ConfigError(f"{source}: token must be a string")
    token_file = path("token_file", None)
    if token is None and token_file is None and login is None:
        raise ConfigError(f"{source}: give token_file (mode 0600) or login: {{user, password_env}}")
    retry_raw = data.get("retry") or {}
    if not isinstance(retry_raw, dict):
        raise ConfigError(f"{source}: retry must be {{count: N, interval: SECONDS}}")
    retry = Retry(
        count=_int(retry_raw.get("count", 5), f"{source}: retry.count", minimum=1),
        interval=_number(retry_raw.get("interval", 60), f"{source}: retry.interval"),
    )
    commands_raw = data.get("commands") or {}
    if not isinstance(commands_raw, dict):
        raise ConfigError(f"{source}: commands must map a command name to {{argv: [...]}}")
    commands = {
        str(name): parse_command(str(name), raw, f"{source}: commands.{name}")
        for name, raw in commands_raw.items()
    }
    batch_poll = _batch_poll(data.get("batch_poll"), f"{source}: batch_poll")
    verify = data.get("verify", True)
    if not isinstance(verify, bool):
        raise ConfigError(f"{source}: verify must be true or false")
    return PollerConfig(
        site=site,
        url=url,
        token_file=token_file,
        token=token,
        login=login,
        ca_file=path("ca_file", None),
        verify=verify,
        work_base=path("work_base", DEFAULT_WORK_BASE) or DEFAULT_WORK_BASE,
        state_dir=path("state_dir", DEFAULT_STATE_DIR) or DEFAULT_STATE_DIR,
        retry=retry,
        claim_wait=_number(data.get("claim_wait", 50), f"{source}: claim_wait"),
        http_retries=_int(data.get("http_retries", 2), f"{source}: http_retries"),
        poller_id=str(data.get("poller_id") or ""),
        commands=commands,
        never_return=_patterns(data.get("never_return"), f"{source}: never_return"),
        min_free_bytes=_int(
            data.get("min_free_bytes", DEFAULT_MIN_FREE), f"{source}: min_free_bytes"
        ),
        max_input_bytes=_int(data.get("max_input_bytes", 0), f"{source}: max_input_bytes"),
        request_deadline=_number(
            data.get("request_deadline", 120), f"{source}: request_deadline", minimum=1
        ),
        metrics=_metrics(data.get("metrics"), source, base),
        batch_poll=batch_poll,
    )


def _metrics(raw: Any, source: str, base: Path | None) -> MetricsOutput | None:
    """`metrics: {textfile: PATH, port: N, listen: ADDR}` (each optional)."""
    if raw is None:
        return None
    shape = "metrics must be {textfile: PATH, port: N, listen: 127.0.0.1} (each optional)"
    if not isinstance(raw, dict) or set(raw) - {"textfile", "port", "listen"}:
        raise ConfigError(f"{source}: {shape}")
    textfile = raw.get("textfile")
    if textfile is not None and not isinstance(textfile, str):
        raise ConfigError(f"{source}: metrics.textfile must be a path string")
    port = raw.get("port")
    if port is not None:
        port = _int(port, f"{source}: metrics.port")
        if port > 65535:
            raise ConfigError(f"{source}: metrics.port must be a port 0-65535, got {port}")
    listen = raw.get("listen", "127.0.0.1")
    if not isinstance(listen, str) or not listen:
        raise ConfigError(f"{source}: metrics.listen must be an address, e.g. 127.0.0.1")
    file = None
    if textfile is not None:
        file = Path(os.path.expanduser(textfile))
        file = file if file.is_absolute() or base is None else base / file
    return MetricsOutput(textfile=file, port=port, listen=listen)


def _batch_poll(raw: Any, where: str) -> BatchPoll:
    if raw is None:
        return BatchPoll()
    if not isinstance(raw, dict) or set(raw) - {"first", "max"}:
        raise ConfigError(
            f"{where} must be {{first: SECONDS, max: SECONDS}}, e.g. {{first: 5, max: 60}}"
        )
    first = _number(raw.get("first", BatchPoll().first), f"{where}.first", minimum=0)
    most = _number(raw.get("max", max(first, BatchPoll().max)), f"{where}.max", minimum=0)
    if most < first or most <= 0:
        raise ConfigError(f"{where}.max must be > 0 and >= first ({first:g}), got {most:g}")
    return BatchPoll(first, most)


def _patterns(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(p, str) and p.strip() for p in raw):
        raise ConfigError(f"{where} must be a list of file patterns such as ['*.secret', 'keys/*']")
    return tuple(p.strip() for p in raw)


def load_config(path: Path) -> PollerConfig:
    """Read and validate a poller config file."""
    data = load_yaml_config(path, "poller config")
    return parse_config(data, source=str(path), base=path.parent)


def parse_retry(text: str) -> Retry:
    """The seed's positional `retry:N,INTERVAL` form."""
    body = text.removeprefix("retry:")
    try:
        count_s, interval_s = body.split(",")
        count, interval = int(count_s), float(interval_s)
    except ValueError:
        raise ConfigError(f"{text!r}: expected retry:N,INTERVAL such as retry:5,60") from None
    if count < 1 or interval < 0:
        raise ConfigError(f"{text!r}: N must be >= 1 and INTERVAL >= 0")
    return Retry(count=count, interval=interval)
