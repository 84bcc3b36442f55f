"""The local record of a step (spec, phases done, remote state, timings), kept atomically on disk.

`extcomp-ssh status` and `resume` need nothing but this record: it is rewritten (temp file,
fsync, os.replace) after every phase, so a controller killed at any moment leaves a record that
says exactly which phases completed. Its paths are absolute, resolved against the dir it was made
in (kept as `cwd`), so a step resumes from any dir.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from runner.errors import UsageError
from runner.steps import HostSpec, StepSpec

_ID_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-._")


# libyaml's emitter and parser where PyYAML has them: a record is saved after every task, and
# the pure-Python emitter took ~25 ms of CPU per save (the clean waits for the pull's save).
_SafeDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Dumper(_SafeDumper):  # type: ignore[valid-type,misc]
    """Safe YAML that writes our StrEnums (Phase, Outcome) as their plain values."""


_Dumper.add_multi_representer(StrEnum, lambda d, v: d.represent_str(str(v)))


def state_root() -> Path:
    """Where step records live: $EXTCOMP_STATE_DIR, else $XDG_STATE_HOME/mint-extcomp."""
    explicit = os.environ.get("EXTCOMP_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "mint-extcomp"


@dataclass
class StepRecord:
    step_id: str
    spec: dict[str, Any]
    work_id: str
    created: float
    phases_done: list[str] = field(default_factory=list)
    rsync_dir: str | None = None
    remote: dict[str, Any] = field(default_factory=dict)
    bytes_pushed: int = 0
    bytes_pulled: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    outcome: str | None = None
    exit_code: int | None = None
    reason: str = ""
    runs: int = 0
    connected: bool = False
    # The dir the record was made in. Records written before 0.2 have none, and may hold paths
    # relative to that dir (runner.driver.load_record makes them absolute).
    cwd: str | None = None

    def step_spec(self) -> StepSpec:
        return spec_from_dict(self.spec, Path(self.cwd) if self.cwd else None)


_HOST_PATHS = ("key", "known_hosts", "inventory")


def spec_to_dict(spec: StepSpec, cwd: Path | None = None) -> dict[str, Any]:
    """The spec as the record keeps it: every path absolute, resolved against cwd (default: the
    current dir). Not `resolve()`: an input keeps the name it was given, symlink or not."""
    base = cwd or Path.cwd()
    data = asdict(spec)
    host = data.pop("host")
    data["host"] = {k: (str(base / v) if isinstance(v, Path) else v) for k, v in host.items()}
    data["results_dir"] = str(base / spec.results_dir)
    data["inputs"] = [str(base / p) for p in spec.inputs]
    data["args"] = list(spec.args)
    data["exclude"] = list(spec.exclude)
    return data


def spec_from_dict(data: dict[str, Any], cwd: Path | None = None) -> StepSpec:
    """The StepSpec of a record; a relative path (an old record) is taken relative to cwd."""

    def path(value: str) -> Path:
        return cwd / value if cwd is not None else Path(value)

    host = dict(data["host"])
    for key in _HOST_PATHS:
        host[key] = path(host[key]) if host.get(key) else None
    rest = dict(data)
    rest.pop("host")
    return StepSpec(
        host=HostSpec(**host),
        results_dir=path(rest.pop("results_dir")),
        inputs=tuple(path(p) for p in rest.pop("inputs")),
        args=tuple(rest.pop("args")),
        exclude=tuple(rest.pop("exclude")),
        **rest,
    )


def relative_paths(data: dict[str, Any]) -> list[str]:
    """The paths of a record's spec that are not absolute (only records written before 0.2)."""
    host = data.get("host") or {}
    found = [str(host[k]) for k in _HOST_PATHS if host.get(k)]
    found += [str(data["results_dir"]), *(str(p) for p in data.get("inputs") or ())]
    return [p for p in found if not Path(p).is_absolute()]


class StepStore:
    """Step records under one root: <root>/steps/<step_id>/record.yaml (+ ansible artifacts)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or state_root()) / "steps"

    def step_dir(self, step_id: str) -> Path:
        if not step_id or not set(step_id) <= _ID_CHARS or step_id.startswith("."):
            raise UsageError(f"bad step id {step_id!r}")
        return self.root / step_id

    def new(self, spec: StepSpec) -> StepRecord:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        step_id = f"{spec.name.lower()}-{stamp}-{secrets.token_hex(3)}"
        cwd = Path.cwd()
        record = StepRecord(
            step_id, spec_to_dict(spec, cwd), str(uuid.uuid4()), time.time(), cwd=str(cwd)
        )
        self.step_dir(step_id).mkdir(parents=True, mode=0o700)
        self.save(record)
        return record

    def load(self, step_id: str) -> StepRecord:
        path = self.step_dir(step_id) / "record.yaml"
        try:
            data = yaml.load(path.read_text(), Loader=_SafeLoader)
        except FileNotFoundError:
            raise UsageError(
                f"no step {step_id!r} under {self.root} (see `extcomp-ssh list`)"
            ) from None
        except yaml.YAMLError as exc:
            raise UsageError(f"step record {path} is damaged: {exc}") from None
        return StepRecord(**data)

    def save(self, record: StepRecord) -> None:
        directory = self.step_dir(record.step_id)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".record.")
        try:
            with os.fdopen(fd, "w") as fh:
                yaml.dump(asdict(record), fh, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, directory / "record.yaml")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def list(self) -> list[StepRecord]:
        if not self.root.is_dir():
            return []
        records = []
        for child in sorted(self.root.iterdir()):
            if (child / "record.yaml").is_file():
                records.append(self.load(child.name))
        return records
