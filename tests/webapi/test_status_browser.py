"""The status page in a real browser: Debian's headless Chromium against the running server.

One Chromium for the module (tests/fixtures/browser.py drives it over a DevTools pipe); each test
has its own browser context. Every page is saved as a screenshot in the test's output dir; with
EXTCOMP_STATUS_SCREENSHOTS=DIR they are also copied to DIR (`docs/img` for the docs).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.browser import Browser, Page
from tests.webapi.apihelp import Api
from tests.webapi.conftest import RunningServer
from tests.webapi.statushelp import finished_calc

REFUSED = "login refused: the token, or the user name and password, are not valid"


@pytest.fixture(scope="module")
def browser(
    tmp_path_factory: pytest.TempPathFactory, tls_material: tuple[Path, Path]
) -> Iterator[Browser]:
    base = tmp_path_factory.mktemp("chromium")
    started = Browser(base / "profile", trust_cert=tls_material[0])
    yield started
    started.close()


def _shot(page: Page, out: Path, name: str) -> None:
    path = page.screenshot(out / f"status-{name}.png")
    assert path.stat().st_size > 5000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    docs = os.environ.get("EXTCOMP_STATUS_SCREENSHOTS")
    if docs:
        Path(docs).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(docs) / path.name)


def _session_cookies(page: Page) -> list[dict[str, Any]]:
    return [c for c in page.cookies() if c["name"] == "extcomp_status"]


def _fill_and_submit(page: Page, fields: dict[str, str]) -> None:
    script = "".join(
        f"document.getElementById({json.dumps(k)}).value = {json.dumps(v)};"
        for k, v in fields.items()
    )
    page.act(script + "document.getElementById('login').click();")


def _scene(server: RunningServer) -> dict[str, Any]:
    """Calcs of two users in several states, and a poller seen on site-a."""
    theirs = Api(server, "bob").register({"big.dat": b"x" * 2048})  # before alice's poller
    done = finished_calc(server, "alice")
    waiting = Api(server, "alice").queued(site="site-b", args=["--steps", "3"])
    return {"done": done, "waiting": waiting, "theirs": theirs}


def test_a_user_logs_in_with_a_token_and_sees_only_their_calcs(
    browser: Browser, api_server: RunningServer, tmp_path: Path
) -> None:
    scene = _scene(api_server)
    page = browser.new_page()
    try:
        page.goto(api_server.url + "/status/sites")
        assert page.url().endswith("/status/login")  # redirected: not logged in
        _shot(page, tmp_path, "login")
        _fill_and_submit(page, {"token": api_server.tokens["alice"] + "0"})
        assert REFUSED in page.text() and page.statuses[-1] == 401
        assert _session_cookies(page) == []

        _fill_and_submit(page, {"token": api_server.tokens["alice"]})
        assert page.url().endswith("/status/sites") and "alice" in page.text()
        # The stylesheet was accepted (right type under nosniff, allowed by the CSP).
        header = page.eval("getComputedStyle(document.querySelector('header')).backgroundColor")
        assert header == "rgb(45, 62, 80)"
        (cookie,) = _session_cookies(page)
        assert cookie["name"] == "extcomp_status" and cookie["path"] == "/status"
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
        assert page.eval("document.cookie") == ""  # HttpOnly: no script on the page can read it

        seen = []
        for path in ("/status/sites", "/status/queue", "/status/calcs"):
            page.goto(api_server.url + path)
            seen.append(page.html())
        page.goto(api_server.url + f"/status/calcs/{scene['done']['id']}")
        seen.append(page.html())
        assert "all steps done" in page.text() and "Admin actions" not in page.text()
        page.goto(api_server.url + f"/status/calcs/{scene['theirs']['id']}")
        assert page.statuses[-1] == 404 and "not one of yours" in page.text()
        seen.append(page.html())
        for html in seen:
            assert scene["theirs"]["id"] not in html, "a page showed bob's calc to alice"
            assert "big.dat" not in html
        assert scene["waiting"]["id"] in seen[1]
    finally:
        page.close()


def test_an_admin_sees_all_and_acts_only_with_the_pages_csrf_token(
    browser: Browser, api_server: RunningServer, tmp_path: Path
) -> None:
    scene = _scene(api_server)
    page = browser.new_page()
    try:
        page.goto(api_server.url + "/status/login")
        _fill_and_submit(page, {"user": "admin", "password": api_server.passwords["admin"]})
        assert page.url().endswith("/status/sites")
        _shot(page, tmp_path, "sites")
        page.goto(api_server.url + "/status/queue")
        text = page.text()
        assert scene["waiting"]["id"] in text and scene["theirs"]["id"] in text
        assert "no poller has been seen for site site-b" in text
        assert "waiting for 1 input file(s) to be uploaded" in text
        _shot(page, tmp_path, "queue")
        page.goto(api_server.url + "/status/calcs")
        _shot(page, tmp_path, "calcs")
        page.goto(api_server.url + f"/status/calcs/{scene['done']['id']}")
        _shot(page, tmp_path, "calc")

        # A hostile page elsewhere posts the cancel form without the token: nothing happens
        # (SameSite=Strict keeps the cookie back, and the form has no CSRF token anyway).
        target = f"{api_server.url}/status/calcs/{scene['waiting']['id']}/cancel"
        forged = (
            "data:text/html,<form method=post action='" + target + "'>"
            "<input name=csrf value=guess></form><script>document.forms[0].submit()</script>"
        )
        page.goto(forged)
        if page.url().startswith("data:"):
            page.wait_load()  # the forged form's answer is still on its way
        # The cookie stayed back, so the server sent the browser to the login form.
        assert page.url() == api_server.url + "/status/login"
        assert Api(api_server, "alice").get(scene["waiting"]["id"])["state"] == "queued"

        # The same form with a wrong token, sent from the page's own origin: refused.
        page.goto(api_server.url + f"/status/calcs/{scene['waiting']['id']}")
        page.act(
            "const f = document.querySelector('form[action$=\"/cancel\"]');"
            "f.querySelector('input[name=csrf]').value = 'wrong'; f.submit();"
        )
        assert page.statuses[-1] == 403 and "CSRF" in page.text()
        assert Api(api_server, "alice").get(scene["waiting"]["id"])["state"] == "queued"

        # The real button: cancelled.
        page.goto(api_server.url + f"/status/calcs/{scene['waiting']['id']}")
        _shot(page, tmp_path, "calc-admin")
        page.act("document.getElementById('do-cancel').click();")
        assert page.eval("document.getElementById('state').textContent") == "cancelled"
        assert Api(api_server, "alice").get(scene["waiting"]["id"])["state"] == "cancelled"

        page.act("document.querySelector('.logout button').click();")
        assert page.url().endswith("/status/login") and _session_cookies(page) == []
    finally:
        page.close()
