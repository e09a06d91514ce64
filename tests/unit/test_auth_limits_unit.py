"""Per-user caps (API keys, uploads, description length), sign-in throttling and the hashing
path for unknown users, on a real store (SQLite, and PostgreSQL where the cluster fixture
runs)."""

from __future__ import annotations

import pytest

from tunelab.auth.accounts import Accounts
from tunelab.config import Settings
from tunelab.errors import InvalidArgument, QuotaExceeded
from tunelab.store import FileRow, JobRow, OperationRow, Store, TunedModelRow
from tunelab.store.quotas import Quota


@pytest.fixture
def acc(tmp_path):
    settings = Settings(home=tmp_path, max_api_keys=2, max_files=2, max_description_chars=10)
    store = Store.open(settings)
    yield Accounts(store, settings)
    store.close()


def _upload(acc: Accounts, fid: str, owner: str) -> None:
    acc.store.add_file(FileRow(id=fid, owner=owner, kind="upload", path=f"files/{fid}/x"))


def _model(mid: str, description: str = "") -> tuple:
    op = f"tunedModels/{mid}/operations/o"
    return (TunedModelRow(id=mid, owner="ann", description=description,
                          base_model="models/tiny-random", epoch_count=1, batch_size=4,
                          learning_rate=0.01),
            OperationRow(name=op, tuned_model_id=mid, owner="ann"),
            JobRow(tuned_model_id=mid, operation=op, owner="ann", spec={}), None)


def test_api_keys_are_capped_per_user_and_revoking_makes_room(acc):
    acc.add_user("ann", "password1")
    acc.add_user("bob", "password1")
    first, _ = acc.create_key("ann")
    acc.create_key("ann")
    with pytest.raises(QuotaExceeded, match="max_api_keys") as e:
        acc.create_key("ann")
    assert e.value.http_code == 429 and "TUNELAB_MAX_API_KEYS" in e.value.message
    acc.create_key("bob")  # another user's keys do not count
    acc.revoke_key(first.id, "ann")
    acc.create_key("ann")


def test_uploads_are_capped_per_user(acc):
    _upload(acc, "f1", "ann")
    _upload(acc, "f2", "ann")
    with pytest.raises(QuotaExceeded, match="max_files") as e:
        _upload(acc, "f3", "ann")
    assert "TUNELAB_MAX_FILES" in e.value.message
    _upload(acc, "g1", "bob")
    # a create request's own examples are not uploads
    acc.store.add_file(FileRow(id="ds-1", owner="ann", kind="dataset", path="datasets/x"))
    acc.store.delete_file("f1", "ann")
    _upload(acc, "f3", "ann")


def test_description_length_is_capped_on_create_and_update(acc):
    with pytest.raises(InvalidArgument, match="description is 11 characters; the limit is 10"):
        acc.store.create_tuned_model(*_model("m1", "x" * 11))
    assert not acc.store.model_exists("m1")
    acc.store.create_tuned_model(*_model("m1", "x" * 10))
    with pytest.raises(InvalidArgument, match="TUNELAB_MAX_DESCRIPTION_CHARS"):
        acc.store.update_tuned_model("m1", None, {"description": "y" * 11})
    assert acc.store.get_tuned_model("m1", None).description == "x" * 10


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_job_limit_is_checked_in_the_store(db, tmp_path, request):
    """Whoever calls the store, the limit holds (a user's own limit first)."""
    url = (request.getfixturevalue("postgres_url") if db == "postgresql"
           else f"sqlite:///{tmp_path / 'db.sqlite'}")
    store = Store(url, quota=Quota(max_concurrent_jobs=2, max_tuned_models=3))
    try:
        store.create_tuned_model(*_model("a"))
        store.create_tuned_model(*_model("b"))
        with pytest.raises(QuotaExceeded, match="max_concurrent_jobs"):
            store.create_tuned_model(*_model("c"))
        def finished(mid: str) -> tuple:
            rows = _model(mid)
            rows[2].state = "done"
            return rows

        store.create_tuned_model(*finished("c"))  # a finished job does not count, its model does
        with pytest.raises(QuotaExceeded, match="max_tuned_models: user 'ann' stores 3"):
            store.create_tuned_model(*finished("d"))
    finally:
        store.close()


