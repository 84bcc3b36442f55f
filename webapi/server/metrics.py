"""The API server's Prometheus metrics: one private registry per app, fed by the store's events,
a WSGI wrapper that counts requests by route template, and a scrape-time view of the store."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from webapi.calcs import Calc
from webapi.contract.calc import CalcState
from webapi.server.config import ConfigSource
from webapi.store.base import JobStore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Claim answers range from an instant (a calc was waiting) to the long-poll maximum (50 s);
# pickups from seconds to a day (a site whose poller was down).
CLAIM_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 20, 30, 60)
PICKUP_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 86400)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
UNMATCHED = "(unmatched)"  # the route label of requests no route matched (404s of any path)

StartResponse = Callable[..., Any]
Wsgi = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class ServerMetrics:
    """The metrics of one app. Every name starts with `extcomp_`; docs/operations.md lists them."""

    def __init__(self, store: JobStore, config: ConfigSource) -> None:
        # A private registry: tests build many apps in one process, and the default global one
        # would refuse a second registration of the same names.
        self.registry = CollectorRegistry()
        reg = self.registry
        self.requests = Counter(
            "extcomp_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
            registry=reg,
        )
        self.request_seconds = Histogram(
            "extcomp_http_request_duration_seconds",
            "Time from the request to the end of its answer, by method and route template.",
            ("method", "route"),
            registry=reg,
        )
        self.bytes_in = Counter(
            "extcomp_http_request_bytes",
            "Request body bytes declared by Content-Length, by route template.",
            ("route",),
            registry=reg,
        )
        self.bytes_out = Counter(
            "extcomp_http_response_bytes",
            "Response body bytes sent, by route template.",
            ("route",),
            registry=reg,
        )
        self.claim_seconds = Histogram(
            "extcomp_claim_duration_seconds",
            "How long a poller's claim call took to answer (long-poll wait included), by site "
            "and outcome (claimed or empty).",
            ("site", "outcome"),
            buckets=CLAIM_BUCKETS,
            registry=reg,
        )
        self.pickup_seconds = Histogram(
            "extcomp_pickup_seconds",
            "Time from a calc entering the queue to a poller claiming it, by site.",
            ("site",),
            buckets=PICKUP_BUCKETS,
            registry=reg,
        )
        self.lease_expiries = Counter(
            "extcomp_lease_expiries",
            "Leases that ran out (the poller stopped heartbeating), by site and what followed "
            "(requeued or failed).",
            ("site", "then"),
            registry=reg,
        )
        self.requeues = Counter(
            "extcomp_requeues",
            "Calcs sent back to the queue, by site and cause (admin, unclaim, lease).",
            ("site", "cause"),
            registry=reg,
        )
        reg.register(_StoreCollector(store, config))
        store.subscribe(self)

    # -- StoreEvents ---------------------------------------------------------------
    def claim_answered(self, site: str, seconds: float, claimed: Calc | None) -> None:
        outcome = "claimed" if claimed is not None else "empty"
        self.claim_seconds.labels(site, outcome).observe(seconds)
        if claimed is not None and claimed.queued_at is not None:
            self.pickup_seconds.labels(site).observe(max(0.0, time.time() - claimed.queued_at))

    def lease_expired(self, site: str, requeued: bool) -> None:
        self.lease_expiries.labels(site, "requeued" if requeued else "failed").inc()
        if requeued:
            self.requeues.labels(site, "lease").inc()

    def requeued(self, site: str, cause: str) -> None:
        self.requeues.labels(site, cause).inc()

    # -- exposition ----------------------------------------------------------------
    def exposition(self) -> bytes:
        """The text format a Prometheus scrape reads."""
        return generate_latest(self.registry)

    def wrap(self, app: Wsgi) -> Wsgi:
        """`app` as a WSGI callable that counts each request when its answer has been sent."""

        def counted(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            started = time.monotonic()
            seen: dict[str, str] = {}

            def start(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
                seen["status"] = status.split(" ", 1)[0]
                return start_response(status, headers, *exc)

            body = app(environ, start)
            return _Counted(self, environ, body, seen, started)

        return counted

    def _done(self, environ: dict[str, Any], status: str, sent: int, started: float) -> None:
        route_obj = environ.get("bottle.route")
        route = str(getattr(route_obj, "rule", UNMATCHED)) if route_obj is not None else UNMATCHED
        method = str(environ.get("REQUEST_METHOD", ""))
        method = method if method in _METHODS else "other"
        self.requests.labels(method, route, status).inc()
        self.request_seconds.labels(method, route).observe(time.monotonic() - started)
        try:
            declared = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > 0 and status.startswith("2"):  # a refused body was never taken in
            self.bytes_in.labels(route).inc(declared)
        if sent:
            self.bytes_out.labels(route).inc(sent)


class _Counted:
    """An answer's body, passed through chunk by chunk (streamed downloads stay streamed);
    the request is counted when the server closes it, i.e. once the answer has been sent."""

    def __init__(
        self,
        metrics: ServerMetrics,
        environ: dict[str, Any],
        body: Iterable[bytes],
        seen: dict[str, str],
        started: float,
    ) -> None:
        self.metrics, self.environ, self.body = metrics, environ, body
        self.seen, self.started, self.sent = seen, started, 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.body:
            self.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            status = self.seen.get("status", "000")
            self.metrics._done(self.environ, status, self.sent, self.started)


class _StoreCollector(Collector):
    """Computed at each scrape from the store's census (cheap: a stat per calc record, a parse
    only of records that changed) and its poller registry."""

    def __init__(self, store: JobStore, config: ConfigSource) -> None:
        self.store, self.config = store, config

    def collect(self) -> Iterator[Metric]:
        census = self.store.census()
        sites = set(self.config.current.sites) | {site for site, _ in census.calcs}
        calcs = GaugeMetricFamily(
            "extcomp_calcs", "Calcs in the store, by site and state.", labels=("site", "state")
        )
        for site in sorted(sites):
            for state in CalcState:  # every state of a known site, zeros included
                calcs.add_metric((site, str(state)), census.calcs.get((site, str(state)), 0))
        yield calcs
        oldest = GaugeMetricFamily(
            "extcomp_oldest_queued_timestamp_seconds",
            "When the longest-waiting queued calc of a site was queued (absent: none waits).",
            labels=("site",),
        )
        for site, at in sorted(census.oldest_queued.items()):
            oldest.add_metric((site,), at)
        yield oldest
        seen = GaugeMetricFamily(
            "extcomp_poller_last_seen_timestamp_seconds",
            "When a poller of the site last asked for work or heartbeated (absent: never).",
            labels=("site",),
        )
        for site in sorted(sites):
            last = self.store.poller_seen(site)
            if last is not None:
                seen.add_metric((site,), last[1])
        yield seen
