"""Counts and purges from the finals index beside other processes and after kill -9: a
second process requeues a final calc the owner's index (in memory, or finals.json on disk)
vouches for, and a process dies between a record's write and its index update. Nothing is
lost, no count is wrong, no calc that is not final is purged."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.unit.webapi.test_store_counts import truth
from tests.unit.webapi.test_store_index import populate
from tests.webapi.test_drill_store_index import run_child
from webapi.contract.calc import CalcState
from webapi.store import finals
from webapi.store.retention import RetentionRule
from webapi.store.yaml_store import YamlJobStore


@pytest.mark.drill
def test_kill_9_after_a_final_record_is_rewritten_leaves_no_wrong_count(tmp_path: Path) -> None:
    """The requeueing process dies by SIGKILL right after calc.yaml is replaced: finals.json
    still says "succeeded"; the next owner's census and purge must see a queued calc."""
    done = run_child(
        tmp_path,
        """
        store = YamlJobStore(root)
        calcs = [succeed(store, new_calc(store)) for _ in range(3)]
        store.close()
        store = YamlJobStore(root)
        die_after_the_next_record_write()
        print(calcs[0].id, flush=True)
        store.requeue(calcs[0].id)
        """,
    )
    assert done.returncode == -9, done.stderr
    calc_id = done.stdout.strip()
    assert finals.load(tmp_path)[calc_id].state == "succeeded"  # the index is stale
    store = YamlJobStore(tmp_path)
    counts = store.census().by_user
    assert counts["site-a", "queued", "alice"] == 1
    assert counts["site-a", "succeeded", "alice"] == 2
    assert Counter(counts) == truth(store)
    report = store.purge(lambda _site: RetentionRule(max_age_seconds=0))
    assert calc_id not in {p.id for p in report.calcs} and len(report.calcs) == 2
    assert store.get(calc_id).state is CalcState.QUEUED


@pytest.mark.drill
def test_a_second_process_changes_calcs_the_owners_index_vouches_for(tmp_path: Path) -> None:
    owner = YamlJobStore(tmp_path)
    expected = populate(owner)
    owner.save_finals()  # finals.json on disk, as an admin process beside the owner reads it
    owner.census()  # the owner has counted everything once: later counts are incremental
    target = min(expected[CalcState.SUCCEEDED], key=lambda cid: owner.get(cid).updated)
    newest = max(expected[CalcState.SUCCEEDED], key=lambda cid: owner.get(cid).updated)
    done = run_child(
        tmp_path,
        f"""
        from webapi.store.retention import RetentionRule
        admin = YamlJobStore.beside_server(root)
        assert not admin.owner.held
        admin.requeue({target!r})
        admin.requeue({newest!r})
        # Its finals.json still calls both final (6 on site-a); truly 4 are: none is over 4.
        report = admin.purge(lambda _site: RetentionRule(keep=4))
        print(" ".join(sorted(p.id for p in report.calcs)))
        print(admin.census().by_user.get(("site-a", "succeeded", "alice"), 0))
        """,
    )
    assert done.returncode == 0, done.stderr
    purged_line, admin_count = done.stdout.splitlines()
    assert purged_line == ""
    assert int(admin_count) == len(expected[CalcState.SUCCEEDED]) - 2
    counts = owner.census().by_user
    assert Counter(counts) == truth(owner)
    assert counts["site-a", "queued", "alice"] == 2
    owner.close()
    again = YamlJobStore(tmp_path)
    assert Counter(again.census().by_user) == truth(again)
