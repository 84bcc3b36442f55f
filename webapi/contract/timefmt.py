"""RFC 3339 UTC timestamps to and from epoch seconds."""

from __future__ import annotations

from datetime import UTC, datetime


def format_ts(ts: float) -> str:
    """Epoch seconds → '2024-05-01T12:00:00.123456Z'."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(text: str) -> float:
    """RFC 3339 (with 'Z' or an offset) → epoch seconds; ValueError if malformed."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
