"""Schemathesis against the real server (cheroot, TLS, 127.0.0.1:0) and its own OpenAPI document.

Every operation is fuzzed with positive and negative data (fixed seed, bounded examples) with
real calc ids, file names and a live lease swapped in for part of the cases, so the calc routes
are reached past their 404s; then the stateful run follows the document's links (register ->
get/cancel/requeue, claim -> heartbeat/finish/unclaim); and schemathesis' own CLI runs its
coverage phase (edge cases). Passing means: no 5xx, and every status, content type, header and
body the server answered is one the document declares.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.webapi.conftest import RunningServer

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 15  # per operation and generation mode
SEED = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # fixed seed: the same requests every run
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
IN_DATA, OUT_DATA = b"fuzz input\n", b"fuzz result\n"


@dataclass
class Calcs:
    """Real calcs to aim the fuzzer at, made through the API itself as alice (her own poller)."""

    server: RunningServer

    def call(self, method: str, path: str, user: str = "alice", **kw: Any) -> requests.Response:
        resp = requests.request(
            method,
            self.server.url + path,
            headers=self.server.headers(user),
            verify=str(self.server.ca_file),
            timeout=30,
            **kw,
        )
        assert resp.status_code < 300, resp.text
        return resp

    def register(self, inputs: bytes | None = None) -> str:
        manifest = []
        if inputs is not None:
            digest = hashlib.sha256(inputs).hexdigest()
            manifest = [{"name": "in.txt", "size": len(inputs), "sha256": digest}]
        body = {"site": "site-a", "command": "sample", "inputs": manifest}
        calc_id: str = self.call("POST", "/api/v1/calcs", json=body).json()["id"]
        return calc_id

    def running(self) -> tuple[str, str]:
        """A fresh calc claimed by alice's poller: its id and lease id."""
        calc_id = self.register()
        while True:  # claims the oldest first: take until ours comes (others stay claimed)
            grant = self.call("POST", "/api/v1/sites/site-a/claim", json={"wait": 0}).json()
            if grant["calc"]["id"] == calc_id:
                return calc_id, grant["lease"]["id"]

    def finished(self) -> str:
        """A succeeded calc with an input and a result file."""
        calc_id = self.register(IN_DATA)
        self.call("PUT", f"/api/v1/calcs/{calc_id}/inputs/in.txt", data=IN_DATA)
        _id, lease = self.running_of(calc_id)
        digest = hashlib.sha256(OUT_DATA).hexdigest()
        report = {
            "lease": lease,
            "exit_code": 0,
            "results": [{"name": "out.txt", "size": len(OUT_DATA), "sha256": digest}],
        }
        self.call("POST", f"/api/v1/calcs/{calc_id}/finish", json=report)
        self.call("PUT", f"/api/v1/calcs/{calc_id}/results/out.txt?lease={lease}", data=OUT_DATA)
        return calc_id

    def awaiting_result(self) -> tuple[str, str]:
        """A running calc that has declared its result out.txt and waits for its upload."""
        calc_id, lease = self.running()
        digest = hashlib.sha256(OUT_DATA).hexdigest()
        report = {
            "lease": lease,
            "exit_code": 0,
            "results": [{"name": "out.txt", "size": len(OUT_DATA), "sha256": digest}],
        }
        self.call("POST", f"/api/v1/calcs/{calc_id}/finish", json=report)
        return calc_id, lease

    def running_of(self, calc_id: str) -> tuple[str, str]:
        while True:
            grant = self.call("POST", "/api/v1/sites/site-a/claim", json={"wait": 0}).json()
            if grant["calc"]["id"] == calc_id:
                return calc_id, grant["lease"]["id"]


@pytest.fixture
def fuzz_server(make_api_server: Callable[..., RunningServer]) -> Iterator[RunningServer]:
    # claim_wait_max 0: a fuzzed `wait` must not hold the run for seconds.
    yield make_api_server(claim_wait_max=0, lease_seconds=600, heartbeat_seconds=60)


def _served(server: RunningServer) -> dict[str, Any]:
    """The document as the server serves it (the original protocol's bodies merged in)."""
    resp = requests.get(f"{server.url}/api/v1/openapi.json", verify=str(server.ca_file), timeout=30)
    doc: dict[str, Any] = resp.json()
    return doc


