"""The status page over real HTTPS (the real app on cheroot): login, who sees what, CSRF."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import yaml

from tests.fixtures.wheel import BuiltWheel
from tests.webapi.apihelp import Api
from tests.webapi.conftest import RunningServer, _prepare, _start_thread
from tests.webapi.statushelp import STDOUT, Pages, finished_calc
from webapi.server.auth import UserStore
from webapi.server.status import views

TEMPLATES = Path(__file__).parents[2] / "webapi" / "server" / "status" / "templates"
REFUSED = "login refused: the token, or the user name and password, are not valid"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tls_material: tuple[Path, Path]
) -> Iterator[RunningServer]:
    """One server for the tests that only register calcs and never poll (no poller is ever
    seen, so any user may register on any site); the others start their own."""
    stops: list[Callable[[], None]] = []
    base = tmp_path_factory.mktemp("status-api")
    config_path, tokens = _prepare(base, tls_material, {})
    common = dict(
        ca_file=tls_material[0],
        config_path=config_path,
        data_dir=base / "data",
        users_file=base / "users.yml",
        tokens=tokens,
        log_path=base / "server.log",
        base_dir=base,
    )
    yield _start_thread(config_path, base / "server.log", common, stops)
    for stop in stops:
        stop()


def test_pages_need_a_login_and_login_sets_a_strict_cookie(server: RunningServer) -> None:
    anon = Pages(server)
    for path in ("/status", "/status/sites", "/status/queue", "/status/calcs"):
        resp = anon.get(path)
        assert resp.status_code == 303 and resp.headers["Location"].endswith("/status/login")
    form = anon.get("/status/login")
    assert form.status_code == 200 and 'name="token"' in form.text and "<script" not in form.text

    visitor = Pages(server)
    resp = visitor.login(token=server.tokens["alice"])
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/status/sites")
    assert visitor.set_cookie is not None
    flags = [f.strip() for f in visitor.set_cookie.split(";")]
    assert flags[0].startswith("extcomp_status=") and len(flags[0]) > 40
    assert {"HttpOnly", "Secure", "SameSite=Strict", "Path=/status"} <= set(flags)
    assert any(f.startswith("Max-Age=") and int(f[8:]) > 0 for f in flags)


def test_without_tls_the_cookie_is_not_secure(
    make_api_server: Callable[..., RunningServer],
) -> None:
    plain = make_api_server(tls=None)
    assert plain.url.startswith("http://")
    visitor = Pages(plain)
    assert visitor.login(token=plain.tokens["alice"]).status_code == 303
    assert visitor.set_cookie is not None
    flags = {f.strip() for f in visitor.set_cookie.split(";")}
    assert "Secure" not in flags and {"HttpOnly", "SameSite=Strict"} <= flags
    assert visitor.get("/status/sites").status_code == 200


def test_password_login_works_and_wrong_ones_do_not_say_what_was_wrong(
    server: RunningServer,
) -> None:
    good = Pages(server).login(user="bob", password=server.passwords["bob"])
    assert good.status_code == 303
    wrong = [
        {"token": "xc_not-a-token"},
        {"token": server.tokens["alice"] + "x"},
        {"user": "bob", "password": "wrong"},
        {"user": "nobody", "password": server.passwords["bob"]},
        {"user": "bob", "password": server.passwords["alice"]},
    ]
    for form in wrong:
        visitor = Pages(server)
        resp = visitor.login(**form)
        assert resp.status_code == 401, form
        assert REFUSED in resp.text
        assert visitor.set_cookie is None  # no session cookie
        assert visitor.get("/status/sites").status_code == 303
    assert Pages(server).login().status_code == 400  # nothing given: says what to give
    for text in (server.tokens["alice"], server.passwords["bob"], "xc_not-a-token"):
        assert text not in server.log_path.read_text()


def test_a_login_needs_the_nonce_of_a_login_form_from_this_site(
    server: RunningServer,
) -> None:
    visitor = Pages(server)
    nonce, cookie = visitor.login_nonce()
    token = server.tokens["alice"]
    forged = [
        ({"token": token}, {}),  # a form on another site: neither nonce nor cookie
        ({"token": token, "nonce": nonce}, {}),  # the nonce but no cookie (SameSite kept it)
        ({"token": token}, {"Cookie": cookie}),
        ({"token": token, "nonce": nonce + "x"}, {"Cookie": cookie}),
    ]
    for form, headers in forged:
        resp = visitor.call("POST", "/status/login", data=form, headers=headers)
        assert resp.status_code == 403 and "came from another site" in resp.text
        assert not any(
            c.startswith("extcomp_status=") for c in resp.raw.headers.getlist("Set-Cookie")
        )
    assert visitor.login(token=token).status_code == 303


def test_a_user_sees_only_their_own_calcs_an_admin_all(server: RunningServer) -> None:
    mine = Api(server, "alice").queued()
    theirs = Api(server, "bob").queued()
    bob = Pages(server).login_as("bob")
    for path in ("/status/sites", "/status/queue", "/status/calcs"):
        page = bob.get(path)
        assert page.status_code == 200
        assert theirs["id"] in page.text or path == "/status/sites"
        assert mine["id"] not in page.text, f"{path} shows alice's calc to bob"
    other = bob.get(f"/status/calcs/{mine['id']}")
    assert other.status_code == 404 and mine["id"] not in other.text and "in.txt" not in other.text
    admin = Pages(server).login_as("admin")
    queue = admin.get("/status/queue").text
    assert mine["id"] in queue and theirs["id"] in queue
    assert admin.get(f"/status/calcs/{mine['id']}").status_code == 200


def _cancel_path(calc_id: str) -> str:
    return f"/status/calcs/{calc_id}/cancel"


def test_admin_actions_need_this_sessions_csrf_token(server: RunningServer) -> None:
    calc = Api(server, "alice").queued()
    admin = Pages(server).login_as("admin")
    bob = Pages(server).login_as("bob")
    forged = [{}, {"csrf": ""}, {"csrf": "x" * 43}, {"csrf": bob.csrf()}]
    for form in forged:
        resp = admin.post(_cancel_path(calc["id"]), form)
        assert resp.status_code == 403 and "CSRF" in resp.text, form
        assert Api(server, "alice").get(calc["id"])["state"] == "queued"
    resp = admin.post(_cancel_path(calc["id"]), {"csrf": admin.csrf()})
    assert resp.status_code == 303
    assert Api(server, "alice").get(calc["id"])["state"] == "cancelled"
    page = admin.get(resp.headers["Location"]).text
    assert "cancelled by admin on the status page" in page


def test_a_non_admin_cannot_post_actions_even_with_a_good_token(server: RunningServer) -> None:
    calc = Api(server, "alice").queued()
    alice = Pages(server).login_as("alice")
    page = alice.get(f"/status/calcs/{calc['id']}").text
    assert "Admin actions" not in page and "/cancel" not in page
    csrf = alice.csrf()
    for action in ("cancel", "requeue", "fail"):
        resp = alice.post(f"/status/calcs/{calc['id']}/{action}", {"csrf": csrf, "reason": "x"})
        assert resp.status_code == 403 and "only an admin" in resp.text
    assert Api(server, "alice").get(calc["id"])["state"] == "queued"
    anon = Pages(server).post(_cancel_path(calc["id"]), {"csrf": csrf})
    assert anon.status_code == 303  # to the login form; nothing done
    assert Api(server, "alice").get(calc["id"])["state"] == "queued"


def test_fail_and_requeue_and_state_machine_refusals(server: RunningServer) -> None:
    calc = Api(server, "alice").queued()
    admin = Pages(server).login_as("admin")
    csrf = admin.csrf()
    path = f"/status/calcs/{calc['id']}"
    assert admin.post(path + "/fail", {"csrf": csrf}).status_code == 400  # no reason
    assert admin.post(path + "/fail", {"csrf": csrf, "reason": "stuck"}).status_code == 303
    assert Api(server, "alice").get(calc["id"])["reason"] == "failed by an admin: stuck"
    refused = admin.post(path + "/cancel", {"csrf": csrf})
    assert refused.status_code == 409 and "cannot cancel" in refused.text
    assert admin.post(path + "/requeue", {"csrf": csrf}).status_code == 303
    assert Api(server, "alice").get(calc["id"])["state"] == "queued"
    assert admin.post(path + "/explode", {"csrf": csrf}).status_code == 404


def test_logout_needs_csrf_and_ends_the_session(server: RunningServer) -> None:
    alice = Pages(server).login_as("alice")
    assert alice.post("/status/logout", {}).status_code == 403
    assert alice.get("/status/sites").status_code == 200
    resp = alice.post("/status/logout", {"csrf": alice.csrf()})
    assert resp.status_code == 303 and "Max-Age=0" in resp.headers["Set-Cookie"]
    assert alice.get("/status/sites").status_code == 303  # the old cookie is dead server-side


def test_sessions_follow_the_users_file(api_server: RunningServer) -> None:
    """Revoking the token a session logged in with, changing the password it used, or taking
    the admin flag away takes effect at the session's next request."""
    users = UserStore(api_server.users_file)
    by_token = Pages(api_server).login_as("alice")
    by_password = Pages(api_server)
    assert by_password.login(user="alice", password=api_server.passwords["alice"]).status_code
    assert by_password.get("/status/sites").status_code == 200
    (alice,) = [u for u in users.list_users() if u.name == "alice"]
    users.revoke("alice", alice.tokens[0].id)
    assert by_token.get("/status/sites").status_code == 303  # to the login form
    assert by_password.get("/status/sites").status_code == 200
    users.set_password("alice", "a-new-password-4Rt")
    assert by_password.get("/status/sites").status_code == 303

    calc = Api(api_server, "bob").queued()
    admin = Pages(api_server).login_as("admin")
    csrf = admin.csrf()
    raw = yaml.safe_load(api_server.users_file.read_text())
    raw["users"]["admin"]["admin"] = False
    api_server.users_file.write_text(yaml.safe_dump(raw))
    refused = admin.post(f"/status/calcs/{calc['id']}/cancel", {"csrf": csrf})
    assert refused.status_code == 403 and "only an admin" in refused.text
    assert admin.get(f"/status/calcs/{calc['id']}").status_code == 404  # bob's, not theirs
    assert Api(api_server, "bob").get(calc["id"])["state"] == "queued"


