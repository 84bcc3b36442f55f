"""Users file: tokens stored hashed, scrypt passwords, expiry, revocation."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from webapi.errors import BadRequest, NotFound, Unauthorized
from webapi.server.auth import UserStore, hash_password, verify_password


def test_token_round_trip_and_only_hash_on_disk(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "users.yml")
    new = users.add_user("alice", password="s3cret-pw")
    assert new.token.startswith("xc_") and len(new.token) > 40
    text = (tmp_path / "users.yml").read_text()
    assert new.token not in text and "s3cret-pw" not in text
    assert stat.S_IMODE((tmp_path / "users.yml").stat().st_mode) == 0o600
    principal = users.authenticate(f"Bearer {new.token}")
    assert principal.user == "alice" and not principal.admin and principal.token_id == new.id


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer xc_wrong"])
def test_bad_headers(tmp_path: Path, header: str | None) -> None:
    users = UserStore(tmp_path / "users.yml")
    users.add_user("alice")
    with pytest.raises(Unauthorized):
        users.authenticate(header)


def test_expired_token(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "users.yml")
    users.add_user("alice")
    new = users.new_token("alice", expires_days=1e-6)
    time.sleep(0.2)
    with pytest.raises(Unauthorized, match="expired"):
        users.authenticate(f"Bearer {new.token}")


def test_login(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "users.yml")
    users.add_user("alice", password="pw-1234")
    users.add_user("nopw")
    new = users.login("alice", "pw-1234")
    assert new.expires is not None
    assert users.authenticate(f"Bearer {new.token}").user == "alice"
    for user, pw in (("alice", "wrong"), ("ghost", "pw-1234"), ("nopw", "")):
        with pytest.raises(Unauthorized, match="wrong"):
            users.login(user, pw)


def test_revoke_and_list(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "users.yml")
    first = users.add_user("root", admin=True)
    second = users.new_token("root", label="ci")
    assert users.authenticate(f"Bearer {first.token}").admin
    assert users.revoke("root", first.id) == 1
    with pytest.raises(Unauthorized):
        users.authenticate(f"Bearer {first.token}")
    assert users.authenticate(f"Bearer {second.token}").user == "root"
    [info] = users.list_users()
    assert [t.label for t in info.tokens] == ["ci"] and info.admin
    assert users.revoke("root", None) == 1
    with pytest.raises(NotFound):
        users.revoke("root", "t-nope")
    with pytest.raises(NotFound):
        users.new_token("ghost")


def test_add_user_validation(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "users.yml")
    users.add_user("alice")
    with pytest.raises(BadRequest, match="exists"):
        users.add_user("alice")
    with pytest.raises(BadRequest, match="bad user name"):
        users.add_user("../x")


def test_password_hash_format() -> None:
    stored = hash_password("pw")
    assert stored.startswith("scrypt$16384$8$1$")
    assert verify_password("pw", stored) and not verify_password("px", stored)
    assert not verify_password("pw", "garbage") and not verify_password("pw", "md5$1$2$3$4$5")
    assert hash_password("pw") != stored  # random salt
