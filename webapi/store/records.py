"""Reading a calc record (calc.yaml) into a Calc, with libyaml's parser when it is installed."""

from __future__ import annotations

from pathlib import Path

import yaml

from webapi.calcs import Calc

# libyaml's parser with the same safe constructors (PyYAML's pure-Python one is ~10x slower):
# a store opened after a crash may read every record.
FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_calc(path: Path) -> Calc:
    """The calc in `path`; FileNotFoundError if it is gone, yaml/Type/Value errors if damaged."""
    with path.open("r", encoding="utf-8") as fh:
        return Calc.from_record(yaml.load(fh, Loader=FAST_LOADER))