def test_calc_detail_history_files_logs_and_cli(api_server: RunningServer) -> None:
    calc = finished_calc(api_server)
    page = Pages(api_server).login_as("alice").get(f"/status/calcs/{calc['id']}")
    assert page.status_code == 200
    assert page.headers["Refresh"].isdigit()
    assert page.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    text = page.text
    history = text.split("State history", 1)[1].split("</table>", 1)[0]
    states = re.findall(r"<tr><td>([a-z]+)</td>", history)
    assert states == ["registered", "queued", "running", "succeeded"]
    assert "<td>p1</td>" in history  # the lease holder of the claim
    for entry in calc["inputs"] + calc["results"]:
        assert entry["sha256"] in text and f"<code>{entry['name']}</code>" in text
    assert "all steps done" in text  # stdout tail
    assert "warning: &lt;tiny&gt; &amp; harmless" in text  # stderr tail, escaped
    assert f"extcomp-api calcs fetch {calc['id']} --url {api_server.url}" in text
    assert STDOUT in text


def test_outside_names_are_escaped_everywhere(api_server: RunningServer) -> None:
    hostile = "<script>alert(1)</script>\"'&<img src=x onerror=alert(2)>"
    calc = Api(api_server, "alice").queued(args=[hostile])
    resp = requests.post(
        api_server.url + "/api/v1/sites/site-b/claim",
        json={"poller": "p-ua", "wait": 0},
        headers={**api_server.headers("alice"), "User-Agent": "<b>evil</b>/1.0"},
        verify=str(api_server.ca_file),
        timeout=30,
    )
    assert resp.status_code == 204
    alice = Pages(api_server).login_as("alice")
    detail = alice.get(f"/status/calcs/{calc['id']}").text
    sites = alice.get("/status/sites").text
    for page in (detail, sites):
        assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in detail
    assert "&lt;b&gt;evil&lt;/b&gt;/1.0" in sites  # the poller's version, escaped


