"""Shared set-up of the original-protocol tests: a MInt site, users with MInt tokens."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.webapi.conftest import DEFAULT_CONFIG, RunningServer
from tests.webapi.mint_standin import OriginalPoller, OriginalWorkflow
from webapi.server.auth import UserStore

SITE = "mint-a"
SCRIPTS = {
    # Reads its input from the calc dir, writes a result and both logs.
    "ok.sh": 'cat in.txt > out.txt\necho "out from $(basename "$CALC_DIR")"\necho "warn" >&2\n',
    "fail.sh": 'echo partial > out.txt\necho "it went wrong" >&2\nexit 3\n',
    "partial.sh": 'cp in.txt out.txt\necho "only out.txt"\n',
    "slow.sh": "sleep 4\ncp in.txt out.txt\n",
}


@dataclass
class MintEnv:
    server: RunningServer
    tokens: dict[str, str]  # "mia", "ben": 64-hex MInt tokens (imported, stored hashed)
    commands: dict[str, str]  # script name → the command string on the site's list
    tmp: Path

    def wf(self, user: str = "mia", site: str = SITE) -> OriginalWorkflow:
        return OriginalWorkflow(self.server.url, site, self.tokens[user], str(self.server.ca_file))

    def poller(self, user: str = "mia", site: str = SITE) -> OriginalPoller:
        base = self.tmp / f"calc-base-{user}-{site}-{secrets.token_hex(3)}"
        return OriginalPoller(
            site, self.server.url, self.tokens[user], base, str(self.server.ca_file)
        )


def write_scripts(directory: Path) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    commands = {}
    for name, body in SCRIPTS.items():
        path = directory / name
        path.write_text("#!/bin/sh\nset -e\n" + body if name != "fail.sh" else "#!/bin/sh\n" + body)
        path.chmod(0o755)
        commands[name] = str(path)
    return commands


def mint_config(commands: dict[str, str], **extra: Any) -> dict[str, Any]:
    sites = dict(DEFAULT_CONFIG["sites"])
    sites[SITE] = {"commands": [*commands.values(), "sample"]}
    return {"sites": sites, **extra}


def add_mint_users(server: RunningServer, tokens: dict[str, str] | None = None) -> dict[str, str]:
    tokens = tokens or {"mia": secrets.token_hex(32), "ben": secrets.token_hex(32)}
    users = UserStore(server.users_file)
    known = {u.name for u in users.list_users()}
    for name, token in tokens.items():
        if name not in known:
            users.add_user(name, token=token)
    return tokens


def make_env(make_api_server: Callable[..., RunningServer], tmp: Path, **overrides: Any) -> MintEnv:
    commands = write_scripts(tmp / "scripts")
    server = make_api_server(**mint_config(commands, **overrides))
    tokens = add_mint_users(server)
    server.tokens.update(tokens)  # so tests.webapi.apihelp.Api can act as these users too
    return MintEnv(server, tokens, commands, tmp)
