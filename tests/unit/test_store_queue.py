"""The store's queue: claim order, leases, release, cancel; lenient JSON. No model needed."""

from __future__ import annotations

import json
import time

import pytest

from tunelab.api.lenient import strip_trailing_commas
from tunelab.errors import AlreadyExists, NotFound
from tunelab.jobs.requests import derive_id
from tunelab.store import JobRow, OperationRow, Store, TunedModelRow


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    """Every queue test runs on SQLite and on a throwaway PostgreSQL (skipped without one)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 't.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    s = Store(url, lock_dir=tmp_path)
    yield s
    s.close()


def _submit(store: Store, model_id: str) -> None:
    op = f"tunedModels/{model_id}/operations/x"
    store.create_tuned_model(
        TunedModelRow(id=model_id, owner="me", display_name="", description="",
                      base_model="models/tiny-random", state="CREATING", state_message="",
                      cancelled=False, epoch_count=1, batch_size=4, learning_rate=0.01,
                      example_count=20, total_steps=5),
        OperationRow(name=op, tuned_model_id=model_id, owner="me", done=False),
        JobRow(tuned_model_id=model_id, operation=op, owner="me", state="queued",
               cancel_requested=False, attempts=0, completed_steps=0, spec={}),
        None,
    )


def test_migrations_are_idempotent(tmp_path, store):
    Store(store.url, lock_dir=tmp_path).close()


def test_jobs_are_claimed_in_submission_order_once(store):
    for m in ("a", "b", "c"):
        _submit(store, m)
    assert [store.queue_position(j) for j in store.list_jobs()] == [1, 2, 3]
    first = store.claim_job("w1", 30)
    second = store.claim_job("w2", 30)
    assert (first.tuned_model_id, second.tuned_model_id) == ("a", "b")
    assert store.queue_position(store.job_of("c")) == 1
    assert store.claim_job("w3", 30).tuned_model_id == "c"
    assert store.claim_job("w4", 30) is None


def test_concurrent_workers_never_claim_the_same_job(store):
    """Threads hammer ``claim_job``: every job is claimed exactly once, none is lost."""
    import threading

    n_jobs, n_workers = 30, 6
    for i in range(n_jobs):
        _submit(store, f"m{i}")
    claims: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(n_workers)

    def work(worker: str) -> None:
        try:
            start.wait()
            mine = claims.setdefault(worker, [])
            while (job := store.claim_job(worker, 60)) is not None:
                assert job.worker_id == worker and job.state == "running"
                mine.append(job.tuned_model_id)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    claimed = [m for ms in claims.values() for m in ms]
    assert sorted(claimed) == sorted(f"m{i}" for i in range(n_jobs))  # each exactly once
    for worker, models in claims.items():  # each worker takes jobs in submission order
        assert models == sorted(models, key=lambda m: int(m[1:])), worker
    owners = {j.tuned_model_id: j.worker_id for j in store.list_jobs()}
    assert all(owners[m] == w for w, ms in claims.items() for m in ms)


def test_expired_lease_is_reclaimed_and_old_worker_loses_it(store):
    _submit(store, "a")
    job = store.claim_job("w1", 0.2)
    assert store.claim_job("w2", 30) is None
    time.sleep(0.3)
    again = store.claim_job("w2", 30)
    assert again.seq == job.seq and again.attempts == 2
    assert not store.heartbeat(job.seq, "w1", 30)
    assert not store.finish_job(job.seq, "w1", model_state="ACTIVE")
    assert store.finish_job(job.seq, "w2", model_state="ACTIVE")
    assert store.get_tuned_model("a", "me").state == "ACTIVE"
    assert store.get_operation("tunedModels/a/operations/x", "me").done


def test_release_keeps_the_place_in_the_queue(store):
    _submit(store, "a")
    _submit(store, "b")
    job = store.claim_job("w1", 30)
    store.release_job(job.seq, "w1")
    assert store.claim_job("w2", 30).tuned_model_id == "a"


def test_cancel_of_queued_job_finishes_it_now(store):
    _submit(store, "a")
    store.request_cancel("a", "me", "Tuning was cancelled by the user.",
                         "Tuning was cancelled by the user before it started.")
    op = store.get_operation("tunedModels/a/operations/x", "me")
    assert op.done and op.error_code == 1
    assert store.get_tuned_model("a", "me").state == "FAILED"
    assert store.claim_job("w", 30) is None


def test_owner_scoping_and_duplicates(store):
    _submit(store, "a")
    with pytest.raises(NotFound):
        store.get_tuned_model("a", "someone-else")
    with pytest.raises(AlreadyExists):
        _submit(store, "a")


def test_snapshots_are_upserted_by_step(store):
    from datetime import UTC, datetime

    _submit(store, "a")
    job = store.claim_job("w", 30)
    now = datetime.now(UTC)
    for step, loss in ((1, 3.0), (2, 2.0), (2, 2.5)):
        store.put_snapshot(job.seq, "a", step, 1, loss, now)
    assert [(s.step, s.mean_loss) for s in store.snapshots("a")] == [(1, 3.0), (2, 2.5)]
    assert store.snapshots("a")[0].compute_time.tzinfo is not None


@pytest.mark.parametrize("raw,expected", [
    ('{"a": 1,}', {"a": 1}),
    ('{"a": [1, 2,], "b": {"c": 3 , } , }', {"a": [1, 2], "b": {"c": 3}}),
    ('{"s": "keep ,} this,]"}', {"s": "keep ,} this,]"}),
    ('{"s": "esc \\" ,}",}', {"s": 'esc " ,}'}),
])
def test_trailing_commas(raw, expected):
    assert json.loads(strip_trailing_commas(raw)) == expected


@pytest.mark.parametrize("name,prefix", [
    ("Sentence Translator", "sentence-translator-"),
    ("  !!  ", None),
    ("123 go", "m-123-go-"),
    ("x" * 80, "x" * 34 + "-"),
])
def test_derived_ids(name, prefix):
    from tunelab.jobs.requests import ID_RE

    mid = derive_id(name)
    assert ID_RE.match(mid), mid
    if prefix:
        assert mid.startswith(prefix)


def test_worker_gives_up_after_too_many_attempts(tmp_path, store):
    from tunelab.config import Settings
    from tunelab.jobs.worker import MAX_ATTEMPTS, Worker

    class Boom:
        def run(self, *a):  # pragma: no cover - must not be reached
            raise AssertionError("should not run")

    _submit(store, "a")
    with store.session() as s:
        s.get(JobRow, 1).spec = {"model_id": "a", "base_model": "tiny-random", "dataset": "x",
                                 "output_dir": "tuned/a", "epoch_count": 1, "batch_size": 4,
                                 "learning_rate": 0.01, "seed": 0, "total_steps": 5}
        s.get(JobRow, 1).attempts = MAX_ATTEMPTS
    w = Worker(Settings(home=tmp_path), store=store, executor=Boom(), worker_id="w")
    w.run(once=True)
    op = store.get_operation("tunedModels/a/operations/x", "me")
    assert op.done and op.error_code == 13 and "interrupted" in op.error_message
    assert store.get_tuned_model("a", "me").state == "FAILED"
