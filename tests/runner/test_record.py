"""Step records keep absolute paths; an old record's relative ones are made absolute on load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runner.driver import load_record
from runner.errors import UsageError
from runner.record import StepStore
from runner.steps import HostSpec, StepSpec


def make_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[StepStore, str, Path]:
    """A step made in tmp_path/first with relative paths, its record rewritten as 0.1 wrote it."""
    first = tmp_path / "first"
    first.mkdir()
    for name in ("key", "kh", "in.txt"):
        (first / name).write_text("x\n")
    monkeypatch.chdir(first)
    spec = StepSpec(
        host=HostSpec.parse("u@h:22", key=Path("key"), known_hosts=Path("kh")),
        results_dir=Path("out"),
        inputs=(Path("in.txt"),),
    )
    store = StepStore()
    record = store.new(spec)
    assert record.cwd == str(first)
    assert record.spec["results_dir"] == str(first / "out")
    assert record.spec["host"]["key"] == str(first / "key")
    assert record.spec["inputs"] == [str(first / "in.txt")]
    path = store.step_dir(record.step_id) / "record.yaml"
    data = yaml.safe_load(path.read_text())
    del data["cwd"]
    data["spec"]["host"].update(key="key", known_hosts="kh")
    data["spec"].update(results_dir="out", inputs=["in.txt"])
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return store, record.step_id, first


def test_old_record_elsewhere_is_a_usage_error_and_stays_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, step_id, _ = make_step(tmp_path, monkeypatch)
    before = (store.step_dir(step_id) / "record.yaml").read_text()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="from that dir") as info:
        load_record(store, step_id)
    assert info.value.exit_code == 2
    assert (store.step_dir(step_id) / "record.yaml").read_text() == before


def test_old_record_in_its_own_dir_gets_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, step_id, first = make_step(tmp_path, monkeypatch)
    record = load_record(store, step_id)
    assert record.cwd == str(first)
    assert record.step_spec().results_dir == first / "out"
    assert store.load(step_id).spec["host"]["known_hosts"] == str(first / "kh")
