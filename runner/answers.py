"""The files through which the runner hands an answer it got beside ansible-playbook to the
playbook's task for the same round trip: written atomically by the runner, read (waiting up to
a bound) by the extcomp_helper and extcomp_rsync action plugins. JSON: rc, stdout, stderr, and
for an rsync its seconds.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

NOT_SENT_RC = -1  # the runner did not send this one: the task does it itself
_POLL_S = 0.01


def write_answer(path: Path, rc: int, stdout: str, stderr: str, **more: Any) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps({"rc": rc, "stdout": stdout, "stderr": stderr, **more}))
    os.replace(part, path)


def read_answer(path: str, wait: float) -> dict[str, Any] | None:
    """The answer in `path` once it is there (within `wait` seconds), or None."""
    if not path:
        return None
    deadline = time.monotonic() + wait
    while True:
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            break
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                return None
            time.sleep(_POLL_S)
        except (OSError, ValueError):
            return None
    return data if isinstance(data, dict) else None