def test_sites_show_pollers_with_age_and_version_and_queue_says_why(
    api_server: RunningServer,
) -> None:
    api = Api(api_server, "alice")
    calc = api.queued()
    admin = Pages(api_server).login_as("admin")
    queue = admin.get("/status/queue").text
    assert calc["id"] in queue and "no poller has been seen for site site-a" in queue
    assert api.claim(site="site-b", poller="p-b").status_code == 204
    sites = admin.get("/status/sites").text
    site_b = sites.split('id="site-site-b"', 1)[1]
    assert "<td>p-b</td>" in site_b and "mint-extcomp/" not in site_b  # requests' own agent
    assert "python-requests/" in site_b and ">live<" in site_b and "<td>alice</td>" in site_b
    site_a = sites.split('id="site-site-a"', 1)[1].split('id="site-site-b"', 1)[0]
    assert "No poller has been seen" in site_a
    link = "/status/calcs?site=site-a&amp;state=queued"
    assert f'<td><a href="{link}">1</a></td>' in site_a
    listed = admin.get(link.replace("&amp;", "&")).text
    assert "<h1>Calcs site-a queued</h1>" in listed and calc["id"] in listed
    assert admin.get("/status/calcs?site=site-b").text.count('href="/status/calcs/c-') == 0
    bob_sites = Pages(api_server).login_as("bob").get("/status/sites").text
    assert "<td>alice</td>" not in bob_sites  # pollers' users are for admins only


