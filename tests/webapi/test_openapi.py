"""The served OpenAPI document lists exactly the app's routes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import requests

from tests.webapi.conftest import RunningServer
from webapi.server.app import create_app
from webapi.server.auth import UserStore
from webapi.server.config import ConfigSource, ServerConfig
from webapi.server.routing import DRAIN_KNOWN_BYTES, MAX_JSON_BYTES
from webapi.server.status.routes import PREFIX as STATUS_PREFIX
from webapi.store.yaml_store import YamlJobStore


def test_document_matches_routes(tmp_path: Path) -> None:
    conf = ServerConfig(data_dir=tmp_path, users_file=tmp_path / "users.yml")
    app = create_app(YamlJobStore(tmp_path), ConfigSource.fixed(conf), UserStore(conf.users_file))
    # The status page (HTML for people, docs/operations.md) is not part of the JSON API.
    api_routes = [r for r in app.routes if not r.rule.startswith(STATUS_PREFIX)]
    routes = {(r.method.lower(), re.sub(r"<(\w+)(:\w+)?>", r"{\1}", r.rule)) for r in api_routes}
    from webapi.contract.openapi import openapi_document

    doc = openapi_document()
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == routes
    assert doc["openapi"].startswith("3.1")


def test_served_and_public(api_server: RunningServer) -> None:
    resp = requests.get(
        f"{api_server.url}/api/v1/openapi.json", verify=str(api_server.ca_file), timeout=10
    )
    assert resp.status_code == 200 and "/api/v1/calcs" in resp.json()["paths"]


def test_request_schemas_have_the_parsers_keys() -> None:
    from webapi.contract.schemas import REQUEST_SCHEMAS

    for name, (schema, keys) in REQUEST_SCHEMAS.items():
        assert set(schema["properties"]) == set(keys), name
        assert set(schema["required"]) <= set(keys), name


def test_answers_validate_against_their_schemas() -> None:
    import jsonschema

    from webapi.contract.calc import CalcState, CalcView, FileEntry, LeaseView

    doc = openapi_document_for_validation()
    view = CalcView(
        id="c-" + "a" * 32,
        user="alice",
        site="site-a",
        command="sample",
        args=("x",),
        state=CalcState.RUNNING,
        created=1.0,
        updated=2.0,
        inputs=(FileEntry("in.txt", 3, "b" * 64, 3),),
        lease=LeaseView("p1", 3.0),
    )
    # The components sit at the root of this schema, so its '#/components/...' refs resolve.
    calc_schema = {**doc["components"]["schemas"]["Calc"], "components": doc["components"]}
    jsonschema.validate(view.to_json(), calc_schema)
    broken = {**view.to_json(), "state": "sleeping"}
    try:
        jsonschema.validate(broken, calc_schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("an unknown state passed the Calc schema")


def openapi_document_for_validation() -> dict[str, Any]:
    from webapi.contract.openapi import openapi_document

    return openapi_document()


def test_a_too_large_json_body_gets_its_413(api_server: RunningServer) -> None:
    """Found by schemathesis' coverage phase: a JSON body over the 1 MiB limit was refused
    unread, and cheroot closes the connection on a 413, so the client, still sending, often saw
    a reset instead of the 413 the document declares. The server now reads such a body (up to
    4 MiB) before answering. Several tries: without the fix, most of them fail."""
    body = json.dumps({"site": "site-a", "command": "sample", "args": ["0" * (7 << 19)]})
    assert MAX_JSON_BYTES < len(body) < DRAIN_KNOWN_BYTES
    for _ in range(4):
        resp = requests.post(
            f"{api_server.url}/api/v1/calcs",
            data=body,
            headers={**api_server.headers("alice"), "Content-Type": "application/json"},
            verify=str(api_server.ca_file),
            timeout=30,
        )
        assert resp.status_code == 413 and resp.json()["error"] == "too_large", resp.text
