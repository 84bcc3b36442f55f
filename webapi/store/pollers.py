"""Which pollers each site has seen, and of which users: `pollers/<site>.yaml`, written now and
then so it survives restarts without a write per request."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from webapi.fs import read_yaml, write_yaml_atomic

PERSIST_EVERY_S = 10.0
AGENT_MAX = 120  # a User-Agent is outside data: keep only a short, printable prefix


@dataclass(frozen=True, slots=True)
class PollerSighting:
    """One poller of a site as last seen: its id, its token's user, when, its User-Agent, and the
    command names its last claim listed (None: it did not say, so it takes any calc)."""

    poller: str
    user: str | None
    seen: float
    agent: str | None
    commands: tuple[str, ...] | None = None


class Keep:
    """The `commands` default of `note`: keep the list the poller's last claim gave."""


KEEP = Keep()


def _clean_agent(agent: str | None) -> str | None:
    if agent is None:
        return None
    text = "".join(ch for ch in agent[:AGENT_MAX] if ch.isprintable())
    return text or None


class PollerRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._last: dict[str, tuple[str, float]] = {}
        self._users: dict[str, dict[str, float]] = {}
        self._written: dict[str, float] = {}
        # Every poller each site has seen, by poller id (memory only: a hint for the status page).
        self._sightings: dict[str, dict[str, PollerSighting]] = {}
        for path in root.glob("*.yaml"):
            with contextlib.suppress(Exception):  # a damaged file must not stop the server
                doc = read_yaml(path)
                self._last[path.stem] = (str(doc["poller"]), float(doc["seen"]))
                users = doc.get("users") or {}
                self._users[path.stem] = {str(u): float(t) for u, t in users.items()}

    def note(
        self,
        site: str,
        poller: str,
        user: str | None,
        agent: str | None = None,
        commands: tuple[str, ...] | Keep | None = KEEP,
    ) -> None:
        """Record a sign of life; `commands` comes with a claim (heartbeats keep the last list)."""
        now = time.time()
        self._last[site] = (poller, now)
        seen = self._sightings.setdefault(site, {})
        before = seen.get(poller)
        agent = _clean_agent(agent) or (before.agent if before is not None else None)
        if isinstance(commands, Keep):
            commands = before.commands if before is not None else None
        seen[poller] = PollerSighting(poller, user, now, agent, commands)
        users = self._users.setdefault(site, {})
        new_user = user is not None and user not in users
        if user is not None:
            users[user] = now
        if new_user or now - self._written.get(site, 0.0) > PERSIST_EVERY_S:
            self._written[site] = now
            doc = {"poller": poller, "seen": now, "users": dict(users)}
            with contextlib.suppress(OSError):  # only a hint for humans; never fail a request
                write_yaml_atomic(self.root / f"{site}.yaml", doc)

    def last(self, site: str) -> tuple[str, float] | None:
        """(poller id, when) of the last poller seen for `site`."""
        return self._last.get(site)

    def users(self, site: str) -> dict[str, float]:
        """The users whose pollers have served `site`, with when each was last seen."""
        return dict(self._users.get(site, {}))

    def sightings(self, site: str) -> list[PollerSighting]:
        """The pollers seen for `site` since the server started, most recent first."""
        return sorted(self._sightings.get(site, {}).values(), key=lambda s: -s.seen)
