"""Build a StepSpec from a YAML step file and command-line flags (flags win over the file)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import yaml

from runner.errors import UsageError
from runner.steps import DEFAULT_ENTRY, DEFAULT_HELPER, HostSpec, StepSpec

_KEYS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "host": str,
    "key": str,
    "known_hosts": str,
    "inventory": str,
    "inputs": list,
    "args": list,
    "entry": str,
    "helper": str,
    "remote_base": str,
    "timeout": (int, float),
    "exclude": list,
    "results": str,
    "keep_remote": bool,
    "reconnect_attempts": int,
}


def load_step_file(path: Path) -> dict[str, Any]:
    """Read and type-check a step file; relative paths in it are relative to the file."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"step file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"step file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"step file {path} must be a mapping of keys such as host:, inputs:")
    for key, value in data.items():
        kind = _KEYS.get(key)
        if kind is None:
            raise UsageError(f"step file {path}: unknown key {key!r} (known: {', '.join(_KEYS)})")
        if (kind is not bool and isinstance(value, bool)) or not isinstance(value, kind):
            raise UsageError(f"step file {path}: {key!r} has the wrong type ({value!r})")
        if isinstance(value, list) and not all(isinstance(v, (str, int, float)) for v in value):
            raise UsageError(f"step file {path}: {key!r} must be a list of strings")
    base = path.parent
    for key in ("key", "known_hosts", "inventory", "results"):
        if key in data:
            data[key] = str(_rel(base, data[key]))
    if "inputs" in data:
        data["inputs"] = [str(_rel(base, str(p))) for p in data["inputs"]]
    return data


def _rel(base: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base / path


def spec_from_args(ns: argparse.Namespace) -> StepSpec:
    """Merge the step file (if any) with flags; flags given on the command line win."""
    data: dict[str, Any] = load_step_file(Path(ns.step_file)) if ns.step_file else {}

    def pick(flag: str, key: str | None = None, env: str | None = None, default: Any = None) -> Any:
        value = getattr(ns, flag, None)
        if value not in (None, [], ()):
            return value
        if key and key in data:
            return data[key]
        if env and os.environ.get(env):
            return os.environ[env]
        return default

    host_text = pick("host", "host", "EXTCOMP_SSH_HOST")
    if not host_text:
        raise UsageError("no host: give --host (alias or user@host:port) or host: in a step file")
    key, known, inv = (
        pick(f, f, f"EXTCOMP_SSH_{f.upper()}") for f in ("key", "known_hosts", "inventory")
    )
    host = HostSpec.parse(
        str(host_text),
        key=Path(key).expanduser() if key else None,
        known_hosts=Path(known).expanduser() if known else None,
        inventory=Path(inv).expanduser() if inv else None,
    )
    name = str(pick("name", "name", default="step"))
    results = pick("results", "results")
    if results is None:
        # A fresh dir per run, so running the same step twice needs no --force.
        results = f"extcomp-results/{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    timeout = pick("timeout", "timeout")
    args = list(ns.args) if getattr(ns, "args", None) else list(data.get("args", []))
    return StepSpec(
        host=host,
        results_dir=Path(results).expanduser(),
        inputs=tuple(Path(p).expanduser() for p in pick("input", "inputs", default=[])),
        args=tuple(str(a) for a in args),
        entry=str(pick("entry", "entry", "EXTCOMP_SSH_ENTRY", DEFAULT_ENTRY)),
        helper=str(pick("helper", "helper", "EXTCOMP_SSH_HELPER", DEFAULT_HELPER)),
        remote_base=pick("remote_base", "remote_base", "EXTCOMP_SSH_REMOTE_BASE"),
        timeout=float(timeout) if timeout is not None else None,
        exclude=tuple(str(p) for p in pick("exclude", "exclude", default=[])),
        keep_remote=bool(getattr(ns, "keep", False) or data.get("keep_remote", False)),
        force=bool(getattr(ns, "force", False)),
        name=name,
        reconnect_attempts=int(pick("reconnect_attempts", "reconnect_attempts", default=8)),
    )
