"""The original protocol's file bodies on the parser's fast paths, through the real server over
TLS: MIME-wrapped base64 is stored whole with the right sha256, and a disk that fills while a
body is being decoded answers 507 and leaves nothing behind (a real small tmpfs)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.tmpfs import small_tmpfs
from tests.webapi.apihelp import Api, snapshot
from tests.webapi.conftest import RunningServer
from tests.webapi.mintfix import MintEnv, make_env
from webapi.mint.codec.ids import calc_id_of

MIB = 1 << 20


def _add(env: MintEnv, raw: bytes) -> tuple[int, dict[str, object]]:
    resp = env.wf().call("POST", "add-calcinfo", data=raw)
    return resp.status_code, resp.json()["errors"][0]


def _body(env: MintEnv, inner: str) -> bytes:
    info = env.wf().calc_info(env.commands["ok.sh"], {}, ["out.txt"], "")
    info["parameter_files"] = {"in.bin": [inner, "application/octet-stream;", "charset=binary"]}
    return json.dumps({"calc-info": info}).encode()


def test_mime_wrapped_base64_is_stored_whole(
    make_api_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    env = make_env(make_api_server, tmp_path)
    data = os.urandom(3 * MIB + 7)  # over a read block: the line-break runs cross blocks
    wrapped = base64.encodebytes(data).decode()
    for inner in (wrapped, wrapped.replace("\n", "\r\n")):
        status, answer = _add(env, _body(env, inner))
        assert status == 200, answer
        calc_id = str(calc_id_of(answer["accept_id"]))
        entry = Api(env.server, "mia").get(calc_id)["inputs"][0]
        assert entry["size"] == entry["received"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        got = Api(env.server, "mia").call("GET", f"/api/v1/calcs/{calc_id}/inputs/in.bin")
        assert got.status_code == 200 and got.content == data  # the file, not just its record


@pytest.mark.drill
def test_disk_full_while_decoding_answers_507_and_leaves_nothing(
    make_api_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """A body larger than the free space: the staged file fills the tmpfs mid-decode; the answer
    is a 507 envelope, no calc is recorded and the staging dir is gone. Then a small one fits."""
    with small_tmpfs(tmp_path / "small", 16) as small:
        env = make_env(make_api_server, tmp_path, data_dir=str(small / "data"), min_free_bytes=MIB)
        before = snapshot(env.server.data_dir)
        status, answer = _add(env, _body(env, base64.b64encode(os.urandom(24 * MIB)).decode()))
        assert status == 507, answer
        assert "add-calcinfo:" in str(answer["message"]) and "disk" in str(answer["message"])
        assert snapshot(env.server.data_dir) == before
        staging = env.server.data_dir / "mint-staging"
        assert not staging.exists() or list(staging.iterdir()) == []
        assert Api(env.server, "mia").call("GET", "/api/v1/calcs").json()["calcs"] == []
        status, answer = _add(env, _body(env, base64.b64encode(b"fits").decode()))
        assert status == 200, answer
