"""`extcomp-ssh mint-exec`: the original MInt SSH sample's command line, run by our runner.

    extcomp-ssh mint-exec client_name:HOST client_cmd:ENTRY client_files:F1,F2 [flags]

HOST is an ssh alias (or user@host:port), ENTRY the entry script on the host (a bare name from
the site dir: the host's gate decides what may run), the files are pushed into a fresh work dir.
The program's output goes to remote_program_exec.log in the work dir, and the whole work dir is
pulled back into the current dir, as the original did; the exit code is 0 or 1 as it was.
"""

from __future__ import annotations

from pathlib import Path

from runner.errors import UsageError
from runner.steps import DEFAULT_HELPER, HostSpec, StepSpec

OUTPUT_LOG = "remote_program_exec.log"
KEYS = ("client_name", "client_cmd", "client_files")


def parse_words(words: list[str]) -> dict[str, str]:
    """`key:value` words of the original command line; every key at most once."""
    found: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition(":")
        if not sep or key not in KEYS:
            raise UsageError(
                f"mint-exec: {word!r} is not one of {', '.join(k + ':…' for k in KEYS)}"
            )
        if key in found:
            raise UsageError(f"mint-exec: {key} given twice")
        found[key] = value
    for key in ("client_name", "client_cmd"):
        if not found.get(key):
            raise UsageError(f"mint-exec: {key}:… is required")
    return found


def mint_spec(
    words: list[str],
    *,
    workdir: Path,
    key: Path | None = None,
    known_hosts: Path | None = None,
    helper: str | None = None,
    remote_base: str | None = None,
    timeout: float | None = None,
) -> StepSpec:
    found = parse_words(words)
    files = [f for f in found.get("client_files", "").split(",") if f]
    return StepSpec(
        host=HostSpec.parse(found["client_name"], key=key, known_hosts=known_hosts),
        results_dir=workdir,
        inputs=tuple((workdir / f) if not Path(f).is_absolute() else Path(f) for f in files),
        entry=found["client_cmd"],
        helper=helper or DEFAULT_HELPER,
        remote_base=remote_base,
        timeout=timeout,
        exclude=("/.extcomp/",),
        name="mint-exec",
        output_log=OUTPUT_LOG,
        merge_results=True,
    )
