"""Users, passwords and API tokens kept in one YAML file, with secrets stored only as hashes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webapi.contract.timefmt import format_ts, parse_ts
from webapi.errors import BadRequest, ConfigError, NotFound, Unauthorized
from webapi.fs import FileLock, read_yaml, write_yaml_atomic

USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TOKEN_PREFIX = "xc_"
MINT_TOKEN_RE = re.compile(r"^[0-9a-fA-F]{64}$")  # a MInt user's static API token
DEFAULT_LOGIN_DAYS = 30
# scrypt parameters (RFC 7914 "interactive" level): ~16 MiB and a few tens of ms per check.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 1 << 14, 8, 1


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request's token belongs to."""

    user: str
    admin: bool
    token_id: str


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    created: str
    expires: str | None
    label: str


@dataclass(frozen=True, slots=True)
class UserInfo:
    name: str
    admin: bool
    has_password: bool
    tokens: tuple[TokenInfo, ...]


@dataclass(frozen=True, slots=True)
class NewToken:
    """A freshly made token: `token` is the only copy of the secret, show it once."""

    user: str
    id: str
    token: str
    expires: str | None


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def check_imported_token(token: str) -> None:
    if not MINT_TOKEN_RE.match(token):
        raise BadRequest("an imported token must be a MInt API token: 64 hexadecimal digits")


def _check_unique(users: dict[str, Any], digest: str) -> None:
    # One token must name one user: refuse a second copy (never say whose it is).
    if any(t.get("hash") == digest for u in users.values() for t in (u or {}).get("tokens") or []):
        raise BadRequest("this token is already registered; tokens must be unique")


def _password_id(stored: str) -> str:
    """Names one stored password (it changes when the password does) without revealing it."""
    return "password:" + hashlib.sha256(stored.encode("utf-8")).hexdigest()[:16]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# A dummy hash so a login for an unknown user costs as much as one for a known user.
_DUMMY_HASH = (
    "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
)


