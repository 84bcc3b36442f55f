"""Fixed names of the original protocol: the route prefix, the port, the two log names, and the
rules for a file name and a base URL as the original clients used them."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from webapi.contract.names import check_name
from webapi.errors import BadRequest

PREFIX = "/mi-distcomp-api/"
DEFAULT_PORT = 50443
# The two result names the original workflow client always asks for: stdout and stderr.
JP_STDOUT, JP_STDERR = "計算標準出力.txt", "計算標準エラー出力.txt"
LOG_NAMES = (JP_STDOUT, JP_STDERR)
# calc-request's answer when nothing waits (with HTTP 200 and this string as the `code`).
NOTHING_TO_DO = "0300"


def bare_name(name: object, what: str) -> str:
    """A file name the original protocol carries: no directory part, safe on any file system.

    The original clients write these names straight into a directory; ValueError says why not.
    """
    if not isinstance(name, str) or "/" in name:
        raise ValueError(f"{what}: file name {name!r} must be a bare name without '/'")
    try:
        return check_name(name)
    except BadRequest as exc:
        raise ValueError(f"{what}: {exc.message}") from None


def with_port(url: str, port: int = DEFAULT_PORT) -> str:
    """Append `:port` to a base URL that names none, as the original clients did."""
    parts = urlsplit(url.rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r}: expected a base URL such as https://host")
    if parts.port is not None:
        return urlunsplit(parts)
    return urlunsplit(parts._replace(netloc=f"{parts.netloc}:{port}"))
