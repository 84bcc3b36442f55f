"""The served OpenAPI document lists exactly the app's routes."""

from __future__ import annotations

import re
from pathlib import Path

import requests

from tests.webapi.conftest import RunningServer
from webapi.server.app import create_app
from webapi.server.auth import UserStore
from webapi.server.config import ConfigSource, ServerConfig
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