class UserStore:
    """The users file: read on change (mtime/size), written atomically under a file lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = FileLock(path.with_name(path.name + ".lock"))
        self._cache_lock = threading.Lock()
        self._cache_sig: tuple[int, int, int] | None = None
        self._cache: dict[str, Any] = {}

    # -- file access --------------------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        try:
            doc = read_yaml(self.path)
        except FileNotFoundError:
            return {}
        except Exception as exc:  # YAML errors and OS errors alike: say which file is broken
            raise ConfigError(f"{self.path}: cannot read the users file: {exc}") from None
        if doc is None:
            return {}
        if not isinstance(doc, dict) or not isinstance(doc.get("users", {}), dict):
            raise ConfigError(f"{self.path}: expected a mapping 'users: {{name: {{...}}}}'")
        users: dict[str, Any] = doc.get("users") or {}
        return users

    def _users(self) -> dict[str, Any]:
        """The users mapping, cached until the file changes."""
        try:
            st = os.stat(self.path)
            sig: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            sig = None
        with self._cache_lock:
            if sig is None or sig != self._cache_sig:
                self._cache = self._read()
                self._cache_sig = sig
            return self._cache

    def _write(self, users: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_yaml_atomic(self.path, {"users": users}, mode=0o600)

    # -- requests -----------------------------------------------------------------------------
    def authenticate(self, header: str | None) -> Principal:
        """Map an `Authorization: Bearer …` header to a Principal, or raise Unauthorized."""
        if not header:
            raise Unauthorized("missing 'Authorization: Bearer <token>' header")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        want = token_hash(token)
        now = time.time()
        found: Principal | None = None
        expired = False
        for name, user in self._users().items():
            for tok in (user or {}).get("tokens") or []:
                # Compare every hash in constant time; do not stop early on a match.
                if hmac.compare_digest(str(tok.get("hash", "")), want):
                    exp = tok.get("expires")
                    if exp and parse_ts(str(exp)) <= now:
                        expired = True
                    else:
                        found = Principal(str(name), bool(user.get("admin")), str(tok.get("id")))
        if found is not None:
            return found
        if expired:
            raise Unauthorized("the token has expired: log in again or ask an admin for a new one")
        raise Unauthorized("unknown token: check the token or log in again")

    def check_password(self, user: str, password: str) -> Principal:
        """The Principal of `user` if `password` is theirs, else Unauthorized (which part was
        wrong is not said, and an unknown user costs as much as a known one)."""
        record = self._users().get(user) if isinstance(user, str) else None
        stored = (record or {}).get("password")
        ok = verify_password(str(password), stored if stored else _DUMMY_HASH)
        if not (record and stored and ok):
            raise Unauthorized("user name or password is wrong")
        return Principal(user, bool(record.get("admin")), _password_id(str(stored)))

    def current(self, user: str, credential: str) -> Principal | None:
        """`user` as the users file says now, if the credential they logged in with (a token id,
        or the password's id from check_password) still holds; None once it is revoked, expired
        or changed, or the user is gone. Long-lived sessions check this on every use."""
        record = self._users().get(user)
        if not isinstance(record, dict):
            return None
        admin = bool(record.get("admin"))
        stored = record.get("password")
        if stored and hmac.compare_digest(_password_id(str(stored)), credential):
            return Principal(user, admin, credential)
        now = time.time()
        for tok in record.get("tokens") or []:
            if str(tok.get("id")) == credential:
                exp = tok.get("expires")
                if exp and parse_ts(str(exp)) <= now:
                    return None
                return Principal(user, admin, credential)
        return None

    def login(self, user: str, password: str, days: int = DEFAULT_LOGIN_DAYS) -> NewToken:
        """Check a password and return a new token with an expiry."""
        self.check_password(user, password)
        return self.new_token(user, label="login", expires_days=days)

    # -- administration -----------------------------------------------------------------------
    def add_user(
        self,
        name: str,
        *,
        admin: bool = False,
        password: str | None = None,
        token: str | None = None,
    ) -> NewToken:
        """Add a user with a new token, or with `token` (an existing MInt API token) if given."""
        if token is not None:
            check_imported_token(token)
        if not USER_RE.match(name):
            raise BadRequest(f"bad user name {name!r}: use letters, digits, '.', '_' or '-'")
        with self._lock():
            users = self._read()
            if name in users:
                raise BadRequest(f"user {name!r} already exists; use 'users token' for a new token")
            if token is not None:
                _check_unique(users, token_hash(token))  # before the user exists
            users[name] = {"admin": admin, "tokens": []}
            if password is not None:
                users[name]["password"] = hash_password(password)
            self._write(users)
        return self.new_token(name, label="initial" if token is None else "mint", token=token)

    def set_password(self, name: str, password: str) -> None:
        with self._lock():
            users = self._read()
            if name not in users:
                raise NotFound(f"no user {name!r}")
            users[name]["password"] = hash_password(password)
            self._write(users)

    def new_token(
        self,
        name: str,
        *,
        label: str = "",
        expires_days: float | None = None,
        token: str | None = None,
    ) -> NewToken:
        """A new token for `name`; `token` imports an existing secret instead of making one."""
        if token is None:
            token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        else:
            check_imported_token(token)
        token_id = "t-" + secrets.token_hex(4)
        now = time.time()
        expires = format_ts(now + expires_days * 86400) if expires_days else None
        with self._lock():
            users = self._read()
            if name not in users:
                raise NotFound(f"no user {name!r}")
            digest = token_hash(token)
            _check_unique(users, digest)
            tokens = users[name].setdefault("tokens", []) or []
            # Drop tokens that expired long ago so the file does not grow forever with logins.
            tokens = [t for t in tokens if not t.get("expires") or parse_ts(t["expires"]) > now]
            tokens.append(
                {
                    "id": token_id,
                    "hash": digest,
                    "created": format_ts(now),
                    "expires": expires,
                    "label": label,
                }
            )
            users[name]["tokens"] = tokens
            self._write(users)
        return NewToken(name, token_id, token, expires)

    def revoke(self, name: str, token_id: str | None) -> int:
        """Remove one token (or all when token_id is None); return how many were removed."""
        with self._lock():
            users = self._read()
            if name not in users:
                raise NotFound(f"no user {name!r}")
            tokens = users[name].get("tokens") or []
            keep = [] if token_id is None else [t for t in tokens if t.get("id") != token_id]
            removed = len(tokens) - len(keep)
            if token_id is not None and removed == 0:
                raise NotFound(f"user {name!r} has no token {token_id!r}")
            users[name]["tokens"] = keep
            self._write(users)
        return removed

    def list_users(self) -> list[UserInfo]:
        out = []
        for name, user in sorted(self._users().items()):
            user = user or {}
            toks = tuple(
                TokenInfo(
                    str(t["id"]), str(t["created"]), t.get("expires"), str(t.get("label", ""))
                )
                for t in user.get("tokens") or []
            )
            out.append(
                UserInfo(str(name), bool(user.get("admin")), bool(user.get("password")), toks)
            )
        return out