def _schema(server: RunningServer) -> Any:
    schema = schemathesis.openapi.from_dict(_served(server))
    schema.config.update(base_url=server.url)
    return schema


class Aim:
    """Swap real ids into part of the generated cases (the rest keep theirs: the 404 paths)."""

    def __init__(self, calcs: Calcs) -> None:
        self.calcs = calcs
        self.turn = itertools.count()
        self.done = calcs.finished()

    def __call__(self, case: Any) -> None:
        turn = next(self.turn)
        params = case.path_parameters or {}
        body = case.body if isinstance(case.body, dict) else None
        path = case.operation.path
        if "calc_id" in params:
            mode = turn % 4
            if mode == 1 and case.method == "PUT" and "/results/" in path and turn % 8 == 5:
                calc_id, lease = self.calcs.awaiting_result()
                params.update(calc_id=calc_id, name="out.txt")
                case.body, case.query = OUT_DATA, {"offset": 0, "lease": lease}
            elif mode == 1:
                calc_id, lease = self.calcs.running()
                params["calc_id"] = calc_id
                if body is not None and "lease" in body:
                    body["lease"] = lease
                if case.query and "lease" in case.query:
                    case.query["lease"] = lease
            elif mode == 2:
                params["calc_id"] = self.done
            elif mode == 3:
                params["calc_id"] = self.calcs.register(IN_DATA)
                if path.endswith("/inputs/{name}") and turn % 8 == 7:
                    case.body, case.query = IN_DATA, {"offset": 0}
            if "name" in params and mode in (2, 3) and turn % 8 >= 4:
                params["name"] = "out.txt" if "/results/" in path else "in.txt"
        elif path.startswith("/api/v1/sites/") and turn % 2:
            params["site"] = "site-a"
        elif path == "/api/v1/calcs" and body is not None and turn % 2:
            body.update(site="site-a", command="sample")
        elif path == "/api/v1/login" and body is not None and turn % 2:
            body.update(user="alice", password=self.calcs.server.passwords["alice"])
        elif path.startswith("/mi-distcomp-api/") and body is not None and turn % 2:
            # Past "unknown site" to the parsers' deeper checks (types, files, names).
            info = body.get("calc-info")
            if isinstance(info, dict):
                info.update({"command": "sample", "remote-site": "site-a"})
            elif "site_id" in body:
                body["site_id"] = "site-a"


def _headers(server: RunningServer, case: Any) -> dict[str, str]:
    path = case.operation.path
    admin_only = path.startswith("/api/v1/admin/") or path in ("/api/v1/sites", "/metrics")
    user = "admin" if admin_only else "alice"
    return server.headers(user)


def _run(case: Any, server: RunningServer, failures: list[str], seen: set[tuple[str, int]]) -> None:
    response = None
    try:
        response = case.call(headers=_headers(server, case), verify=str(server.ca_file), timeout=30)
        case.validate_response(response, checks=CHECKS)
    except (FailureGroup, requests.RequestException) as exc:  # collect them all, then report
        failures.append(f"{case.operation.label}: {type(exc).__name__}: {str(exc)[:2000]}")
    if response is not None:
        seen.add((case.operation.label, response.status_code))
        failures += _mint_disagreement(case, response)


def _mint_disagreement(case: Any, response: requests.Response) -> list[str]:
    """An original-protocol body the schema accepts must pass its parser (no 400 "bad_request"),
    and one it refuses must not be taken (no 2xx)."""
    if case.method != "POST" or "/mi-distcomp-api/" not in case.operation.path:
        return []
    if not isinstance(case.body, dict):
        return []  # not a JSON object at all: the envelope's own checks (415, 400)
    body_schema = case.operation.definition.raw["requestBody"]["content"]["application/json"]
    valid = jsonschema.Draft202012Validator(body_schema["schema"]).is_valid(case.body)
    try:
        error = response.json()["errors"][0].get("error")
    except (ValueError, KeyError, IndexError, TypeError):
        error = None
    refused = response.status_code == 400 and error == "bad_request"
    if valid and refused:
        return [f"{case.operation.label}: a valid body was refused: {response.text[:300]}"]
    if not valid and response.status_code < 300:
        return [f"{case.operation.label}: an invalid body was taken: {case.body!r}"[:400]]
    return []


