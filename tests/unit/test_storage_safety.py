"""The data directory and the queue under storage faults, on a real SQLite store:
who may read the database, a full database, a job that waits for storage, and the temporary
folders a crashed checkpoint write leaves."""

from __future__ import annotations

import stat
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tunelab.config import Settings
from tunelab.fsutil import storage_fault
from tunelab.jobs.worker import Worker
from tunelab.store import JobRow, OperationRow, Store, TunedModelRow


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_dir_and_database_are_private(tmp_path):
    home = tmp_path / "home"
    store = Store.open(Settings(home=home))
    with store.session() as s:  # a write, so the WAL and shared-memory files exist
        s.execute(text("CREATE TABLE IF NOT EXISTS probe (x INTEGER)"))
    assert _mode(home) == 0o700
    for name in ("tunelab.db", "tunelab.db-wal", "tunelab.db-shm"):
        assert _mode(home / name) == 0o600, name
    store.close()


def test_an_existing_world_readable_database_is_tightened(tmp_path):
    home = tmp_path / "home"
    Store.open(Settings(home=home)).close()
    (home / "tunelab.db").chmod(0o644)
    Store.open(Settings(home=home)).close()
    assert _mode(home / "tunelab.db") == 0o600


def test_a_full_database_is_a_storage_fault(tmp_path):
    store = Store.open(Settings(home=tmp_path))
    with pytest.raises(OperationalError) as e, store.engine.connect() as conn:
        # SQLite's own limit on pages: a real SQLITE_FULL, as on a full disk
        conn.execute(text("CREATE TABLE filler (x BLOB)"))
        pages = conn.execute(text("PRAGMA page_count")).scalar()
        conn.execute(text(f"PRAGMA max_page_count = {pages}"))
        for _ in range(100):
            conn.execute(text("INSERT INTO filler VALUES (zeroblob(100000))"))
    fault = storage_fault(e.value)
    assert fault is not None and fault.kind == "full" and fault.http_code == 503
    store.close()


def _queued_job(store: Store, model_id: str) -> None:
    op = f"tunedModels/{model_id}/operations/x"
    store.create_tuned_model(
        TunedModelRow(id=model_id, owner="u", description="", base_model="models/tiny-random",
                      epoch_count=1, batch_size=4, learning_rate=0.01),
        OperationRow(name=op, tuned_model_id=model_id, owner="u"),
        JobRow(tuned_model_id=model_id, operation=op, owner="u", state="queued", spec={}),
        None)


def test_a_job_waiting_for_storage_is_not_claimed_until_its_time(tmp_path):
    store = Store.open(Settings(home=tmp_path))
    _queued_job(store, "m1")
    job = store.claim_job("w1", 30)
    assert job is not None and job.attempts == 1
    assert store.defer_job(job.seq, "w1", 0.5, "Waiting for storage: the disk is full.")
    assert store.get_tuned_model("m1", None).state_message.startswith("Waiting for storage")
    assert store.claim_job("w2", 30) is None  # still waiting
    time.sleep(0.6)
    again = store.claim_job("w2", 30)
    assert again is not None and again.seq == job.seq
    assert again.attempts == 1  # waiting for storage is not counted as a crash
    store.mark_started("m1", 5)
    assert store.get_tuned_model("m1", None).state_message == ""
    assert not store.defer_job(job.seq, "w1", 1, "not ours any more")
    store.close()


def test_a_starting_worker_removes_crashed_writes_of_jobs_nobody_runs(tmp_path):
    settings = Settings(home=tmp_path)
    store = Store.open(settings)
    _queued_job(store, "idle")
    _queued_job(store, "busy")
    running = store.claim_job("other-worker", 30)
    busy = "idle" if running.tuned_model_id == "idle" else "busy"
    idle = "busy" if busy == "idle" else "idle"
    tuned = settings.artifacts_dir / "tuned"
    for model_id in (idle, busy):
        (tuned / model_id / "checkpoints" / "epoch-1").mkdir(parents=True)
        (tuned / model_id / "checkpoints" / ".epoch-2-x7s0").mkdir()
        (tuned / model_id / "checkpoints" / ".epoch-2-x7s0" / "state.safetensors").write_bytes(
            b"\0" * 1000)
    Worker(settings, store=store, executor=object())._remove_interrupted_writes()
    assert [p.name for p in (tuned / idle / "checkpoints").iterdir()] == ["epoch-1"]
    assert (tuned / busy / "checkpoints" / ".epoch-2-x7s0").exists()  # its worker writes there
    store.close()
