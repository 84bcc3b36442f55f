"""Load and validate the API server's YAML configuration, re-reading it cheaply when it changes."""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webapi.contract.names import COMMAND_RE, SITE_RE
from webapi.errors import ConfigError
from webapi.fs import load_yaml_config
from webapi.store.base import SitePolicy
from webapi.store.retention import RetentionRule

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class SiteConfig:
    name: str
    commands: tuple[str, ...]
    lease_seconds: int | None = None
    legacy_lease: int | None = None  # see ServerConfig.legacy_lease
    retention: RetentionRule | None = None  # None: the server's default rule


@dataclass(frozen=True, slots=True)
class ServerConfig:
    data_dir: Path
    users_file: Path
    listen: str = "127.0.0.1"
    port: int = 50443
    tls: TlsConfig | None = None
    log_file: Path | None = None
    # Each long-poll claim holds one worker thread for up to claim_wait_max seconds: size this
    # above the number of pollers plus the concurrent workflow-side clients.
    threads: int = 64
    lease_seconds: int = 600
    heartbeat_seconds: int = 60
    max_attempts: int = 3
    claim_wait_max: int = 50
    queued_expiry_seconds: int = 86400
    # A calc whose inputs saw no upload (or, held, no release) for this long fails: its client
    # is gone, and it must neither wait for ever nor run later unseen.
    registered_expiry_seconds: int = 86400
    # A poller that asks for it must confirm a claim (its first heartbeat) within this long, or
    # the calc goes back to the queue without losing an attempt (the poller never got it).
    claim_confirm_seconds: int = 30
    # The same for claims through the original protocol's calc-params: confirmed when the
    # answer was sent whole, or by the poller's next progress call.
    legacy_confirm_seconds: int = 600
    # A request's headers must arrive within this long, and its body within this long plus one
    # second per 16 KiB: a client sending too slowly (or lying about its length) is cut off.
    request_deadline_seconds: int = 30
    # Disk space never promised to uploads: room for calc records and logs when the disk fills.
    min_free_bytes: int = 64 << 20
    quota_bytes: int = 0
    poller_absent_seconds: int = 120
    reaper_seconds: float = 5.0
    sites: dict[str, SiteConfig] = field(default_factory=dict)
    # An original mi_distributed_computing_assist.ini whose sites/commands are merged in.
    mint_ini: Path | None = None
    # Lease of claims made through the original protocol, whose poller never heartbeats while
    # the program runs: seconds, 0 = no expiry (an operator requeues or fails a stuck calc).
    legacy_lease: int = 0
    # A second, token-free listener serving only /metrics, for a Prometheus on this host:
    # loopback addresses only (elsewhere scrape /metrics on the API port with an admin token).
    metrics_listen: tuple[str, int] | None = None
    # Final calcs past these limits are removed with their files (default: kept for ever);
    # a site's own `retention` replaces the default for that site as a whole.
    retention: RetentionRule = field(default_factory=RetentionRule)
    retention_interval_seconds: int = 3600

    def site_retention(self, site: str) -> RetentionRule:
        conf = self.sites.get(site)
        if conf is not None and conf.retention is not None:
            return conf.retention
        return self.retention

    def site_lease_seconds(self, site: str) -> int:
        conf = self.sites.get(site)
        if conf is not None and conf.lease_seconds is not None:
            return conf.lease_seconds
        return self.lease_seconds

    def site_legacy_lease(self, site: str) -> int:
        conf = self.sites.get(site)
        if conf is not None and conf.legacy_lease is not None:
            return conf.legacy_lease
        return self.legacy_lease