def test_every_operation_conforms(fuzz_server: RunningServer) -> None:
    schema = _schema(fuzz_server)
    aim = Aim(Calcs(fuzz_server))
    failures: list[str] = []
    seen: set[tuple[str, int]] = set()
    ran = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @SEED
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case: Any) -> None:
                nonlocal ran
                aim(case)
                ran += 1
                _run(case, fuzz_server, failures, seen)

            try:
                fuzz()
            except Unsatisfiable:
                # Nothing to negate (no parameters, no body): the positive run covers it.
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
    assert ran > 20 * 30, "the fuzzer sent far fewer requests than it should"
    # The real ids reached the calc routes: each of our operations answered a success at least
    # once, and each original-protocol call got past authentication (its bodies are fuzzed
    # against their schemas here, and checked against their parsers below and in
    # test_mint_hostile.py).
    labels = {r.ok().label for r in schema.get_all_operations()}
    ok = {label for label, status in seen if status < 300}
    past_auth = {label for label, status in seen if status != 403}
    mint = {label for label in labels if "/mi-distcomp-api/" in label}
    print("statuses seen:", sorted(seen))
    assert labels - mint - ok == set(), f"never answered 2xx: {sorted(labels - mint - ok)}"
    assert mint - past_auth == set(), f"never got past auth: {sorted(mint - past_auth)}"
    assert not failures, f"{len(failures)} failing requests:\n" + "\n".join(failures[:40])


