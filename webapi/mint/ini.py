"""Read an original `mi_distributed_computing_assist.ini` and turn it into our YAML config."""

from __future__ import annotations

import configparser
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from webapi.errors import ConfigError
from webapi.mint.codec.wire import DEFAULT_PORT


@dataclass(frozen=True, slots=True)
class IniConfig:
    """What the original server took from its ini: where to listen and which site runs what."""

    listen: str | None = None
    port: int | None = None
    loglevel: str | None = None
    sites: dict[str, tuple[str, ...]] = field(default_factory=dict)


def parse_ini(text: str, source: Path) -> IniConfig:
    """Parse the ini text; raise ConfigError naming the file and the section at fault."""
    # No interpolation: a '%' in a command must stay a '%'.
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(source))
    except configparser.Error as exc:
        raise ConfigError(f"{source}: not a valid ini file: {exc}") from None
    listen = parser.get("Server", "ipaddress", fallback=None) or None
    port_raw = parser.get("Server", "portnumber", fallback=None)
    port = None
    if port_raw:
        if not port_raw.strip().isdigit() or not 0 < int(port_raw) < 65536:
            raise ConfigError(f"{source}: [Server] portnumber {port_raw!r} is not a port number")
        port = int(port_raw)
    if not parser.has_option("RemoteSites", "remote_site_ids"):
        raise ConfigError(f"{source}: missing [RemoteSites] remote_site_ids = <site ids>")
    sites: dict[str, tuple[str, ...]] = {}
    for site in parser.get("RemoteSites", "remote_site_ids").split():
        # A listed site without its own section accepts no command (as in the original).
        commands = parser.get(site, "commands", fallback="").split()
        sites[site] = tuple(dict.fromkeys(commands))
    return IniConfig(
        listen=listen,
        port=port,
        loglevel=parser.get("Server", "loglevel", fallback=None) or None,
        sites=sites,
    )


def load_ini(path: Path) -> IniConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the ini file: {exc}") from None
    return parse_ini(text, path)


def ini_to_yaml(ini: IniConfig, source: Path) -> str:
    """Our server config equivalent to the ini (paths are placeholders to adjust)."""
    doc = {
        "listen": ini.listen or "0.0.0.0",
        "port": ini.port or DEFAULT_PORT,
        "tls": {"cert": "/etc/extcomp-api/cert.pem", "key": "/etc/extcomp-api/key.pem"},
        "data_dir": "/var/lib/extcomp-api",
        "users_file": "/etc/extcomp-api/users.yml",
        "legacy_lease": 0,
        "sites": {name: {"commands": list(cmds)} for name, cmds in ini.sites.items()},
    }
    head = (
        f"# extcomp-api server config converted from {source}\n"
        "# Adjust tls, data_dir and users_file; add users with 'extcomp-api users add NAME "
        "--token-stdin'.\n"
        "# Or keep the ini and point to it instead of listing sites: mint_ini: PATH\n"
    )
    if ini.loglevel:
        head += f"# The ini's loglevel {ini.loglevel!r} has no equivalent: use 'serve --verbose'.\n"
    body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return head + body
