"""The status page's routes: login/logout, sites, queue, calcs, calc detail and admin actions."""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import bottle

from webapi.calcs import Calc
from webapi.contract.calc import CALC_ID_RE, CalcState
from webapi.errors import ApiError, BadRequest, Forbidden, NotFound, Unauthorized
from webapi.fs import disk_full
from webapi.server.routing import (
    Deps,
    body_done,
    content_length,
    drain_chunked,
    drain_known,
    guard_body,
    is_chunked,
    printable,
)
from webapi.server.status import views
from webapi.server.status.sessions import Session, SessionStore, csrf_ok

log = logging.getLogger("webapi.access")
TEMPLATES = Path(__file__).with_name("templates")
COOKIE = "extcomp_status"
PREFIX = "/status"
REFRESH_SECONDS = 15
MAX_FORM_BYTES = 16 * 1024
LOGIN_FAILED = "login refused: the token, or the user name and password, are not valid"
LOGIN_STALE = "the login form expired or came from another site: log in on this page again"
LOGIN_COOKIE = "extcomp_status_login"
LOGIN_NONCE_SECONDS = 3600
ACTIONS = ("cancel", "requeue", "fail")
# The pages need nothing from elsewhere: no scripts at all, styles and forms only from here.
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)

Render = Callable[[Deps, Calc], dict[str, Any]]


class _Redirect(Exception):
    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


@functools.cache
def _template(name: str) -> bottle.SimpleTemplate:
    # Compiled once; `{{ }}` escapes HTML, and no template uses `{{! }}` (a test checks).
    return bottle.SimpleTemplate(name=name, lookup=[str(TEMPLATES)])


def render_page(name: str, **values: Any) -> str:
    values.setdefault("session", None)
    values.setdefault("refresh", False)
    values.setdefault("prefix", PREFIX)
    return str(_template(name).render(**values))


def _is_tls() -> bool:
    return bool(bottle.request.environ.get("wsgi.url_scheme") == "https")


def _cookie_value(cookie: str = COOKIE) -> str | None:
    # Parsed by hand from the raw header: Bottle's cookie helper would decode signed cookies.
    raw = str(bottle.request.environ.get("HTTP_COOKIE", ""))
    for part in raw.split(";"):
        name, _, value = part.strip().partition("=")
        if name == cookie and value:
            return value
    return None


def _set_cookie(value: str, max_age: int, *, cookie: str = COOKIE, path: str = PREFIX) -> None:
    flags = f"{cookie}={value}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    if _is_tls():
        flags += "; Secure"
    bottle.response.add_header("Set-Cookie", flags)


def _login_page(message: str) -> str:
    """The login form with a fresh nonce, also set as a cookie: a login must post both (a
    form on another site gets no SameSite=Strict cookie, so it cannot log a browser in)."""
    nonce = secrets.token_urlsafe(32)
    _set_cookie(nonce, LOGIN_NONCE_SECONDS, cookie=LOGIN_COOKIE, path=f"{PREFIX}/login")
    return render_page("login.tpl", message=message, nonce=nonce)


def _login_nonce_ok(given: str | None) -> bool:
    kept = _cookie_value(LOGIN_COOKIE)
    if not kept or not given:
        return False
    return hmac.compare_digest(kept.encode(), given.encode("utf-8", "replace"))


def read_form() -> dict[str, str]:
    """A url-encoded form body, bounded in size and fields; read by us, not by Bottle."""
    env = bottle.request.environ
    kind = env.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    # Refusals before the read leave the body's deadline armed: the handler drains the body
    # under it, so a client that declares more than it sends cannot hold the thread.
    length = content_length(env, MAX_FORM_BYTES)
    if length and kind != "application/x-www-form-urlencoded":
        raise BadRequest("send the form as application/x-www-form-urlencoded")
    try:
        raw = env["wsgi.input"].read(length) if length else b""
    finally:
        body_done(env)
    try:
        fields = parse_qs(
            raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=20
        )
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the form is not valid UTF-8 url-encoded text") from None
    return {key: values[0] for key, values in fields.items()}