def test_stateful_links(fuzz_server: RunningServer) -> None:
    schema = _schema(fuzz_server)
    server = fuzz_server
    failures: list[str] = []
    seen: set[tuple[str, int]] = set()

    calcs = Calcs(server)

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            calcs.register()  # a queued calc for this scenario's claims to take

        def before_call(self, case: Any) -> None:
            # Aim registrations and claims at the configured site, so the links have calcs to
            # follow (a random site name is refused before any calc exists).
            if isinstance(case.body, dict) and case.operation.path == "/api/v1/calcs":
                case.body.update(site="site-a", command="sample")
            if case.path_parameters and "site" in case.path_parameters:
                case.path_parameters["site"] = "site-a"
                if isinstance(case.body, dict) and isinstance(case.body.get("commands"), list):
                    case.body["commands"] = ["sample"]  # a claim of a poller that runs it

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": _headers(server, case), "verify": str(server.ca_file)}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            seen.add((case.operation.label, response.status_code))
            try:
                case.validate_response(response, checks=CHECKS)
            except FailureGroup as exc:
                failures.append(f"{case.operation.label}: {type(exc).__name__}: {exc}"[:2000])

    Workflow.run(
        settings=settings(
            max_examples=25,
            stateful_step_count=6,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    assert not failures, f"{len(failures)} failing requests:\n" + "\n".join(failures[:40])
    # A calc id only comes from a link (register -> get, claim -> heartbeat): a 200 proves the
    # links were followed.
    followed = {label for label, status in seen if status == 200 and "{calc_id}" in label}
    assert followed, f"no link was followed: {sorted(seen)}"


def test_coverage_phase_edge_cases(fuzz_server: RunningServer, tmp_path: Path) -> None:
    """schemathesis' own CLI, coverage phase only: boundary values, missing and duplicate
    parameters, wrong types and over-limit bodies for every operation (deterministic). This
    phase found the too-large JSON body answered with a reset instead of its 413."""
    checks = ",".join(check.__name__ for check in CHECKS)
    run = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "run",
            f"{fuzz_server.url}/api/v1/openapi.json",
            "-H", f"Authorization: Bearer {fuzz_server.tokens['alice']}",
            "--tls-verify", str(fuzz_server.ca_file),
            "--phases", "coverage", "--seed", "1", "--checks", checks, "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # it keeps a .schemathesis/ cache in its working dir
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "errored" not in run.stdout, run.stdout[-3000:]


# -- the original protocol's parsers against their schemas ---------------------------------------
# One valid body per call; the test then mutates every member (removed, and replaced by values of
# every JSON type and a few bad strings) and asks the real server. A body the schema accepts must
# get past the parser (any answer but 400 "bad_request"; an unknown calc is a 404 after parsing),
# a body it refuses must be refused by the parser (400 "bad_request"). result_files comes first
# in send-results so that its shape is judged before the (unknown) calc is looked up.
_B64 = base64.b64encode(b"input\n").decode()
_ID = str(uuid.UUID(int=7))
_VALID: dict[str, dict[str, Any]] = {
    "add-calcinfo": {
        "calc-info": {
            "command": "sample",
            "remote-site": "site-a",
            "parameters": "-n 1",
            "parameter_files": {"in.txt": [_B64, "text/plain", "utf-8"]},
            "result_files": {"out.txt": {"content": "", "mimetype1": "", "mimetype2": ""}},
        }
    },
    "allow-wait-calc": {"accept_id": _ID},
    "cancel-wait-calc": {"accept_id": _ID, "delete": "force"},
    "calc-params-complete": {"accept_id": _ID, "site_id": "site-a"},
    "calc-start": {"accept_id": _ID, "site_id": "site-a"},
    "calc-end": {"accept_id": _ID, "site_id": "site-a", "result": "abnormal"},
    "send-results": {
        "result_files": {"out.txt": {"content": _B64, "mimetype1": "text/plain", "mimetype2": ""}},
        "accept_id": _ID,
        "site_id": "site-a",
    },
    "end-send": {"accept_id": _ID, "site_id": "site-a"},
}
_PROBES: tuple[Any, ...] = (None, True, 7, 1.5, "", "x", "a/b", "..", "QQ=", [], ["x"], {})


def _mutants(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[str, Any]]:
    """(what changed, the changed document) for every member and item of `doc`, recursively."""
    members = doc.items() if isinstance(doc, dict) else enumerate(doc)
    for key, value in list(members):
        where = "/".join(map(str, (*path, key)))
        if isinstance(doc, dict):
            yield f"without {where}", _with(doc, key, _DROP)
        for probe in _PROBES:
            if probe != value:
                yield f"{where} = {probe!r}", _with(doc, key, probe)
        if isinstance(value, dict | list) and value:
            for what, changed in _mutants(value, (*path, key)):
                yield what, _with(doc, key, changed)


_DROP = object()


def _with(doc: Any, key: Any, value: Any) -> Any:
    out = copy.deepcopy(doc)
    if value is _DROP:
        del out[key]
    else:
        out[key] = value
    return out


def disagreements(
    server: RunningServer, document: dict[str, Any], calls: tuple[str, ...] = tuple(_VALID)
) -> list[str]:
    """Where the served parsers and `document`'s request schemas disagree, one line each."""
    found = []
    for call in calls:
        valid = _VALID[call]
        path = f"/mi-distcomp-api/{call}"
        schema = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        checker = jsonschema.Draft202012Validator(schema["schema"])
        assert checker.is_valid(valid), f"{call}: the test's valid body is not valid"
        for what, body in [("as valid", valid), *_mutants(valid)]:
            resp = requests.post(
                server.url + path,
                json=body,
                headers=server.headers("alice"),
                verify=str(server.ca_file),
                timeout=30,
            )
            errors = resp.json()["errors"]
            refused = resp.status_code == 400 and errors[0].get("error") == "bad_request"
            if checker.is_valid(body) == refused:
                says = "refuses" if refused else "accepts"
                found.append(f"{call} {what}: the parser {says} it ({resp.status_code} {errors})")
    return found


def test_mint_parsers_agree_with_their_schemas(fuzz_server: RunningServer) -> None:
    document = _served(fuzz_server)
    found = disagreements(fuzz_server, document)
    assert not found, f"{len(found)} disagreements:\n" + "\n".join(found[:30])


def test_a_schema_that_drifts_from_its_parser_is_caught(fuzz_server: RunningServer) -> None:
    """The check above can fail: a required member dropped from a schema (still required by the
    parser), and an enumeration value the parser does not take."""
    document = _served(fuzz_server)
    calc_end = document["paths"]["/mi-distcomp-api/calc-end"]["post"]["requestBody"]
    body = calc_end["content"]["application/json"]["schema"]
    body["required"].remove("site_id")
    body["properties"]["result"]["enum"].append("x")
    found = disagreements(fuzz_server, document, ("calc-end",))
    assert any("calc-end without site_id: the parser refuses" in line for line in found), found
    assert any("calc-end result = 'x': the parser refuses" in line for line in found), found
