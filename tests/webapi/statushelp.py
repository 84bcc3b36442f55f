"""Status page test helpers: a logged-in page client over real HTTPS, and a finished calc."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import requests

from tests.webapi.apihelp import Api, sha
from tests.webapi.conftest import RunningServer

STDOUT = "extcomp-stdout.log"
STDERR = "extcomp-stderr.log"


class Pages:
    """One browser-like visitor of the status page: keeps its session cookie by hand (so each
    test sees exactly what the server sets), follows no redirects."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.cookie: str | None = None
        self.set_cookie: str | None = None

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        if self.cookie:
            headers["Cookie"] = f"extcomp_status={self.cookie}"
        resp = requests.request(
            method,
            self.server.url + path,
            headers=headers,
            verify=str(self.server.ca_file),
            allow_redirects=False,
            timeout=30,
            **kw,
        )
        assert "Traceback" not in resp.text and 'File "' not in resp.text
        return resp

    def get(self, path: str) -> requests.Response:
        return self.call("GET", path)

    def post(self, path: str, form: dict[str, str]) -> requests.Response:
        return self.call("POST", path, data=form)

    def login_nonce(self) -> tuple[str, str]:
        """The nonce a fresh login form carries, and the cookie header that comes with it."""
        page = self.get("/status/login")
        field = re.search(r'name="nonce" value="([^"]+)"', page.text)
        cookie = re.match(r"extcomp_status_login=([^;]+)", page.headers["Set-Cookie"])
        assert field and cookie and field.group(1) == cookie.group(1)
        return field.group(1), f"extcomp_status_login={cookie.group(1)}"

    def login(self, **form: str) -> requests.Response:
        nonce, cookie = self.login_nonce()
        resp = self.call(
            "POST", "/status/login", data={"nonce": nonce, **form}, headers={"Cookie": cookie}
        )
        set_cookies = resp.raw.headers.getlist("Set-Cookie")
        self.set_cookie = next((c for c in set_cookies if c.startswith("extcomp_status=")), None)
        if resp.status_code == 303 and self.set_cookie:
            match = re.match(r"extcomp_status=([^;]*)", self.set_cookie)
            assert match
            self.cookie = match.group(1)
        return resp

    def login_as(self, user: str) -> Pages:
        resp = self.login(token=self.server.tokens[user])
        assert resp.status_code == 303, resp.text
        return self

    def csrf(self) -> str:
        """This session's CSRF token, as its pages carry it."""
        page = self.get("/status/sites")
        assert page.status_code == 200, page.text
        match = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert match
        return match.group(1)


def finished_calc(server: RunningServer, user: str = "alice") -> dict[str, Any]:
    """A calc of `user` that ran on poller p1 and succeeded, with stdout/stderr results."""
    api = Api(server, user)
    calc = api.queued({"in.txt": b"hello"})
    claimed, lease = api.claimed(poller="p1")
    assert claimed["id"] == calc["id"]
    files = {STDOUT: b"step 1 done\nall steps done\n", STDERR: b"warning: <tiny> & harmless\n"}
    report = {
        "lease": lease,
        "exit_code": 0,
        "results": [{"name": n, "size": len(d), "sha256": sha(d)} for n, d in files.items()],
    }
    resp = api.call("POST", f"/api/v1/calcs/{calc['id']}/finish", json=report)
    assert resp.status_code == 200, resp.text
    for name, data in files.items():
        path = f"/api/v1/calcs/{calc['id']}/results/{quote(name, safe='')}"
        put = api.call("PUT", path, params={"offset": 0, "lease": lease}, data=data)
        assert put.status_code == 200, put.text
    done = api.get(calc["id"])
    assert done["state"] == "succeeded", done
    return done