_INT_KEYS = {
    "port": (0, 65535),
    "threads": (2, 10000),
    "lease_seconds": (1, 7 * 86400),
    "heartbeat_seconds": (1, 86400),
    "max_attempts": (1, 1000),
    "claim_wait_max": (0, 3600),
    "queued_expiry_seconds": (1, 365 * 86400),
    "registered_expiry_seconds": (1, 365 * 86400),
    "claim_confirm_seconds": (1, 86400),
    "legacy_confirm_seconds": (1, 86400),
    "min_free_bytes": (0, 1 << 50),
    "request_deadline_seconds": (1, 86400),
    "quota_bytes": (0, 1 << 62),
    "poller_absent_seconds": (1, 86400 * 30),
    "legacy_lease": (0, 10 * 365 * 86400),
}
_KNOWN = {"listen", "tls", "data_dir", "users_file", "log_file", "reaper_seconds", "sites"}
_KNOWN |= {"mint_ini", "metrics_listen", "retention"}
_RETENTION_KEYS = ("max_age_days", "keep")
MAX_RETENTION_DAYS = 100 * 365
_KNOWN |= set(_INT_KEYS)


def _fail(path: Path, key: str, what: str, fix: str) -> ConfigError:
    return ConfigError(f"{path}: key '{key}': {what}; {fix}")


def _path(path: Path, key: str, value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise _fail(path, key, f"expected a file path, got {value!r}", "give a path string")
    p = Path(value).expanduser()
    # Relative paths are relative to the config file, so a config dir can be moved as a whole.
    return p if p.is_absolute() else (path.parent / p)


def _int(path: Path, key: str, value: Any) -> int:
    lo, hi = _INT_KEYS.get(key.rsplit(".", 1)[-1], (0, 1 << 62))
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, key, f"expected an integer, got {value!r}", f"use a number {lo}..{hi}")
    if not lo <= value <= hi:
        raise _fail(path, key, f"{value} is out of range", f"use a number {lo}..{hi}")
    return value


def _retention(path: Path, key: str, raw: Any, *, top: bool) -> tuple[RetentionRule, int | None]:
    """A `retention:` mapping: the rule, and (top level only) the purge interval."""
    allowed = (*_RETENTION_KEYS, "interval_seconds") if top else _RETENTION_KEYS
    example = "write e.g. 'retention: {max_age_days: 30, keep: 1000}'"
    if not isinstance(raw, dict):
        raise _fail(path, key, f"expected a mapping, got {raw!r}", example)
    unknown = set(raw) - set(allowed)
    if unknown:
        raise _fail(path, key, f"unknown keys {sorted(unknown)}", f"allowed: {', '.join(allowed)}")
    age = raw.get("max_age_days")
    if age is not None and (
        isinstance(age, bool)
        or not isinstance(age, int | float)
        or not 0 <= age <= MAX_RETENTION_DAYS
    ):
        raise _fail(
            path,
            f"{key}.max_age_days",
            f"expected a number of days, got {age!r}",
            f"use 0..{MAX_RETENTION_DAYS} (fractions allowed), or omit it for no age limit",
        )
    keep = raw.get("keep")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 0):
        raise _fail(
            path,
            f"{key}.keep",
            f"expected a whole number of calcs, got {keep!r}",
            "use 0 or more (final calcs kept per site, newest first), or omit it for no limit",
        )
    interval = raw.get("interval_seconds")
    if interval is not None:
        interval = _int(path, f"{key}.interval_seconds", interval)
        if interval < 1:
            raise _fail(path, f"{key}.interval_seconds", "must be at least 1", "use e.g. 3600")
    rule = RetentionRule(None if age is None else float(age) * 86400, keep)
    return rule, interval


