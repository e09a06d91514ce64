"""auth/ without a server: secrets, scopes, accounts, tokens, roles and limits on a store."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from tunelab.auth import scopes as sc
from tunelab.auth.accounts import Accounts, OAuthError
from tunelab.auth.bootstrap import ensure_owner
from tunelab.auth.errors import ApiKeyInvalid, InvalidToken
from tunelab.auth.secrets import check_password, hash_password, token_hash
from tunelab.config import Settings
from tunelab.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
)
from tunelab.store import JobRow, OperationRow, Store, TunedModelRow
from tunelab.store.tables import OAuthTokenRow, utcnow


@pytest.fixture
def acc(tmp_path):
    settings = Settings(home=tmp_path, max_concurrent_jobs=1, max_tuned_models=2)
    store = Store.open(settings)
    yield Accounts(store, settings)
    store.close()


def _model(acc: Accounts, mid: str, owner: str, job_state: str = "done") -> None:
    op = f"tunedModels/{mid}/operations/o"
    acc.store.create_tuned_model(
        TunedModelRow(id=mid, owner=owner, display_name="", description="",
                      base_model="models/tiny-random", state="ACTIVE", state_message="",
                      cancelled=False, epoch_count=1, batch_size=4, learning_rate=0.01,
                      example_count=20, total_steps=5),
        OperationRow(name=op, tuned_model_id=mid, owner=owner, done=True),
        JobRow(tuned_model_id=mid, operation=op, owner=owner, state=job_state,
               cancel_requested=False, attempts=0, completed_steps=0, spec={}), None)


def test_password_hash_roundtrip():
    h = hash_password("s3cret-pass")
    assert h.startswith("scrypt$") and "s3cret-pass" not in h
    assert check_password("s3cret-pass", h) and not check_password("other", h)
    assert not check_password("x", None) and not check_password("x", "garbage")


@pytest.mark.parametrize(("text", "want"), [
    (None, (sc.CLOUD,)),
    ("tuning", (sc.TUNING,)),
    ("tuning.readonly,gl", (sc.TUNING_RO, sc.GL)),
    (sc.TUNING + " " + sc.CLOUD, (sc.TUNING, sc.CLOUD)),
    ("all", (sc.CLOUD,)),
])
def test_scope_parsing(text, want):
    assert sc.parse(text) == want


def test_unknown_scope_and_superset():
    with pytest.raises(InvalidArgument, match="Unknown scope 'nope'"):
        sc.parse("nope")
    assert sc.satisfies(frozenset({sc.CLOUD}), frozenset({sc.TUNING}))
    assert not sc.satisfies(frozenset({sc.GL}), frozenset({sc.TUNING}))


def test_keys_are_hashed_and_revocable(acc):
    acc.add_user("ann", "password1")
    row, key = acc.create_key("ann", "k")
    assert row.key_hash == token_hash(key) and key.startswith("tlk_")
    assert acc.check_key(key).user == "ann"
    acc.revoke_key(row.id, "ann")
    with pytest.raises(ApiKeyInvalid):
        acc.check_key(key)
    with pytest.raises(NotFound):
        acc.revoke_key("nope", None)


def test_tokens_expire_refresh_and_revoke(acc):
    acc.add_user("ann", "password1")
    with pytest.raises(OAuthError):
        acc.password_grant("ann", "wrong", None, "tunelab")
    t = acc.password_grant("ann", "password1", "tuning", "tunelab")
    assert acc.check_access_token(t["access_token"]).scopes == {sc.TUNING}
    with acc.store.session() as s:
        s.execute(update(OAuthTokenRow).where(
            OAuthTokenRow.token_hash == token_hash(t["access_token"]))
            .values(expires_at=utcnow() - timedelta(seconds=1)))
    with pytest.raises(InvalidToken, match="expired"):
        acc.check_access_token(t["access_token"])
    t2 = acc.refresh_grant(t["refresh_token"], None, "tunelab")
    assert acc.check_access_token(t2["access_token"]).user == "ann"
    assert acc.revoke_token(t["refresh_token"])
    with pytest.raises(InvalidToken):
        acc.check_access_token(t2["access_token"])


def test_users(acc):
    _, pw = acc.add_user("bob", email="bob@x.org")
    assert pw and len(pw) == 23
    with pytest.raises(AlreadyExists):
        acc.add_user("bob")
    with pytest.raises(InvalidArgument):
        acc.add_user("bad name")
    assert acc.find_user("BOB@x.org").name == "bob"
    acc.set_disabled("bob")
    with pytest.raises(OAuthError):
        acc.password_grant("bob", pw, None, "tunelab")


def test_roles_and_permissions(acc):
    for u in ("own", "rd", "wr", "x"):
        acc.add_user(u, "password1")
    _model(acc, "m", "own")
    m = acc.require("m", "own", "OWNER")
    acc.create_permission(m, "USER", "rd", "READER")
    acc.create_permission(m, "USER", "wr", "WRITER")
    assert acc.require("m", "rd", "READER")
    with pytest.raises(PermissionDenied, match="needs WRITER"):
        acc.require("m", "rd", "WRITER")
    with pytest.raises(NotFound):
        acc.require("m", "x", "READER")
    with pytest.raises(AlreadyExists):
        acc.create_permission(m, "USER", "rd", "WRITER")
    acc.transfer_ownership(m, "x")
    assert acc.require("m", "x", "OWNER") and acc.role_of(
        acc.require("m", "own", "READER"), "own") == "WRITER"


def test_limits_name_the_limit(acc):
    acc.add_user("ann", "password1")
    _model(acc, "a1", "ann", job_state="queued")
    with pytest.raises(QuotaExceeded, match="max_concurrent_jobs") as e:
        acc.check_create_limits("ann")
    assert e.value.limit == "max_concurrent_jobs" and e.value.http_code == 429
    acc.set_limits("ann", 5, None)
    _model(acc, "a2", "ann")
    with pytest.raises(QuotaExceeded, match="max_tuned_models"):
        acc.check_create_limits("ann")


def test_owner_bootstrap_once(acc):
    path = ensure_owner(acc.settings, acc)
    assert path is not None and (path.stat().st_mode & 0o777) == 0o600
    assert ensure_owner(acc.settings, acc) is None


def test_long_expired_tokens_are_purged(acc):
    acc.add_user("ann", "password1")
    old = acc.password_grant("ann", "password1", "tuning", "tunelab")
    recent = acc.refresh_grant(old["refresh_token"], None, "tunelab")

    def expire(token: str, ago: timedelta) -> None:
        with acc.store.session() as s:
            s.execute(update(OAuthTokenRow).where(OAuthTokenRow.token_hash == token_hash(token))
                      .values(expires_at=utcnow() - ago))

    expire(old["access_token"], timedelta(days=2))
    expire(old["refresh_token"], timedelta(days=2))
    expire(recent["access_token"], timedelta(minutes=5))
    assert acc.purge_expired_tokens() == 2
    with acc.store.session() as s:
        assert s.get(OAuthTokenRow, token_hash(old["access_token"])) is None
        assert s.get(OAuthTokenRow, token_hash(old["refresh_token"])) is None
    with pytest.raises(InvalidToken, match="expired"):   # recently expired: still "expired"
        acc.check_access_token(recent["access_token"])
    with pytest.raises(InvalidToken, match="not valid|invalid"):
        acc.check_access_token(old["access_token"])
