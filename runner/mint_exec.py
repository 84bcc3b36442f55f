"""`extcomp-ssh mint-exec`: the original MInt SSH sample's command line, run by our runner.

    extcomp-ssh mint-exec client_name:HOST client_cmd:ENTRY client_files:F1,F2 [flags]

HOST is an ssh alias (or user@host:port), ENTRY the entry script on the host: a bare name from
the site dir, or the original sample's path form (`~/misrc_remote_workflow/scripts/NAME.sh`), of
which only the base name is used; the host's gate decides what may run. The files are pushed into a
fresh work dir.
The program's output goes to remote_program_exec.log in the work dir, and the whole work dir is
pulled back into the current dir, as the original did; the exit code is 0 or 1 as it was.
"""

from __future__ import annotations

import posixpath
import re
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


# The original sample's client_cmd is a path on the host; only its last part names an entry here.
_PATH_RE = re.compile(r"^[A-Za-z0-9_./~+-]+$")


def entry_name(client_cmd: str) -> tuple[str, str | None]:
    """The entry to run for a client_cmd, and a line saying what was mapped (None if nothing).

    A path is reduced to its base name rather than run as given: what may run on the host is the
    site dir's entries, whatever directory the module's command line names.
    """
    if "/" not in client_cmd:
        return client_cmd, None
    base = posixpath.basename(client_cmd)
    if not _PATH_RE.match(client_cmd) or not base or base in (".", ".."):
        raise UsageError(
            f"mint-exec: client_cmd {client_cmd!r} is not an entry name or a path ending in one"
        )
    return base, f"mint-exec: client_cmd {client_cmd} runs the site's entry {base}"


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
    entry, _ = entry_name(found["client_cmd"])
    files = [f for f in found.get("client_files", "").split(",") if f]
    return StepSpec(
        host=HostSpec.parse(found["client_name"], key=key, known_hosts=known_hosts),
        results_dir=workdir,
        inputs=tuple((workdir / f) if not Path(f).is_absolute() else Path(f) for f in files),
        entry=entry,
        helper=helper or DEFAULT_HELPER,
        remote_base=remote_base,
        timeout=timeout,
        exclude=("/.extcomp/",),
        name="mint-exec",
        output_log=OUTPUT_LOG,
        merge_results=True,
    )
