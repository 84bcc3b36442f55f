"""A small in-memory fake of the original MInt server (`mi_dicomapi.py`), for testing our tools.

It keeps the original's state machine and answers as `docs/mint-protocol.md` records
them, quirks included: integer 200 on success and other codes as ints or strings, `"0300"` with
HTTP 200 for nothing to do, `calc-params` answering `{"calc-info": …}` without `errors`, a colon in
every status message, whole bodies held in memory. A gateway check stands in for the original's
front end: an unknown token gets HTTP 403 with code "0005". Plain HTTP on 127.0.0.1:0.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

PREFIX = "/mi-distcomp-api/"


@dataclass
class FakeCalc:
    accept_id: str
    site: str
    info: dict[str, Any]
    allowed: bool = False
    progress: str = "not start"
    status: str = "none"
    result_files: dict[str, Any] | None = None


@dataclass
class FakeMintServer:
    """`sites` maps a site id to its allowed command strings (the original's ini)."""

    sites: dict[str, list[str]]
    tokens: set[str]
    calcs: dict[str, FakeCalc] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)  # "METHOD route" in arrival order
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    _server: Any = None

    # -- answers ------------------------------------------------------------------------------
    def handle(self, method: str, route: str, query: dict[str, str], body: bytes) -> Any:
        doc: dict[str, Any] = {}
        if body:
            try:
                doc = json.loads(body)
            except ValueError:
                return 400, _env("400", "invalid json")
        with self.lock:
            self.calls.append(f"{method} {route}")
            handler = getattr(self, "r_" + route.replace("-", "_"), None)
            if handler is None:
                return 404, _env(404, "no such route")
            return handler(query, doc)

    def r_add_calcinfo(self, _q: dict[str, str], doc: dict[str, Any]) -> Any:
        info = doc.get("calc-info")
        if not isinstance(info, dict):
            return 400, _env("400", "calc-info is missing")
        site, command = info.get("remote-site"), info.get("command")
        if site not in self.sites:
            return 400, _env(400, f"remote-site {site} is not registered")
        if command not in self.sites[site]:
            return 400, _env(401, f"command {command} is not allowed on {site}")
        accept_id = str(uuid.uuid4())
        self.calcs[accept_id] = FakeCalc(accept_id, site, info)
        return 200, _env(200, "accepted", accept_id=accept_id)

    def _calc(self, key: Any) -> FakeCalc | None:
        return self.calcs.get(key) if isinstance(key, str) else None

    def r_allow_wait_calc(self, _q: dict[str, str], doc: dict[str, Any]) -> Any:
        calc = self._calc(doc.get("accept_id"))
        if calc is None:
            return 400, _env(402, "no such accept_id")
        calc.allowed = True
        return 200, _env(200, "allowed")

    def r_calc_status(self, q: dict[str, str], _doc: dict[str, Any]) -> Any:
        calc = self._calc(q.get("accept_id"))
        if calc is None:
            return 200, _env(400, "status:not found")
        return 200, _env(200, f"status:{calc.status}")

    def r_calc_progress(self, q: dict[str, str], _doc: dict[str, Any]) -> Any:
        calc = self._calc(q.get("accept_id"))
        if calc is None:
            return 200, _env(400, "status:not found")
        return 200, _env(200, f"status:{calc.progress}")

    def r_get_calc_result(self, q: dict[str, str], _doc: dict[str, Any]) -> Any:
        calc = self._calc(q.get("accept_id"))
        if calc is None or calc.result_files is None:
            return 200, _env(400, "no result")
        return 200, _env(200, "result", **{"result-info": {"result_files": calc.result_files}})

    def r_cancel_wait_calc(self, _q: dict[str, str], doc: dict[str, Any]) -> Any:
        if self.calcs.pop(doc.get("accept_id"), None) is None:  # type: ignore[arg-type]
            return 400, _env(402, "no such accept_id")
        return 200, _env(200, "cancelled")

    def r_calc_request(self, q: dict[str, str], _doc: dict[str, Any]) -> Any:
        site = q.get("site_id")
        if site not in self.sites:
            return 200, _env(400, f"site {site} is not registered")
        for calc in self.calcs.values():  # dicts keep insertion order: the oldest first
            if calc.site == site and calc.allowed and calc.progress == "not start":
                return 200, _env(200, "calc found", accept_id=calc.accept_id)
        return 200, _env("0300", "no calc")

    def _site_calc(self, key: Any, site: Any) -> FakeCalc | None:
        calc = self._calc(key)
        return calc if calc is not None and calc.site == site else None

    def r_calc_params(self, q: dict[str, str], _doc: dict[str, Any]) -> Any:
        calc = self._site_calc(q.get("accept_id"), q.get("site_id"))
        if calc is None:
            return 200, _env(400, "no such calc")
        calc.progress = "sending params"
        return 200, {"calc-info": calc.info}  # the one answer without "errors"

    def _step(self, doc: dict[str, Any], progress: str, **changes: Any) -> Any:
        calc = self._site_calc(doc.get("accept_id"), doc.get("site_id"))
        if calc is None:
            return 200, _env(400, "no such calc")
        calc.progress = progress
        for key, value in changes.items():
            setattr(calc, key, value)
        return 200, _env(200, progress)

    def r_calc_params_complete(self, _q: dict[str, str], doc: dict[str, Any]) -> Any:
        return self._step(doc, "complete send")

    def r_calc_start(self, _q: dict[str, str], doc: dict[str, Any]) -> Any:
        return self._step(doc, "running")

    def r_calc_end(self, _q: dict[str, str], doc: dict[str, Any]) -> Any:
        status = "abnormal" if doc.get("result") == "abnormal" else "completed"
        return self._step(doc, "calc end", status=status)

    def r_send_results(self, _q: dict[str, str], doc: dict[str, Any]) -> Any:
        return self._step(doc, "getting return", result_files=doc.get("result_files"))

    def r_end_send(self, _q: dict[str, str], doc: dict[str, Any]) -> Any:
        return self._step(doc, "got return")

    # -- WSGI ---------------------------------------------------------------------------------
    def app(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        path = environ.get("PATH_INFO", "")
        auth = environ.get("HTTP_AUTHORIZATION", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        if token not in self.tokens:
            status, answer = 403, _env("0005", "invalid access token")
        elif not path.startswith(PREFIX):
            status, answer = 404, _env(404, "not found")
        else:
            query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
            status, answer = self.handle(
                environ["REQUEST_METHOD"], path[len(PREFIX) :], query, body
            )
        data = json.dumps(answer, ensure_ascii=False).encode("utf-8")
        start_response(
            f"{status} X",
            [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
        )
        return iter([data])

    def start(self) -> FakeMintServer:
        class Server(ThreadingMixIn, WSGIServer):
            daemon_threads = True

        class Quiet(WSGIRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

        self._server = make_server(
            "127.0.0.1", 0, self.app, server_class=Server, handler_class=Quiet
        )
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _env(code: int | str, message: str, **extra: Any) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message, **extra}]}