def _sites(path: Path, raw: Any) -> dict[str, SiteConfig]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(path, "sites", "expected a mapping of site name → settings", "see docs/api.md")
    sites: dict[str, SiteConfig] = {}
    for name, body in raw.items():
        key = f"sites.{name}"
        if not isinstance(name, str) or not SITE_RE.match(name):
            raise _fail(path, key, "bad site name", "use letters, digits, '.', '_' or '-'")
        if not isinstance(body, dict):
            raise _fail(path, key, "expected a mapping", "write 'commands: [name, ...]' under it")
        unknown = set(body) - {"commands", "lease_seconds", "legacy_lease", "retention"}
        if unknown:
            raise _fail(
                path,
                key,
                f"unknown keys {sorted(unknown)}",
                "allowed: commands, lease_seconds, legacy_lease, retention",
            )
        commands = body.get("commands", [])
        if not isinstance(commands, list) or not all(
            isinstance(c, str) and COMMAND_RE.match(c) for c in commands
        ):
            raise _fail(
                path,
                f"{key}.commands",
                f"expected a list of command names, got {commands!r}",
                "write e.g. 'commands: [sample, solver]'",
            )
        lease, legacy = body.get("lease_seconds"), body.get("legacy_lease")
        sites[name] = SiteConfig(
            name=name,
            commands=tuple(commands),
            lease_seconds=None if lease is None else _int(path, f"{key}.lease_seconds", lease),
            legacy_lease=None if legacy is None else _int(path, f"{key}.legacy_lease", legacy),
            retention=None
            if body.get("retention") is None
            else _retention(path, f"{key}.retention", body["retention"], top=False)[0],
        )
    return sites


def _metrics_listen(path: Path, value: Any) -> tuple[str, int]:
    fix = "write e.g. 'metrics_listen: 127.0.0.1:9464' (a loopback address and a port)"
    if not isinstance(value, str):
        raise _fail(path, "metrics_listen", f"expected HOST:PORT, got {value!r}", fix)
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise _fail(path, "metrics_listen", f"expected HOST:PORT, got {value!r}", fix)
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise _fail(
            path,
            "metrics_listen",
            f"{host!r} is not a loopback address: this listener needs no token",
            "use 127.0.0.1 or ::1, or scrape /metrics on the API port with an admin token",
        )
    return host, int(port)


