"""The store's indexes beside another process: an admin process requeues a final calc the
owner's finals index vouched for, and a kill -9 between a record and its index update."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.unit.webapi.test_store_index import assert_finds_all, listed, populate
from webapi.contract.calc import CalcState
from webapi.store import finals
from webapi.store.yaml_store import YamlJobStore

REPO = Path(__file__).resolve().parents[2]


def run_child(root: Path, body: str) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from tests.unit.webapi.test_store_index import new_calc, succeed
        from webapi.store import yaml_store
        from webapi.store.yaml_store import YamlJobStore
        root = Path({str(root)!r})
        def die_after_the_next_record_write():
            real = yaml_store.write_yaml_atomic
            def write_then_die(path, doc, mode=0o644):
                real(path, doc, mode)
                os.kill(os.getpid(), signal.SIGKILL)
            yaml_store.write_yaml_atomic = write_then_die
        """
    ) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_second_process_requeues_a_final_calc_the_owners_index_vouched_for(
    tmp_path: Path,
) -> None:
    store = YamlJobStore(tmp_path)
    truth = populate(store)
    target = sorted(truth[CalcState.SUCCEEDED])[0]
    store.save_finals()
    done = run_child(
        tmp_path,
        f"""
        admin = YamlJobStore.beside_server(root)
        assert not admin.owner.held
        print(admin.requeue({target!r}).state)
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "queued"
    truth[CalcState.SUCCEEDED].discard(target)
    truth[CalcState.QUEUED].add(target)
    assert_finds_all(store, truth)
    store.close()  # writes the owner's finals index, its entry for `target` now stale
    again = YamlJobStore(tmp_path)
    assert_finds_all(again, truth)
    got = again.claim(site="site-a", user="alice", poller="p", wait=0)
    assert got is not None and got.id == target


@pytest.mark.drill
def test_kill_9_between_the_record_and_its_index_is_repaired_at_the_next_open(
    tmp_path: Path,
) -> None:
    """The real fault: the process that requeues a final calc dies by SIGKILL right after
    calc.yaml is replaced, before a marker is written and with the finals index stale."""
    done = run_child(
        tmp_path,
        """
        store = YamlJobStore(root)
        calc = succeed(store, new_calc(store))
        store.close()
        store = YamlJobStore(root)
        die_after_the_next_record_write()
        print(calc.id, flush=True)
        store.requeue(calc.id)
        """,
    )
    assert done.returncode == -9, done.stderr
    calc_id = done.stdout.strip()
    assert calc_id in finals.load(tmp_path)  # the index still says final ...
    assert not list((tmp_path / "queues").rglob("*-c-*"))  # ... and no queue marker
    store = YamlJobStore(tmp_path)
    assert listed(store, CalcState.QUEUED) == {calc_id}
    got = store.claim(site="site-a", user="alice", poller="p", wait=0)
    assert got is not None and got.id == calc_id
    assert calc_id not in finals.load(tmp_path)
