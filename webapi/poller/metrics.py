"""The poller's own Prometheus metrics, without any package the poller host lacks: a
node-exporter textfile rewritten atomically, and/or a small HTTP listener on loopback."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from webapi.fs import write_atomic

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_FAMILIES = (
    ("extcomp_poller_calcs_total", "counter", "Calcs whose program ended here, by command and "
     "exit code."),
    ("extcomp_poller_input_bytes_total", "counter", "Input bytes fetched for calcs."),
    ("extcomp_poller_result_bytes_total", "counter", "Result bytes reported for delivery."),
    ("extcomp_poller_polls_total", "counter", "Claims answered by the server, by outcome "
     "(claimed or empty)."),
    ("extcomp_poller_last_successful_poll_timestamp_seconds", "gauge", "When the server last "
     "answered a claim (epoch seconds)."),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class MetricsOutput:
    """Where the poller's metrics go: a textfile path, a port on `listen`, or both."""

    textfile: Path | None = None
    port: int | None = None
    listen: str = "127.0.0.1"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class PollerMetrics:
    """Counters the loop bumps; rendered in the text exposition format on every change (to
    the textfile) and on every scrape (of the listener)."""

    def __init__(self, site: str, poller: str, output: MetricsOutput) -> None:
        self.base = f'site="{_label(site)}",poller="{_label(poller)}"'
        self.output = output
        self._lock = threading.Lock()
        self._samples: dict[tuple[str, str], float] = {}  # (name, extra labels) -> value
        self._server: ThreadingHTTPServer | None = None

    # -- what the loop reports ---------------------------------------------------------------
    def polled(self, claimed: bool) -> None:
        self._add("extcomp_poller_polls_total", f'outcome="{"claimed" if claimed else "empty"}"', 1)
        self._add(
            "extcomp_poller_last_successful_poll_timestamp_seconds", "", time.time(), absolute=True
        )
        self.flush()

    def ran(self, command: str, exit_code: int) -> None:
        labels = f'command="{_label(command)}",exit_code="{exit_code}"'
        self._add("extcomp_poller_calcs_total", labels, 1)
        self.flush()

    def moved(self, inputs: int = 0, results: int = 0) -> None:
        if inputs:
            self._add("extcomp_poller_input_bytes_total", "", inputs)
        if results:
            self._add("extcomp_poller_result_bytes_total", "", results)
        self.flush()

    def _add(self, name: str, labels: str, amount: float, *, absolute: bool = False) -> None:
        with self._lock:
            key = (name, labels)
            self._samples[key] = amount if absolute else self._samples.get(key, 0) + amount

    # -- exposition --------------------------------------------------------------------------
    def render(self) -> str:
        with self._lock:
            samples = dict(self._samples)
        lines: list[str] = []
        for name, kind, text in _FAMILIES:
            mine = sorted((labels, v) for (n, labels), v in samples.items() if n == name)
            if not mine:
                continue
            family = name.removesuffix("_total") if kind == "counter" else name
            lines += [f"# HELP {family} {text}", f"# TYPE {family} {kind}"]
            for labels, value in mine:
                all_labels = self.base + ("," + labels if labels else "")
                lines.append(f"{name}{{{all_labels}}} {value:.17g}")
        return "\n".join(lines) + "\n"

    def flush(self) -> None:
        """Rewrite the textfile (temp file + rename: a scrape never reads half of it); a
        failure is logged, never the calc's failure."""
        if self.output.textfile is None:
            return
        try:
            write_atomic(self.output.textfile, self.render().encode("utf-8"))
        except OSError as exc:
            log.warning("cannot write the metrics textfile %s: %s", self.output.textfile, exc)

    def start(self) -> None:
        """Write the first textfile and open the listener, if asked for."""
        self.flush()
        if self.output.port is None:
            return
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = metrics.render().encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes every few seconds would drown the poller's own log

        self._server = ThreadingHTTPServer((self.output.listen, self.output.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, name="extcomp-metrics", daemon=True
        ).start()
        log.info("metrics on http://%s:%d/metrics", self.output.listen, self.port)

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server is not None else 0

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