def parse_config(raw: Any, path: Path) -> ServerConfig:
    """Validate a parsed YAML document; raise ConfigError naming the file and key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level; see docs/api.md")
    for key in raw:
        if key not in _KNOWN:
            close = difflib.get_close_matches(str(key), sorted(_KNOWN), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys: {sorted(_KNOWN)}"
            raise _fail(path, str(key), "unknown key", hint)
    for key in ("data_dir", "users_file"):
        if key not in raw:
            raise _fail(path, key, "missing", f"add '{key}: /some/path'")
    kwargs: dict[str, Any] = {
        "data_dir": _path(path, "data_dir", raw["data_dir"]),
        "users_file": _path(path, "users_file", raw["users_file"]),
        "sites": _sites(path, raw.get("sites")),
    }
    if "log_file" in raw and raw["log_file"] is not None:
        kwargs["log_file"] = _path(path, "log_file", raw["log_file"])
    if raw.get("metrics_listen") is not None:
        kwargs["metrics_listen"] = _metrics_listen(path, raw["metrics_listen"])
    if raw.get("mint_ini") is not None:
        kwargs["mint_ini"] = _path(path, "mint_ini", raw["mint_ini"])
    if "listen" in raw:
        if not isinstance(raw["listen"], str) or not raw["listen"]:
            raise _fail(
                path,
                "listen",
                f"expected a host address, got {raw['listen']!r}",
                "use e.g. 127.0.0.1 or 0.0.0.0",
            )
        kwargs["listen"] = raw["listen"]
    for key in _INT_KEYS:
        if key in raw:
            kwargs[key] = _int(path, key, raw[key])
    if "reaper_seconds" in raw:
        value = raw["reaper_seconds"]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise _fail(
                path, "reaper_seconds", f"expected a positive number, got {value!r}", "use e.g. 5"
            )
        kwargs["reaper_seconds"] = float(value)
    if raw.get("retention") is not None:
        rule, interval = _retention(path, "retention", raw["retention"], top=True)
        kwargs["retention"] = rule
        if interval is not None:
            kwargs["retention_interval_seconds"] = interval
    tls = raw.get("tls")
    if tls is not None:
        if not isinstance(tls, dict) or set(tls) != {"cert", "key"}:
            raise _fail(
                path,
                "tls",
                "expected a mapping with exactly 'cert' and 'key'",
                "write 'tls: {cert: CERT.pem, key: KEY.pem}' or omit it",
            )
        kwargs["tls"] = TlsConfig(
            _path(path, "tls.cert", tls["cert"]), _path(path, "tls.key", tls["key"])
        )
    return ServerConfig(**kwargs)


def load_config(path: Path) -> ServerConfig:
    """Read and validate the config file at `path`."""
    return _merge_ini(parse_config(load_yaml_config(path, "server config"), path))


def _merge_ini(conf: ServerConfig) -> ServerConfig:
    """Add the sites and commands of `mint_ini` (a YAML site of the same name keeps its
    settings and gains the ini's commands)."""
    if conf.mint_ini is None:
        return conf
    from webapi.mint.ini import load_ini  # the original protocol's package, only when used

    sites = dict(conf.sites)
    for name, commands in load_ini(conf.mint_ini).sites.items():
        if not SITE_RE.match(name):
            raise ConfigError(f"{conf.mint_ini}: site id {name!r} is not usable as a site name")
        for command in commands:
            if not COMMAND_RE.match(command):
                raise ConfigError(f"{conf.mint_ini}: [{name}] command {command!r} is not allowed")
        old = sites.get(name)
        if old is None:
            sites[name] = SiteConfig(name=name, commands=commands)
        else:
            merged = old.commands + tuple(c for c in commands if c not in old.commands)
            sites[name] = dataclasses.replace(old, commands=merged)
    return dataclasses.replace(conf, sites=sites)


Signature = tuple[int, ...]


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ConfigSource:
    """The current config, re-read when the file's mtime/size/inode change.

    A bad edit keeps the last good config and logs one warning per bad version of the file, so an
    operator's typo never takes the server down.
    """

    def __init__(self, path: Path, initial: ServerConfig | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._config = initial if initial is not None else load_config(path)
        self._sig = self._signature()
        self._bad_sig: Signature | None = None

    @classmethod
    def fixed(cls, config: ServerConfig) -> ConfigSource:
        """A source that never re-reads (for tests and embedding)."""
        source = cls.__new__(cls)
        source.path = Path("/nonexistent")
        source._lock = threading.Lock()
        source._config = config
        source._sig = None
        source._bad_sig = None
        return source

    def _signature(self) -> Signature | None:
        """The YAML file's (mtime, size, inode), plus the ini's when one is configured."""
        sig = _file_signature(self.path)
        ini = self._config.mint_ini
        if sig is None or ini is None:
            return sig
        return (*sig, *(_file_signature(ini) or (0, 0, 0)))

    def get(self) -> ServerConfig:
        """Return the newest valid config (re-reading the file only if it changed)."""
        with self._lock:
            if self._sig is None and self.path == Path("/nonexistent"):
                return self._config
            sig = self._signature()
            if sig == self._sig or (sig is not None and sig == self._bad_sig):
                return self._config
            try:
                config = load_config(self.path)
            except ConfigError as exc:
                if sig != self._bad_sig:
                    log.warning("config: keeping the last good configuration: %s", exc)
                self._bad_sig = sig
                return self._config
            self._config, self._sig, self._bad_sig = config, sig, None
            log.info("config: reloaded %s", self.path)
            return config

    @property
    def current(self) -> ServerConfig:
        """The last good config without checking the file."""
        return self._config


def site_policy(config: ConfigSource) -> Callable[[str], SitePolicy]:
    """A `policy(site)` for the store that follows the current config."""

    def policy(site: str) -> SitePolicy:
        conf = config.current
        return SitePolicy(
            conf.site_lease_seconds(site),
            conf.max_attempts,
            conf.queued_expiry_seconds,
            conf.registered_expiry_seconds,
        )

    return policy
