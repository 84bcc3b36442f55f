"""The poller's one state store: records of both protocols, the unfinished-work index, version
0.1 records upgraded in place, and one owner per protocol."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from webapi.contract.calc import FileEntry
from webapi.errors import ConfigError
from webapi.poller.state import CalcRecord, Phase, StateDir

SHA = "cd" * 32


def test_records_of_both_protocols_and_the_pending_index(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    native = state.save(
        CalcRecord("c-" + "1" * 32, "native", "s", results=(FileEntry("o", 1, SHA),))
    )
    mint = state.save(CalcRecord("a1b2-c3", "mint", "s", wanted=("out.txt",)))
    assert [r.key for r in state.pending("native")] == [native.key]
    assert [r.key for r in state.pending("mint")] == [mint.key]
    state.save(native.with_(phase=Phase.DONE))
    assert state.pending("native") == []
    # A fresh reader (e.g. after a restart) sees the same thing from the files.
    again = StateDir(tmp_path)
    assert [r.key for r in again.pending()] == [mint.key]
    assert again.load(native.key) is not None and again.load(native.key).phase is Phase.DONE
    assert again.load(mint.key) == mint


def test_acks_are_recorded_once(tmp_path: Path) -> None:
    record = CalcRecord("k", "mint", "s").ack("calc-params").ack("calc-params").ack("calc-start")
    assert record.acked == ("calc-params", "calc-start")


@pytest.mark.parametrize("key", ["", "../x", ".hidden", "~tmp-1", "a/b", "a\x00b"])
def test_unsafe_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="unsafe"):
        StateDir(tmp_path).save(CalcRecord(key, "native", "s"))


def test_version_0_1_records_are_read_and_adopted(tmp_path: Path) -> None:
    native = {
        "calc_id": "c-" + "2" * 32,
        "command": "sample",
        "args": ["1"],
        "lease_id": "l-1",
        "heartbeat": 5.0,
        "phase": "exited",
        "timeout": None,
        "work_dir": "/w",
        "pid": 12,
        "job_id": None,
        "started": 1.0,
        "kill_reason": None,
        "exit_code": 0,
        "reason": None,
        "results": [{"name": "o", "size": 1, "sha256": SHA}],
        "finish_acked": True,
        "uploaded": ["o"],
        "runs": 1,
        "updated": 2.0,
    }
    (tmp_path / f"{native['calc_id']}.json").write_text(json.dumps(native))
    (tmp_path / "mint").mkdir()
    old_mint = {
        "accept_id": "0a0b",
        "site": "s",
        "phase": "running",
        "command": "sample",
        "wanted": ["r.txt"],
        "acked": ["calc-params"],
        "pid": 7,
        "job_id": None,
        "started": 1.0,
        "timeout": None,
        "kill_reason": None,
        "exit_code": None,
        "reason": None,
        "result": "",
        "updated": 3.0,
    }
    (tmp_path / "mint" / "0a0b.json").write_text(json.dumps(old_mint))
    state = StateDir(tmp_path)
    pending = {r.key: r for r in state.pending()}
    assert set(pending) == {native["calc_id"], "0a0b"}
    assert pending[native["calc_id"]].acked == ("finish", "result:o")
    assert pending[native["calc_id"]].protocol == "native"
    assert pending["0a0b"].protocol == "mint" and pending["0a0b"].acked == ("calc-params",)
    assert not (tmp_path / "mint" / "0a0b.json").exists() and (tmp_path / "0a0b.json").exists()


def test_one_owner_per_protocol(tmp_path: Path) -> None:
    first = StateDir(tmp_path)
    first.claim_ownership("native")
    with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
        StateDir(tmp_path).claim_ownership("native")
    other = StateDir(tmp_path)
    other.claim_ownership("mint")  # the other protocol's poller may share the dir
    first.release_ownership()
    StateDir(tmp_path).claim_ownership("native")


def test_prune_keeps_unfinished_and_recent(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    old, new, live = (CalcRecord(k, "native", "s") for k in ("old", "new", "live"))
    state.save(old.with_(phase=Phase.DONE))
    state.save(new.with_(phase=Phase.DROPPED))
    state.save(live)
    leftover = tmp_path / "~tmp-abc"
    leftover.write_text("{")
    past = time.time() - 100
    os.utime(leftover, (past, past))
    record = json.loads((tmp_path / "old.json").read_text())
    record["updated"] = past
    (tmp_path / "old.json").write_text(json.dumps(record))
    assert state.prune(time.time() - 50) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.json", "new.json"]


def test_claims_never_read_finished_records_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before each claim the loop asks for pending work and looks the new calc up: with
    thousands of finished records in the dir, neither may read them (issue 14: rounds slowed
    down as the state dir filled)."""
    from webapi.poller import state as state_mod

    old = StateDir(tmp_path)
    finished = {
        old.save(CalcRecord(f"c-{i:032x}", "native", "s", phase=Phase.DONE)).key for i in range(40)
    }
    open_one = old.save(CalcRecord("c-" + "f" * 32, "native", "s"))
    reads: list[str] = []
    real = state_mod._read

    def counting(path: Path) -> CalcRecord | None:
        reads.append(path.stem)
        return real(path)

    monkeypatch.setattr(state_mod, "_read", counting)
    state = StateDir(tmp_path)  # a restarted poller: one scan of the dir
    assert [r.key for r in state.pending("native")] == [open_one.key]
    reads.clear()
    for i in range(20):
        assert [r.key for r in state.pending("native")] == [open_one.key]
        key = f"c-{i + 100:032x}"
        assert state.load(key) is None  # the claim path's "was it ours before?"
        state.save(CalcRecord(key, "native", "s").with_(phase=Phase.DONE))
    assert not set(reads) & finished
    assert len(reads) == 20  # one look-up per new calc (its file does not exist yet)
