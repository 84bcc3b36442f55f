"""The original protocol's GET calls declare their query parameters (accept_id, site_id) with the
same schemas as the POST bodies (webapi.mint.codec.calls), and the real routes agree with them:
hypothesis sends ids the pattern accepts and ids it refuses, and a route answers "not a calc id"
exactly for the refused ones. A doctored pattern is caught by the same check."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.webapi.conftest import RunningServer
from webapi.mint.codec.calls import ACCEPT_ID, SITE_ID, query_schemas

PREFIX = "/mi-distcomp-api/"
ACCEPT_CALLS = ("calc-status", "calc-progress", "get-calc-result", "calc-params")
UUID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
# Near misses the generator rarely finds on its own.
EDGES = [
    UUID,
    UUID.upper(),
    UUID.replace("-", ""),
    "c-" + "ab" * 16,
    "",
    UUID + "\n",
    "\n" + UUID,
    UUID[:-1],
    UUID + "0",
    "c-" + "AB" * 16,
    "C-" + "ab" * 16,
    UUID.replace("0", "g", 1),
]


@pytest.fixture
def server(make_api_server: Callable[..., RunningServer]) -> RunningServer:
    return make_api_server()


def _served(server: RunningServer) -> dict[str, Any]:
    resp = requests.get(f"{server.url}/api/v1/openapi.json", verify=str(server.ca_file), timeout=30)
    doc: dict[str, Any] = resp.json()
    return doc


def _params(doc: dict[str, Any], call: str) -> dict[str, Any]:
    op = doc["paths"][PREFIX + call]["get"]
    return {p["name"]: p["schema"] for p in op["parameters"]}


def test_get_parameters_are_the_bodies_schemas(server: RunningServer) -> None:
    doc = _served(server)
    for call, params in query_schemas().items():
        assert _params(doc, call) == params, call
    for call in ACCEPT_CALLS:
        assert _params(doc, call)["accept_id"] == ACCEPT_ID
    assert _params(doc, "calc-request") == {"site_id": SITE_ID}
    assert _params(doc, "calc-params")["site_id"] == SITE_ID
    # The same as the POST bodies say (allow-wait-calc: accept_id; calc-start: both).
    for call, name in (("allow-wait-calc", "accept_id"), ("calc-start", "site_id")):
        body = doc["paths"][PREFIX + call]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"]["properties"][name] == _params(doc, "calc-params")[name]


def _not_an_id(server: RunningServer, call: str, value: str) -> bool:
    """Whether the route refused `value` as an accept_id (rather than looking for the calc)."""
    params = {"accept_id": value, "site_id": "site-a"}
    resp = requests.get(
        server.url + PREFIX + call,
        params=params,
        headers=server.headers("alice"),
        verify=str(server.ca_file),
        timeout=30,
    )
    assert resp.status_code < 500, resp.text
    message = str(resp.json()["errors"][0]["message"])
    return "is not a calc id" in message


def valid(schema: dict[str, Any], value: str) -> bool:
    """JSON Schema's verdict with ECMA-262's '$' (the end of the text): Python's jsonschema
    searches with re, whose '$' also matches before a final newline, so "<uuid>\n" would pass
    it; the routes, the body parser and ECMA refuse it."""
    pattern = schema["pattern"]
    return jsonschema.Draft202012Validator(schema).is_valid(value) and bool(
        re.fullmatch(pattern, value)
    )


def disagreements(server: RunningServer, schema: dict[str, Any], values: list[str]) -> list[str]:
    found = []
    for value in values:
        for call in ACCEPT_CALLS:
            refused = _not_an_id(server, call, value)
            if valid(schema, value) == refused:
                says = "refuses" if refused else "takes"
                found.append(f"{call} accept_id={value!r}: the route {says} it")
    return found


def test_edges_agree(server: RunningServer) -> None:
    found = disagreements(server, _params(_served(server), "calc-status")["accept_id"], EDGES)
    assert not found, found


_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.one_of(
        st.from_regex(ACCEPT_ID["pattern"]).filter(str.isprintable),
        st.text(alphabet=st.one_of(_PRINTABLE, st.just("\n")), max_size=40),
        st.text(alphabet="0123456789abcdefABCDEF-c", min_size=30, max_size=38),
    )
)
def test_fuzzed_accept_ids_agree(server: RunningServer, value: str) -> None:
    schema = _params(_served(server), "calc-status")["accept_id"]
    found = disagreements(server, schema, [value])
    assert not found, found


def test_a_pattern_that_drifts_from_the_routes_is_caught(server: RunningServer) -> None:
    """The check can fail: a pattern that also takes upper-case calc ids, and one that no longer
    takes uuids without dashes."""
    loose = {**ACCEPT_ID, "pattern": ACCEPT_ID["pattern"].replace("c-[0-9a-f]", "c-[0-9a-fA-F]")}
    assert loose != ACCEPT_ID
    assert disagreements(server, loose, ["c-" + "AB" * 16])
    strict = {**ACCEPT_ID, "pattern": ACCEPT_ID["pattern"].replace("-?", "-")}
    assert re.fullmatch(strict["pattern"], UUID)
    assert disagreements(server, strict, [UUID.replace("-", "")])


def test_site_id_empty_or_unknown_is_refused_and_a_served_one_taken(server: RunningServer) -> None:
    def answer(site: str) -> tuple[int, Any]:
        resp = requests.get(
            f"{server.url}{PREFIX}calc-request",
            params={"site_id": site},
            headers=server.headers("alice"),
            verify=str(server.ca_file),
            timeout=30,
        )
        return resp.status_code, resp.json()["errors"][0].get("error")

    checker = jsonschema.Draft202012Validator(_params(_served(server), "calc-request")["site_id"])
    assert not checker.is_valid("") and answer("") == (400, "unknown_site")
    assert checker.is_valid("site-a") and answer("site-a")[1] != "unknown_site"