def test_forms_are_bounded_and_typed(server: RunningServer) -> None:
    admin = Pages(server).login_as("admin")
    calc = Api(server, "alice").queued()
    big = admin.post(_cancel_path(calc["id"]), {"csrf": "x" * 20000})
    assert big.status_code == 413
    as_json = admin.call("POST", _cancel_path(calc["id"]), json={"csrf": admin.csrf()})
    assert as_json.status_code == 400 and "x-www-form-urlencoded" in as_json.text
    assert admin.get("/status/calcs?state=bogus").status_code == 400
    assert admin.get("/status/calcs/not-an-id").status_code == 404
    assert Api(server, "alice").get(calc["id"])["state"] == "queued"


def test_the_calc_list_is_bounded_and_says_so(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = Api(server, "alice")
    api.queued()
    newest = api.queued()
    monkeypatch.setattr(views, "CALCS_SHOWN", 1)
    page = Pages(server).login_as("alice").get("/status/calcs").text
    assert re.search(r"The 1 most recently changed of \d+ calcs", page)
    assert re.findall(r'href="/status/calcs/(c-[0-9a-f]+)"', page) == [newest["id"]]


@pytest.mark.parametrize("name", sorted(p.name for p in TEMPLATES.glob("*.tpl")))
def test_templates_never_print_unescaped(name: str) -> None:
    assert "{{!" not in (TEMPLATES / name).read_text()


@pytest.mark.slow
def test_the_wheel_ships_the_templates(built_wheel: BuiltWheel, tmp_path: Path) -> None:
    """The wheel, unpacked, renders the login page from there (package data)."""
    site = built_wheel.site
    probe = (
        "from webapi.server.status import routes as r; "
        "print(r.TEMPLATES); print(r.render_page('login.tpl', message='', nonce='n')); "
        "print((r.TEMPLATES / 'status.css').is_file())"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(site), "PATH": os.environ["PATH"]},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert Path(out.splitlines()[0]).is_relative_to(site)
    assert 'name="token"' in out and out.rstrip().endswith("True")
