"""A user's own change of password (auth/users.py, Accounts.change_password) on a real store:
the one-time password flag, the current password asked for, the rules for the new one, and
wrong current passwords rate limited like sign-ins."""

from __future__ import annotations

import pytest

from tunelab.auth.accounts import Accounts
from tunelab.auth.errors import TooManyAttempts
from tunelab.config import Settings
from tunelab.errors import FailedPrecondition, InvalidArgument
from tunelab.store import Store


@pytest.fixture
def acc(tmp_path):
    settings = Settings(home=tmp_path)
    store = Store.open(settings)
    yield Accounts(store, settings)
    store.close()


def _field(e: InvalidArgument) -> str:
    return e.details[0]["fieldViolations"][0]["field"]


def test_a_one_time_password_must_be_changed_and_a_chosen_one_need_not(acc):
    _, once = acc.add_user("ann")
    assert once and acc.get_user("ann").must_change_password
    acc.add_user("bea", "bea-chose-this")
    assert not acc.get_user("bea").must_change_password

    acc.change_password("ann", once, "ann-chose-this")
    assert not acc.get_user("ann").must_change_password
    assert acc.password_grant("ann", "ann-chose-this", None, "cli")["access_token"]


def test_the_current_password_is_checked_and_the_new_one_follows_the_rules(acc):
    _, once = acc.add_user("ann")
    with pytest.raises(InvalidArgument) as e:
        acc.change_password("ann", "not it", "a good new one")
    assert _field(e.value) == "currentPassword" and "wrong" in e.value.message
    with pytest.raises(InvalidArgument) as e:
        acc.change_password("ann", once, "short")
    assert _field(e.value) == "newPassword" and "at least 8" in e.value.message
    with pytest.raises(InvalidArgument) as e:
        acc.change_password("ann", once, once)
    assert _field(e.value) == "newPassword" and "current one" in e.value.message
    with pytest.raises(InvalidArgument) as e:
        acc.change_password("ann", once, "x" * 1025)
    assert "at most 1024" in e.value.message
    assert acc.get_user("ann").must_change_password   # nothing changed


def test_a_service_account_has_no_password_to_change(acc):
    acc.add_user("robot", None, kind="service")
    with pytest.raises(FailedPrecondition, match="client credentials"):
        acc.change_password("robot", "anything", "a good new one")


def test_wrong_current_passwords_are_rate_limited_like_sign_ins(acc):
    acc.add_user("ann", "ann-chose-this")
    # a new password that breaks the rules is refused before the current one is checked:
    # not counted as a guess
    for _ in range(30):
        with pytest.raises(InvalidArgument):
            acc.change_password("ann", "ann-chose-this", "short", address="10.0.0.9")
    acc.change_password("ann", "ann-chose-this", "ann-chose-again", address="10.0.0.9")
    with pytest.raises(TooManyAttempts) as e:
        for _ in range(30):
            with pytest.raises(InvalidArgument):
                acc.change_password("ann", "guess", "a good new one", address="10.0.0.9")
    assert int(e.value.headers["Retry-After"]) >= 1


def test_an_admin_set_password_is_not_asked_to_change(acc):
    acc.add_user("ann")
    acc.set_password("ann", "admin-gave-this")
    assert not acc.get_user("ann").must_change_password
