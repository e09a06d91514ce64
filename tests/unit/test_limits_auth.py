"""Per-user caps (API keys, uploads, description length), sign-in throttling and the hashing
path for unknown users, on a real store (SQLite, and PostgreSQL where the cluster fixture
runs)."""

from __future__ import annotations

import pytest

from tunelab.auth.accounts import Accounts
from tunelab.auth.errors import QuotaExceeded
from tunelab.config import Settings
from tunelab.errors import InvalidArgument
from tunelab.store import FileRow, JobRow, OperationRow, Store, TunedModelRow
from tunelab.store.repo import Quota


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
