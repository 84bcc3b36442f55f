"""Progress calls of the original protocol follow the original's order: a call out of order is
refused (409, nothing changes); a repeat of the step the calc is at answers ok, changing nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.webapi.apihelp import Api, snapshot
from tests.webapi.conftest import RunningServer
from tests.webapi.mint_standin import JP_STDERR, JP_STDOUT, OriginalPoller
from tests.webapi.mintfix import MintEnv, make_env
from webapi.mint.codec.ids import calc_id_of

RESULTS = {
    "out.txt": {"content": "QUJD", "mimetype1": "text/plain;", "mimetype2": "charset=us-ascii"},
    JP_STDOUT: {"content": "", "mimetype1": "inode/x-empty;", "mimetype2": "charset=binary"},
    JP_STDERR: {"content": "", "mimetype1": "Error", "mimetype2": "no such file"},
}
# Every poller call after calc-params, with a body it would be accepted with in its turn.
CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "calc-params-complete": ("calc-params-complete", {}),
    "calc-start": ("calc-start", {}),
    "calc-end": ("calc-end", {"result": "calc end"}),
    "calc-end abnormal": ("calc-end", {"result": "abnormal"}),
    "send-results": ("send-results", {"result_files": RESULTS}),
    "end-send": ("end-send", {"result": "end send"}),
}


@pytest.fixture
def env(make_api_server: Callable[..., RunningServer], tmp_path: Path) -> MintEnv:
    return make_env(make_api_server, tmp_path)


def _taken(env: MintEnv, poller: OriginalPoller) -> str:
    """A calc taken with calc-params, its claim confirmed (so nothing moves on its own)."""
    aid = env.wf().submit(env.commands["ok.sh"], {"in.txt": b"abc"}, ["out.txt"])
    assert aid is not None
    poller.ignore_next = False
    assert poller.request() == aid and poller.params(aid) is not None
    api = Api(env.server, "mia")
    deadline = time.monotonic() + 10
    while api.get(str(calc_id_of(aid)))["lease"]["expires"] < "2100":
        assert time.monotonic() < deadline, "the claim was never confirmed"
        time.sleep(0.05)
    return aid


def _post(poller: OriginalPoller, aid: str, call: str) -> tuple[int, dict[str, Any]]:
    name, extra = CALLS[call]
    resp = poller.call("POST", name, json={**poller.ids(aid), **extra})
    return resp.status_code, poller.first(resp)


def _look(env: MintEnv, aid: str) -> tuple[str, str, dict[str, Any], dict[str, bytes]]:
    """The calc as every reader sees it: calc-progress, calc-status, the native API, the disk."""
    wf = env.wf()
    progress = wf.first(wf.call("GET", "calc-progress", params={"accept_id": aid}))["message"]
    status = wf.first(wf.call("GET", "calc-status", params={"accept_id": aid}))["message"]
    calc = Api(env.server, "mia").get(str(calc_id_of(aid)))
    return progress, status, calc, snapshot(env.server.data_dir)


# (the progress reached, the call that reaches it, the calls refused there, the call to send next)
WALK = [
    (
        "sending params",
        None,
        ["calc-start", "calc-end", "calc-end abnormal", "send-results", "end-send"],
        "calc-params-complete",
    ),
    ("complete send", "calc-params-complete", ["send-results", "end-send"], "calc-start"),
    ("running", "calc-start", ["calc-params-complete", "send-results", "end-send"], "calc-end"),
    (
        "calc end",
        "calc-end",
        ["calc-params-complete", "calc-start", "calc-end abnormal", "end-send"],
        "send-results",
    ),
    (
        "got return",
        "send-results",
        ["calc-params-complete", "calc-start", "calc-end", "calc-end abnormal", "send-results"],
        "end-send",
    ),
]


def test_calls_out_of_order_are_refused_and_change_nothing(env: MintEnv) -> None:
    poller = env.poller()
    aid = _taken(env, poller)
    for progress, step, refused, next_call in WALK:
        if step is not None:
            status, first = _post(poller, aid, step)
            assert (status, first["code"]) == (200, 200), first
        before = _look(env, aid)
        assert before[0] == f"status:{progress}"
        for call in refused:
            status, first = _post(poller, aid, call)
            message = first["message"]
            assert (status, first["code"], first["error"]) == (409, 409, "conflict"), (call, first)
            assert f"'{progress}'" in message and f"{next_call} next" in message, (call, message)
            assert message.startswith(f"{CALLS[call][0]}: ") and "nothing" in message
            assert _look(env, aid) == before, f"{call} at {progress!r} changed the calc"
    assert _post(poller, aid, "end-send")[0] == 200
    assert Api(env.server, "mia").get(str(calc_id_of(aid)))["state"] == "succeeded"


def test_repeats_answer_ok_and_change_nothing(env: MintEnv) -> None:
    poller = env.poller()
    aid = _taken(env, poller)
    for call, progress in (
        ("calc-params-complete", "complete send"),
        ("calc-start", "running"),
        ("calc-end abnormal", "calc end"),
    ):
        first_answer = _post(poller, aid, call)
        assert first_answer[0] == 200
        before = _look(env, aid)
        assert before[0] == f"status:{progress}"
        assert _post(poller, aid, call) == first_answer  # a lost answer, asked again
        assert _look(env, aid) == before, f"a repeated {call} changed the calc"
    # calc-end again but with the other result: refused, the first verdict stands.
    before = _look(env, aid)
    status, first = _post(poller, aid, "calc-end")
    assert status == 409 and "'abnormal'" in first["message"], first
    assert "send-results next" in first["message"]
    assert _look(env, aid) == before and before[1] == "status:abnormal"
    assert _post(poller, aid, "send-results")[0] == 200
    assert _post(poller, aid, "end-send")[0] == 200
    before = _look(env, aid)
    assert _post(poller, aid, "end-send")[0] == 200
    assert _look(env, aid) == before
    assert before[2]["state"] == "failed" and before[:2] == ("status:got return", "status:abnormal")


def test_calc_end_straight_after_complete_send(env: MintEnv) -> None:
    """Our own poller ends a calc it refused to start this way: never calc-start."""
    poller = env.poller()
    aid = _taken(env, poller)
    assert _post(poller, aid, "calc-params-complete")[0] == 200
    status, first = _post(poller, aid, "calc-end abnormal")
    assert status == 200, first
    assert _look(env, aid)[:2] == ("status:calc end", "status:abnormal")
    assert _post(poller, aid, "send-results")[0] == 200
    assert _post(poller, aid, "end-send")[0] == 200
    assert Api(env.server, "mia").get(str(calc_id_of(aid)))["state"] == "failed"


def test_racing_calc_ends_agree_with_the_outcome(env: MintEnv) -> None:
    """Two verdicts sent at once: one wins, and only the answers that agree with it say ok."""
    poller = env.poller()
    aid = _taken(env, poller)
    assert _post(poller, aid, "calc-params-complete")[0] == 200
    assert _post(poller, aid, "calc-start")[0] == 200
    answers: list[tuple[str, int]] = []
    go = threading.Barrier(16)

    def send(call: str) -> None:
        go.wait()
        answers.append((call, _post(poller, aid, call)[0]))

    threads = [
        threading.Thread(target=send, args=("calc-end" if i % 2 else "calc-end abnormal",))
        for i in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    _progress, status, _calc, _disk = _look(env, aid)
    won = "calc-end abnormal" if status == "status:abnormal" else "calc-end"
    assert len(answers) == 16
    assert sorted(code for call, code in answers if call == won) == [200] * 8
    assert sorted(code for call, code in answers if call != won) == [409] * 8
