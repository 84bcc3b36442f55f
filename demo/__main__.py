"""`make demo`: run both modes end to end on this machine, on embedded defaults, under var/demo."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from demo import ssh_demo, webapi_demo

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    logging.basicConfig(format="  %(name)s: %(message)s", level=logging.WARNING)
    var_dir = ROOT / "var" / "demo"
    var_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    outcomes = {}
    for name, part in (("SSH mode", ssh_demo.run), ("WebAPI mode", webapi_demo.run)):
        try:
            outcomes[name] = part(var_dir)
        except Exception as exc:  # a demo reports and goes on to the other mode
            print(f"  {name} demo failed: {exc}")
            outcomes[name] = 1
        print()
    ok = all(rc == 0 for rc in outcomes.values())
    verdict = ", ".join(
        f"{name} {'ok' if rc == 0 else f'FAILED (rc {rc})'}" for name, rc in outcomes.items()
    )
    print(f"demo: {verdict} in {time.monotonic() - started:.1f} s; files under {var_dir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
