"""Run the API app on cheroot (TLS optional) with a lease reaper, stopping cleanly on signals."""

from __future__ import annotations

import errno
import logging
import os
import pwd
import signal
import ssl
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from cheroot import makefile, server, wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from webapi.errors import ConfigError
from webapi.server.app import create_app
from webapi.server.auth import UserStore
from webapi.server.config import ConfigSource, site_policy
from webapi.server.metrics import CONTENT_TYPE, ServerMetrics
from webapi.server.routing import MAX_FILE_BYTES
from webapi.server.watchdog import Watchdog
from webapi.store.yaml_store import YamlJobStore

log = logging.getLogger(__name__)


class _Gateway(wsgi.Gateway_10):
    """cheroot's WSGI gateway, also handing the app the client's socket: a long-poll can then
    tell a poller that has left from one still waiting (webapi.server.routing.peer_alive)."""

    def get_environ(self) -> Any:
        env = super().get_environ()  # type: ignore[no-untyped-call]
        env["extcomp.socket"] = self.req.conn.socket
        return env


class _Request(server.HTTPRequest):
    """cheroot's request, whose headers must arrive within request_deadline_seconds as a whole
    (its own timeout is per read: a client sending a byte a second would hold a worker)."""

    def parse_request(self) -> None:
        watchdog: Watchdog | None = getattr(self.server, "extcomp_watchdog", None)
        sock = self.conn.socket
        if watchdog is not None:
            watchdog.arm(sock, watchdog.header_seconds, "request headers")
        try:
            super().parse_request()
        finally:
            if watchdog is not None:
                watchdog.disarm(sock)


class _SocketWriter(makefile.StreamWriter):
    """cheroot's socket writer without its copies: cheroot appends each block to a buffer and,
    after every partial send, copies all that is still unsent (`bytes(buffer)`). A TLS send
    returns after what fits in the socket buffer, so a 1 MiB download block was copied many
    times over (quadratic in the block size). Here a block is sent from a view of itself."""

    def write(self, b: Any) -> int:
        self._checkClosed()
        with self._write_lock:  # type: ignore[attr-defined]
            self._flush_unlocked()  # type: ignore[attr-defined]  # what is buffered goes first
            with memoryview(b) as view, view.cast("B") as data:
                sent = 0
                while sent < len(data):
                    sent += self.raw.write(data[sent:]) or 0
        self.bytes_written += len(b)
        return len(b)


class _Connection(server.HTTPConnection):
    RequestHandlerClass = _Request

    def __init__(self, srv: Any, sock: Any, mf: Any = makefile.MakeFile) -> None:
        super().__init__(srv, sock, mf)
        self.wfile = _SocketWriter(sock, "wb", self.wbufsize)


# A connection the peer (or our watchdog) closed under cheroot's feet: a TLS handshake or request
# cut off midway, an answer written to a socket that is gone. Normal on the internet, and the
# watchdog logs its own cuts.
_PEER_GONE = (
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)


