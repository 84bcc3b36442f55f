"""Fault drills of the original protocol: two original pollers of one user on one site (the
normal way to add capacity), and a calc-params answer lost on the way."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.webapi.apihelp import Api
from tests.webapi.conftest import RunningServer
from tests.webapi.mintfix import make_env, write_scripts
from webapi.mint.codec.ids import calc_id_of

pytestmark = pytest.mark.drill


def test_two_original_pollers_run_every_calc_once(
    make_api_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    runs = tmp_path / "runs.log"
    env = make_env(make_api_server, tmp_path)
    # A program that notes each run outside its calc dir, then takes a moment.
    script = tmp_path / "scripts" / "count.sh"
    script.write_text(f"#!/bin/sh\necho run >> {runs}\nsleep 0.3\ncat in.txt > out.txt\n")
    script.chmod(0o755)
    write_scripts(tmp_path / "scripts")
    conf = env.server.config_path.read_text().replace(
        env.commands["ok.sh"], env.commands["ok.sh"] + "\n    - " + str(script), 1
    )
    env.server.config_path.write_text(conf)
    wf = env.wf()
    ids = [wf.submit(str(script), {"in.txt": f"{i}".encode()}, ["out.txt"]) for i in range(3)]
    assert all(ids)
    one, two = env.poller(), env.poller()
    one.ignore_next = two.ignore_next = False
    for aid in ids:
        assert aid is not None
        # Both see the calc offered (calc-request only offers it); one takes it with
        # calc-params, and the other's calc-params a moment later must not get it too.
        first, second = (one, two) if ids.index(aid) % 2 == 0 else (two, one)
        assert first.request() == aid and second.request() == aid
        info = first.params(aid)
        assert info is not None
        assert second.params(aid) is None
        first.call("POST", "calc-params-complete", json=first.ids(aid))
        first.call("POST", "calc-start", json=first.ids(aid))
        result, files = first.run_program(aid, info)
        first.call("POST", "calc-end", json={**first.ids(aid), "result": result})
        first.call("POST", "send-results", json={**first.ids(aid), "result_files": files})
        first.call("POST", "end-send", json={**first.ids(aid), "result": "end send"})
        assert wf.wait_for(aid, "calc-progress", ("got return",), 60) == "got return"
    assert runs.read_text().count("run") == len(ids)


def test_a_lost_calc_params_answer_gives_the_calc_back(
    make_api_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """The poller that took a calc never got the answer (the connection broke): no second
    poller gets it meanwhile, and once the claim's confirmation window has passed the calc is
    offered again, without losing an attempt."""
    env = make_env(make_api_server, tmp_path, legacy_confirm_seconds=2, reaper_seconds=0.2)
    wf, api = env.wf(), Api(env.server, "mia")
    # Big enough that the answer cannot all sit in socket buffers when the poller hangs up.
    aid = wf.submit(env.commands["ok.sh"], {"in.txt": b"x" * 16_000_000}, ["out.txt"])
    assert aid is not None
    lost, other = env.poller(), env.poller()
    lost.ignore_next = other.ignore_next = False
    assert lost.request() == aid
    # Read the first bytes of the calc-params answer, then drop the connection.
    resp = requests.get(
        lost.root + "calc-params",
        params=lost.ids(aid),
        headers=lost.headers,
        verify=lost.verify,
        stream=True,
        timeout=30,
    )
    resp.raw.read(1000)
    resp.close()
    calc_id = str(calc_id_of(aid))
    assert api.get(calc_id)["state"] == "running"
    assert other.params(aid) is None  # already taken: never handed out twice
    deadline = time.monotonic() + 20
    while api.get(calc_id)["state"] != "queued":
        assert time.monotonic() < deadline, "the unconfirmed claim never lapsed"
        time.sleep(0.1)
    assert api.get(calc_id)["attempts"] == 0
    assert other.request() == aid and other.process(aid)
    assert wf.wait_for(aid, "calc-progress", ("got return",), 30) == "got return"
