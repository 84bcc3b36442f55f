"""Files the original protocol decodes are moved into the calc, not copied: nothing is left in
staging or as a part file, and a staging dir on another file system still works (copied)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.tmpfs import small_tmpfs
from tests.webapi.conftest import RunningServer
from tests.webapi.mint_standin import PollerThread
from tests.webapi.mintfix import MintEnv, make_env
from webapi.contract.calc import CalcState, FileEntry
from webapi.mint.codec.ids import calc_id_of
from webapi.store.base import NewCalcRequest
from webapi.store.yaml_store import YamlJobStore


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def env(make_api_server: Callable[..., RunningServer], tmp_path: Path) -> MintEnv:
    return make_env(make_api_server, tmp_path)


def test_original_protocol_files_land_whole_with_nothing_left_behind(
    env: MintEnv, tmp_path: Path
) -> None:
    data = os.urandom(3 << 20)
    (tmp_path / "wf").mkdir()
    with PollerThread(env.poller()) as _poller:
        res = env.wf().run(env.commands["ok.sh"], {"in.txt": data}, ["out.txt"], tmp_path / "wf")
    assert res.exit_code == 0 and res.status == "completed"
    assert (tmp_path / "wf" / "out.txt").read_bytes() == data
    calc_dir = env.server.data_dir / "calcs" / str(calc_id_of(res.accept_id))
    assert sha((calc_dir / "inputs" / "in.txt").read_bytes()) == sha(data)
    assert sha((calc_dir / "results" / "out.txt").read_bytes()) == sha(data)
    # Staged files were renamed into the calc: no staging dir, no part file stays behind.
    staging = env.server.data_dir / "mint-staging"
    assert not staging.exists() or list(staging.iterdir()) == []
    assert [p for p in (calc_dir / "parts").rglob("*") if p.is_file()] == []


@pytest.mark.root
def test_a_file_on_another_file_system_is_copied_instead(tmp_path: Path) -> None:
    store = YamlJobStore(tmp_path / "data")
    data = os.urandom(5 << 20)
    req = NewCalcRequest(
        "alice", "site-a", "sample", (), (FileEntry("in.bin", len(data), sha(data)),)
    )
    calc, _ = store.create(req, quota_bytes=0)
    with small_tmpfs(tmp_path / "other", 16) as other:
        source = other / "staged.bin"
        source.write_bytes(data)
        calc, entry = store.adopt_file(calc.id, "inputs", "in.bin", source, sha(data), None)
        assert entry.complete and calc.state is CalcState.QUEUED
        final = store.calc_dir(calc.id) / "inputs" / "in.bin"
        assert final.read_bytes() == data and source.exists()  # the caller removes its copy
    store.close()
