"""Status page sessions: kept server-side in memory, each with its own CSRF token and expiry."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

IDLE_SECONDS = 30 * 60  # a session nobody used for this long is gone
MAX_AGE_SECONDS = 12 * 3600  # and every session ends after this long, used or not
MAX_SESSIONS = 10_000  # past this the oldest go first: logins cannot fill the server's memory


@dataclass(frozen=True, slots=True)
class Session:
    """Who is logged in on one browser, the CSRF token of its forms, and its times."""

    user: str
    admin: bool
    csrf: str
    created: float
    last_used: float
    credential: str = ""  # the token id or password id it logged in with (UserStore.current)


def _key(session_id: str) -> str:
    # Only a hash of the cookie value is kept: a memory dump does not hand out live sessions.
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


class SessionStore:
    """Sessions by (hashed) cookie value; thread-safe; expiry is checked on every use."""

    def __init__(
        self,
        *,
        idle_seconds: float = IDLE_SECONDS,
        max_age_seconds: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def create(self, user: str, admin: bool, credential: str = "") -> tuple[str, Session]:
        """A new session: (the cookie value, shown to the browser only, and the session)."""
        now = self._clock()
        session_id = secrets.token_urlsafe(32)
        session = Session(user, admin, secrets.token_urlsafe(32), now, now, credential)
        with self._lock:
            self._drop_expired(now)
            while len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions, key=lambda k: self._sessions[k].created)
                del self._sessions[oldest]
            self._sessions[_key(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of this cookie value (its idle time restarts), or None."""
        if not session_id:
            return None
        now = self._clock()
        key = _key(session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if self._expired(session, now):
                del self._sessions[key]
                return None
            session = replace(session, last_used=now)
            self._sessions[key] = session
            return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._sessions.pop(_key(session_id), None)

    def _expired(self, session: Session, now: float) -> bool:
        return (
            now - session.last_used >= self.idle_seconds
            or now - session.created >= self.max_age_seconds
        )

    def _drop_expired(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[key]


def csrf_ok(session: Session, given: str | None) -> bool:
    """Whether a form's CSRF token is this session's (compared in constant time)."""
    if not given:
        return False
    return hmac.compare_digest(session.csrf.encode("utf-8"), given.encode("utf-8", "replace"))