# -- sign-in: the same hashing path for every wrong answer; rate limits with backoff ---------
@pytest.fixture
def counted_hashes(monkeypatch):
    """How many scrypt hashes were computed (the slow, salted password hash)."""
    import hashlib

    calls = []
    real = hashlib.scrypt

    def scrypt(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", scrypt)
    return calls


@pytest.fixture
def signins(tmp_path):
    settings = Settings(home=tmp_path, signin_attempts=3, signin_backoff_seconds=30,
                        signin_max_backoff_seconds=120)
    store = Store.open(settings)
    acc = Accounts(store, settings)
    acc.add_user("ann", "right-password", email="ann@example.com")
    acc.add_user("svc", kind="service")
    acc.add_user("gone", "right-password")
    acc.set_disabled("gone")
    yield acc
    store.close()


@pytest.mark.parametrize("username", ["ann", "nobody", "svc", "gone", "ann@example.com"])
def test_every_wrong_sign_in_takes_the_hashing_path(signins, counted_hashes, username):
    """A known user with a wrong password, an unknown user, a service account (no password)
    and a disabled user: each costs exactly one password hash and gets the same answer, so
    neither the answer nor its time tells which names exist."""
    from tunelab.auth.accounts import OAuthError

    with pytest.raises(OAuthError) as e:
        signins.password_grant(username, "wrong-password", None, "tunelab")
    assert (e.value.error, e.value.description) == ("invalid_grant",
                                                    "Wrong user name or password.")
    assert len(counted_hashes) == 1


def _wrong(acc: Accounts, user: str, address: str = "192.0.2.1"):
    from tunelab.auth.accounts import OAuthError

    with pytest.raises(OAuthError):
        acc.password_grant(user, "wrong-password", None, "tunelab", address=address)


def _expire_waits(acc: Accounts) -> None:
    """Move every lockout into the past, as if the wait had been sat out."""
    from sqlalchemy import update

    from tunelab.store.tables import SignInAttemptRow, utcnow

    with acc.store.session() as s:
        s.execute(update(SignInAttemptRow).where(SignInAttemptRow.locked_until.is_not(None))
                  .values(locked_until=utcnow()))


@pytest.mark.parametrize("user", ["ann", "nobody"])
def test_sign_in_backs_off_per_user_and_a_right_password_works_after_the_wait(signins, user):
    from tunelab.auth.errors import TooManyAttempts

    for _ in range(3):
        _wrong(signins, user)
    with pytest.raises(TooManyAttempts) as e:  # refused before the password is looked at
        signins.password_grant(user, "right-password", None, "tunelab", address="192.0.2.1")
    assert e.value.http_code == 429 and e.value.retry_after == 30
    assert e.value.headers == {"Retry-After": "30"} and "Try again in 30 seconds" in e.value.message
    with pytest.raises(TooManyAttempts):  # from another address too: the limit is the user's
        signins.password_grant(user, "wrong-password", None, "tunelab", address="192.0.2.9")
    _expire_waits(signins)
    _wrong(signins, user)  # one more failure after the wait: it doubles
    with pytest.raises(TooManyAttempts) as e:
        signins.password_grant(user, "right-password", None, "tunelab")
    assert e.value.retry_after == 60
    _expire_waits(signins)
    if user == "ann":
        assert signins.password_grant("ann", "right-password", None, "tunelab")["access_token"]
        _wrong(signins, "ann")  # the right password cleared ann's count: this one is free
        _wrong(signins, "ann")


def test_sign_in_backs_off_per_address(signins):
    """One address guessing many names: four times the per-user allowance, then it waits."""
    from tunelab.auth.errors import TooManyAttempts

    for i in range(12):
        _wrong(signins, f"user{i}")
    with pytest.raises(TooManyAttempts):
        signins.password_grant("ann", "right-password", None, "tunelab", address="192.0.2.1")
    assert signins.password_grant("ann", "right-password", None, "tunelab",
                                  address="192.0.2.2")["access_token"]


def test_concurrent_guesses_are_cut_off_at_the_limit(signins):
    """Attempts are counted before the password is checked: 12 guesses at once for one user
    get 3 answers and 9 refusals (a check made before counting would let them all through)."""
    import threading

    from tunelab.auth.accounts import OAuthError
    from tunelab.auth.errors import TooManyAttempts

    go = threading.Barrier(12)
    out: list[str] = []

    def guess(i: int) -> None:
        go.wait()
        try:
            signins.password_grant("ann", f"wrong-{i}", None, "tunelab", address=f"198.51.100.{i}")
        except OAuthError:
            out.append("wrong")
        except TooManyAttempts:
            out.append("wait")

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(out) == ["wait"] * 9 + ["wrong"] * 3


def test_wrong_client_secrets_back_off(signins):
    from tunelab.auth.accounts import OAuthError
    from tunelab.auth.errors import TooManyAttempts

    client_id, secret = signins.create_client("svc", "tuning")
    for _ in range(3):
        with pytest.raises(OAuthError):
            signins.client_credentials_grant(client_id, "tls_wrong", None, address="192.0.2.5")
    with pytest.raises(TooManyAttempts):
        signins.client_credentials_grant(client_id, secret, None, address="192.0.2.6")


def test_credential_throttle_refills():
    from tunelab.auth.errors import TooManyAttempts
    from tunelab.auth.throttle import CredentialThrottle

    t = CredentialThrottle(burst=3, per_second=0.5)
    for _ in range(3):
        t.check("192.0.2.1")
        t.failed("192.0.2.1")
    with pytest.raises(TooManyAttempts) as e:
        t.check("192.0.2.1")
    assert e.value.retry_after == 2 and e.value.headers["Retry-After"] == "2"
    t.check("192.0.2.2")  # other addresses are not affected