def peer_gone(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it: cheroot wraps a dropped handshake in FatalSSLAlert)
    only says that the other end went away."""
    while exc is not None:
        if isinstance(exc, _PEER_GONE):
            return True
        exc = exc.__cause__
    return False


class _Server(wsgi.Server):
    """cheroot's server, whose error log leaves out connections the peer dropped: cheroot logs
    each as "socket.error 8" or "Unhandled error … SSLEOFError" with a traceback (writing its
    408/500 to the closed socket fails again). Every other error is logged as before."""

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        if peer_gone(sys.exc_info()[1]):
            log.debug("connection dropped by the peer: %s", msg.splitlines()[0][:200])
            return
        super().error_log(msg, level, traceback)


def _account() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def file_error(key: str, path: Path, exc: OSError, need: str) -> ConfigError:
    """A ConfigError naming the config key, the file and what to do, for an OSError on it.

    `need` says what the server does with the file ("read", "create files in"), for the hint.
    """
    reason = (exc.strerror or str(exc)).lower()
    if exc.filename and Path(exc.filename) != path:
        reason = f"{reason} ({exc.filename})"
    if exc.errno in (errno.EACCES, errno.EPERM):
        fix = f"the account running the server ({_account()}) must be able to {need} it"
        if key == "tls.key":
            fix += " (e.g. owner root, group of that account, mode 0640)"
    elif exc.errno == errno.ENOENT:
        fix = f"create it, or fix {key} in the config"
    else:
        fix = f"fix {key} in the config"
    return ConfigError(f"{key} {path}: {reason}; {fix}")


def _readable(key: str, path: Path, *, missing_ok: bool = False) -> None:
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError as exc:
        if not missing_ok:
            raise file_error(key, path, exc, "read") from None
    except OSError as exc:
        raise file_error(key, path, exc, "read") from None


def tls_adapter(cert: Path, key: Path) -> BuiltinSSLAdapter:
    """cheroot's TLS adapter, whose errors name neither file ([Errno 13] Permission denied):
    each file is opened first, so the message says which one and what to do."""
    _readable("tls.cert", cert)
    _readable("tls.key", key)
    try:
        return BuiltinSSLAdapter(str(cert), str(key))
    except ssl.SSLError as exc:
        raise ConfigError(
            f"tls.cert {cert} / tls.key {key}: cannot load them ({exc.reason or exc}); give a PEM "
            "certificate (chain included) and its unencrypted PEM private key"
        ) from None
    except OSError as exc:
        raise file_error("tls.key", key, exc, "read") from None


class ApiServer:
    """The store, the app, a cheroot server, the reaper and retention threads, started and stopped
    together."""

    def __init__(self, config_path: Path) -> None:
        self.config = ConfigSource(config_path)
        conf = self.config.current
        # The files the server needs are checked before anything starts: an OSError here would
        # name no config key, and the unit would restart the server in a loop (exit 2 stops it).
        ssl_adapter = tls_adapter(conf.tls.cert, conf.tls.key) if conf.tls is not None else None
        try:
            conf.data_dir.mkdir(parents=True, exist_ok=True)
            # The store's owner lock refuses a second server on the same data_dir (ConfigError).
            self.store = YamlJobStore(
                conf.data_dir, site_policy(self.config), min_free_bytes=conf.min_free_bytes
            )
        except OSError as exc:
            raise file_error("data_dir", conf.data_dir, exc, "create files in") from None
        _readable("users_file", conf.users_file, missing_ok=True)  # made by `users add`
        self.auth = UserStore(conf.users_file)
        self.watchdog = Watchdog(header_seconds=conf.request_deadline_seconds)
        self.metrics = ServerMetrics(self.store, self.config)
        self.app = create_app(
            self.store, self.config, self.auth, watchdog=self.watchdog, metrics=self.metrics
        )
        self.metrics_wsgi: _Server | None = None
        if conf.metrics_listen is not None:
            self.metrics_wsgi = _Server(
                conf.metrics_listen,
                _metrics_app(self.metrics),
                numthreads=2,
                timeout=10,
                shutdown_timeout=2,
                server_name="extcomp-api-metrics",
            )
            self.metrics_wsgi.max_request_body_size = 1 << 20  # it takes no bodies at all
        self.wsgi = _Server(
            (conf.listen, conf.port),
            self.app,
            numthreads=conf.threads,
            max=conf.threads,
            # Long-polls park in worker threads; let bursts of pollers queue rather than fail.
            request_queue_size=max(64, conf.threads),
            timeout=30,
            shutdown_timeout=5,
            server_name="extcomp-api",
        )
        # No body is larger than the routes' own bound. With none (cheroot's default), a
        # Content-Length beyond any C integer failed inside cheroot's read (OverflowError, a
        # traceback in the log, the connection dropped) instead of a 413.
        self.wsgi.max_request_body_size = MAX_FILE_BYTES
        self.wsgi.gateway = _Gateway
        self.wsgi.ConnectionClass = _Connection
        self.wsgi.extcomp_watchdog = self.watchdog  # type: ignore[attr-defined]
        if ssl_adapter is not None:
            self.wsgi.ssl_adapter = ssl_adapter
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self.wsgi.bind_addr[:2]
        scheme = "https" if self.wsgi.ssl_adapter is not None else "http"
        return f"{scheme}://{host}:{port}"

    @property
    def metrics_url(self) -> str | None:
        """http://HOST:PORT/metrics of the separate metrics listener, if one is configured."""
        if self.metrics_wsgi is None:
            return None
        host, port = self.metrics_wsgi.bind_addr[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/metrics"

    def _reap_loop(self) -> None:
        while not self._stop.wait(self.config.current.reaper_seconds):
            try:
                self.store.reap()
            except Exception:  # keep reaping; a bad calc must not stop lease expiry for all
                log.exception("reaper: error")

    def _retention_loop(self) -> None:
        while not self._stop.wait(self.config.current.retention_interval_seconds):
            conf = self.config.current
            if not (conf.retention.active or any(s.retention for s in conf.sites.values())):
                continue  # no rule configured: calcs are kept for ever
            try:
                report = self.store.purge(conf.site_retention)
            except Exception:  # try again next round; serving must go on
                log.exception("retention: error")
                continue
            if report.calcs:
                log.info("%s", report.summary())

    def start(self) -> None:
        """Bind the socket and serve in background threads; returns once listening."""
        self.wsgi.prepare()
        targets = [
            (self.wsgi.serve, "cheroot"),
            (self._reap_loop, "reaper"),
            (self._retention_loop, "retention"),
        ]
        if self.metrics_wsgi is not None:
            try:
                self.metrics_wsgi.prepare()
            except OSError as exc:
                self.wsgi.stop()
                raise ConfigError(
                    f"metrics_listen {self.config.current.metrics_listen}: cannot listen there "
                    f"({exc.strerror or exc}); choose a free port"
                ) from None
            targets.append((self.metrics_wsgi.serve, "metrics"))
        for target, name in targets:
            thread = threading.Thread(target=target, name=f"extcomp-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("api server listening on %s (%d threads)", self.url, self.config.current.threads)
        if self.metrics_url is not None:
            log.info("metrics listener on %s", self.metrics_url)

    def stop(self) -> None:
        self._stop.set()
        self.store.close()  # wakes long-polls so worker threads finish promptly
        self.wsgi.stop()
        if self.metrics_wsgi is not None:
            self.metrics_wsgi.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        self.watchdog.stop()
        log.info("api server stopped")


def _metrics_app(metrics: ServerMetrics) -> Any:
    """The separate listener's WSGI app: GET /metrics, nothing else."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ.get("PATH_INFO") != "/metrics" or environ.get("REQUEST_METHOD") != "GET":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"only GET /metrics is served here\n"]
        body = metrics.exposition()
        start_response(
            "200 OK", [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))]
        )
        return [body]

    return app


def run(config_path: Path) -> int:
    """Serve until SIGTERM or SIGINT."""
    server = ApiServer(config_path)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    stop.wait()
    server.stop()
    return 0
