"""Write docs/cli.md from the commands' own --help texts (a test keeps the file equal to them)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "cli.md"


def _walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to one parser
                yield from _walk(sub)


def render() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal width: fix it
    sys.path.insert(0, str(ROOT))
    from runner.cli import build_parser as ssh_parser
    from webapi.cli import build_parser as api_parser
    from webapi.mint.poller_cli import build_parser as mint_poller_parser
    from webapi.poller.cli import build_cleanup_parser
    from webapi.poller.cli import build_parser as poller_parser

    out = [
        "# Command-line reference",
        "",
        "Generated from the commands' own `--help` by `make docs` (scripts/gen_cli_docs.py);",
        "a test fails when this file and the commands disagree.",
        "",
    ]
    for build in (ssh_parser, api_parser, poller_parser, mint_poller_parser, build_cleanup_parser):
        for parser in _walk(build()):
            out += [f"## `{parser.prog}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    DOC.write_text(render())
    print(f"wrote {DOC.relative_to(ROOT)}")