def register_status_routes(
    app: bottle.Bottle, deps: Deps, render: Render, sessions: SessionStore | None = None
) -> SessionStore:
    """Mount the status page under /status; returns its session store (tests age it)."""
    store = deps.store
    sessions = sessions or SessionStore()
    reason = views.api_reason(lambda calc: render(deps, calc))

    def page(
        method: str, path: str, *, login: bool = True
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register an HTML page `fn(session, **url_args)`: session check, errors as pages,
        security headers, one access-log line (never the cookie or a token)."""

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(fn)
            def handler(**kwargs: Any) -> str:
                started = time.monotonic()
                env = bottle.request.environ
                guard_body(deps, env)
                session: Session | None = None
                status = 200
                html = "text/html; charset=utf-8"
                bottle.response.content_type = html  # a page may set its own (the stylesheet)
                try:
                    session = _current(sessions.get(_cookie_value()))
                    if login and session is None:
                        raise _Redirect(f"{PREFIX}/login")
                    result = fn(session, **kwargs)
                    status, out = result if isinstance(result, tuple) else (200, result)
                except _Redirect as moved:
                    status, out = 303, ""
                    bottle.response.set_header("Location", moved.location)
                except ApiError as exc:
                    status = exc.status
                    out = render_page("error.tpl", session=session, message=str(exc))
                    if not (drain_chunked() if is_chunked() else drain_known(env)):
                        # Read and drop a refused body (as the API does), so the browser, still
                        # sending, gets this answer and not a reset; a body too big for that
                        # would be taken for the next request: end the connection instead.
                        bottle.response.set_header("Connection", "close")
                except OSError as exc:
                    full = disk_full(exc)
                    status = 507 if full else 500
                    log.error("%s %s: %s", method, printable(bottle.request.path), exc)
                    message = (
                        "the server is out of disk space; nothing was changed, try again later"
                        if full
                        else "server error; see the server log"
                    )
                    out = render_page("error.tpl", session=session, message=message)
                except Exception:
                    status = 500
                    log.exception("unhandled error in %s %s", method, printable(path))
                    out = render_page(
                        "error.tpl", session=session, message="server error; see the server log"
                    )
                body_done(env)
                bottle.response.status = status
                if status >= 400:
                    bottle.response.content_type = html
                for key, value in SECURITY_HEADERS:
                    bottle.response.set_header(key, value)
                log.info(
                    "%s %s %d user=%s %.0fms",
                    method,
                    printable(bottle.request.path),
                    status,
                    session.user if session else "-",
                    (time.monotonic() - started) * 1000,
                )
                return str(out)

            app.route(path, method=method, callback=handler)
            return fn

        return decorate

    def _current(session: Session | None) -> Session | None:
        """The session as the users file says now: gone with its user or credential (a revoked
        token, a changed password), and an admin only while the user is one."""
        if session is None:
            return None
        now = deps.auth.current(session.user, session.credential)
        if now is None:
            sessions.end(_cookie_value())
            return None
        return session if now.admin == session.admin else replace(session, admin=now.admin)

    def auto_refresh() -> None:
        bottle.response.set_header("Refresh", str(REFRESH_SECONDS))

    def base_url() -> str:
        parts = bottle.request.urlparts
        return f"{parts.scheme}://{parts.netloc}"

    @page("GET", PREFIX, login=False)
    @page("GET", PREFIX + "/", login=False)
    def index(session: Session | None) -> str:
        raise _Redirect(f"{PREFIX}/sites" if session else f"{PREFIX}/login")

    @page("GET", f"{PREFIX}/static/status.css", login=False)
    def stylesheet(_s: Session | None) -> str:
        text = (TEMPLATES / "status.css").read_text(encoding="utf-8")
        bottle.response.content_type = "text/css; charset=utf-8"
        return text

    @page("GET", f"{PREFIX}/login", login=False)
    def login_form(_s: Session | None) -> str:
        return _login_page("")

    @page("POST", f"{PREFIX}/login", login=False)
    def login(_s: Session | None) -> tuple[int, str]:
        form = read_form()
        if not _login_nonce_ok(form.get("nonce")):
            return 403, _login_page(LOGIN_STALE)
        token = form.get("token", "").strip()
        user, password = form.get("user", "").strip(), form.get("password", "")
        try:
            if token:
                principal = deps.auth.authenticate(f"Bearer {token}")
            elif user and password:
                principal = deps.auth.check_password(user, password)
            else:
                return 400, _login_page("give a token, or a user name and a password")
        except Unauthorized:
            log.info("status page: a login was refused")
            return 401, _login_page(LOGIN_FAILED)
        session_id, _new = sessions.create(principal.user, principal.admin, principal.token_id)
        _set_cookie(session_id, int(sessions.max_age_seconds))
        _set_cookie("", 0, cookie=LOGIN_COOKIE, path=f"{PREFIX}/login")
        raise _Redirect(f"{PREFIX}/sites")

    @page("POST", f"{PREFIX}/logout")
    def logout(session: Session) -> str:
        form = read_form()
        if not csrf_ok(session, form.get("csrf")):
            raise Forbidden("the form's CSRF token is missing or wrong: reload the page, try again")
        sessions.end(_cookie_value())
        _set_cookie("", 0)
        raise _Redirect(f"{PREFIX}/login")

    @page("GET", f"{PREFIX}/sites")
    def sites_page(session: Session) -> str:
        rows = views.sites(store, deps.config.current, session.user, session.admin)
        auto_refresh()
        return render_page("sites.tpl", session=session, refresh=True, sites=rows)

    @page("GET", f"{PREFIX}/queue")
    def queue_page(session: Session) -> str:
        rows = views.queue(store, deps.config.current, session.user, session.admin, reason)
        auto_refresh()
        return render_page("queue.tpl", session=session, refresh=True, rows=rows)

    @page("GET", f"{PREFIX}/calcs")
    def calcs_page(session: Session) -> str:
        raw = bottle.request.query.get("state") or ""
        try:
            state = CalcState(raw) if raw else None
        except ValueError:
            known = [str(s) for s in CalcState]
            raise BadRequest(f"unknown state {raw!r}; use one of {known}") from None
        site = bottle.request.query.get("site") or None
        rows, total = views.calc_rows(store, session.user, session.admin, state, site, reason)
        auto_refresh()
        title = " ".join(["Calcs", *([site] if site else []), *([str(state)] if state else [])])
        return render_page(
            "calcs.tpl", session=session, refresh=True, rows=rows, total=total, title=title
        )

    @page("GET", f"{PREFIX}/calcs/<calc_id>")
    def calc_page(session: Session, calc_id: str) -> str:
        calc = _visible(session, calc_id)
        info = views.detail(store, calc, reason, base_url())
        # An admin's page has forms (a reason typed into "fail"): a reload would wipe them.
        refresh = not (session.admin and info.actions)
        if refresh:
            auto_refresh()
        return render_page("calc.tpl", session=session, refresh=refresh, calc=info)

    @page("POST", f"{PREFIX}/calcs/<calc_id>/<action>")
    def calc_action(session: Session, calc_id: str, action: str) -> str:
        form = read_form()
        # Order matters: nothing about the calc is looked up before the form is proven to come
        # from this session's own page, and by an admin.
        if not csrf_ok(session, form.get("csrf")):
            raise Forbidden("the form's CSRF token is missing or wrong: reload the page, try again")
        if not session.admin:
            raise Forbidden("only an admin can cancel, requeue or fail calcs here")
        if action not in ACTIONS:
            raise NotFound(f"no action {action!r}; use one of {list(ACTIONS)}")
        calc = _visible(session, calc_id)
        if action == "cancel":
            store.cancel(calc.id, f"cancelled by {session.user} on the status page")
        elif action == "requeue":
            store.requeue(calc.id)
        else:
            why = form.get("reason", "").strip()
            if not why:
                raise BadRequest("give a reason to fail the calc (it is shown to its owner)")
            store.fail(calc.id, f"failed by an admin: {why[:500]}")
        log.info("status page: %s %s by %s", action, calc.id, session.user)
        raise _Redirect(f"{PREFIX}/calcs/{calc.id}")

    def _visible(session: Session, calc_id: str) -> Calc:
        if not CALC_ID_RE.match(calc_id):
            raise NotFound("no such calc: ids look like c-<32 hex digits>")
        return views.find_calc(store, calc_id, session.user, session.admin)

    return sessions
