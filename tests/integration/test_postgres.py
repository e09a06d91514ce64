"""tunelab on PostgreSQL (``TUNELAB_DATABASE_URL=postgresql+psycopg://…``), against a throwaway
cluster started by ``pg_cluster`` (tests/conftest.py); skipped without PostgreSQL or psycopg.

The queue's behaviour (order, leases, concurrent claims) is covered by
tests/unit/test_store_queue.py, which runs on both SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from service_harness import Service, create_body, snapshot_tuples, wait_op


def test_migrations_upgrade_an_empty_database_to_the_tables(postgres_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect, text

    from tunelab.store import Store
    from tunelab.store.db import _alembic_config
    from tunelab.store.tables import Base

    store = Store(postgres_url)
    try:
        head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
        with store.engine.connect() as conn:
            assert conn.dialect.name == "postgresql"
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == head
            assert set(Base.metadata.tables) <= set(inspect(conn).get_table_names())
            # what the migrations built is what tables.py declares (types, lengths, indexes)
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == [], diff
            cols = {c["name"]: c for c in inspect(conn).get_columns("jobs")}
            assert str(cols["cancel_requested"]["type"]) == "BOOLEAN"
            assert "JSON" in str(cols["spec"]["type"])
    finally:
        store.close()


def test_processes_starting_together_migrate_once(postgres_url):
    """serve and workers on several machines open the store at once: the advisory lock makes
    them take turns instead of racing to CREATE TABLE."""
    from tunelab.store import Store

    errors: list[BaseException] = []
    go = threading.Barrier(4)

    def open_store() -> None:
        try:
            go.wait()
            Store(postgres_url).close()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


def test_store_round_trips_types(postgres_url):
    """Aware UTC timestamps, JSON, booleans and the jobs sequence, as read back from
    PostgreSQL."""
    from datetime import UTC, datetime, timedelta, timezone

    from tunelab.store import FileRow, JobRow, OperationRow, Store, TunedModelRow

    store = Store(postgres_url)
    try:
        for i, mid in enumerate(("a", "b")):
            op = f"tunedModels/{mid}/operations/x"
            store.create_tuned_model(
                TunedModelRow(id=mid, owner="me", base_model="models/tiny-random",
                              epoch_count=1, batch_size=4, learning_rate=0.01),
                OperationRow(name=op, tuned_model_id=mid, owner="me"),
                JobRow(tuned_model_id=mid, operation=op, owner="me",
                       spec={"k": [1, 2.5, "é"], "n": {"x": None}, "i": i}),
                None,
            )
        store.add_file(FileRow(id="f", owner="me", kind="upload", path="files/f",
                               info={"warnings": ["ü"], "preview": []}))
        jobs = store.list_jobs()
        assert [j.seq for j in jobs] == sorted(j.seq for j in jobs) and len(jobs) == 2
        assert jobs[0].spec == {"k": [1, 2.5, "é"], "n": {"x": None}, "i": 0}
        assert jobs[0].cancel_requested is False
        m = store.get_tuned_model("a", "me")
        assert m.create_time.tzinfo is not None and m.cancelled is False
        assert abs(m.create_time - datetime.now(UTC)) < timedelta(minutes=5)
        assert store.get_file("f", "me").info == {"warnings": ["ü"], "preview": []}
        # a non-UTC aware time is stored as the same instant
        at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
        job = store.claim_job("w", 30)
        store.put_snapshot(job.seq, "a", 1, 1, 1.5, at)
        assert store.snapshots("a")[0].compute_time == at
        store.request_cancel("b", "me", "cancelled", "cancelled before it started")
        assert store.get_tuned_model("b", "me").cancelled is True
        assert [m.id for m in store.list_tuned_models("me", 10, None, "").items] == ["b", "a"]
    finally:
        store.close()


@pytest.fixture(scope="module")
def pg_service(tmp_path_factory, pg_cluster):
    """``tunelab serve --no-worker`` and one ``tunelab worker`` process, on PostgreSQL."""
    url = pg_cluster.create_database()
    svc = Service(tmp_path_factory.mktemp("pg-home"), workers=0,
                  env={"TUNELAB_DATABASE_URL": url})
    svc.start()
    svc.start_worker()
    yield svc
    svc.stop()


def test_tune_and_generate_on_postgres(pg_service):
    svc = pg_service
    assert not (svc.home / "tunelab.db").exists()  # the store is PostgreSQL, not SQLite
    with svc.client() as c:
        body = create_body(epochs=2, displayName="On Postgres", temperature=0.0)
        r = c.post("/v1beta/tunedModels", params={"tunedModelId": "pg-model"}, json=body)
        assert r.status_code == 200, r.text
        op = wait_op(c, r.json()["name"])
        assert "error" not in op, op
        assert op["response"]["state"] == "ACTIVE"
        assert [s[:2] for s in snapshot_tuples(op)] == [(i, 1 + (i - 1) // 5)
                                                         for i in range(1, 11)]
        m = c.get("/v1beta/tunedModels/pg-model").json()
        assert m["createTime"].endswith("Z") and m["tuningTask"]["completeTime"]
        found = c.get("/v1beta/tunedModels", params={"filter": "owner:me postgres"}).json()
        assert [t["name"] for t in found["tunedModels"]] == ["tunedModels/pg-model"]
        ops = c.get("/v1beta/tunedModels/pg-model/operations").json()
        assert [o["name"] for o in ops["operations"]] == [op["name"]]
        req = {"contents": [{"role": "user", "parts": [{"text": "word 3"}]}],
               "generationConfig": {"maxOutputTokens": 8}}
        a = c.post("/v1beta/tunedModels/pg-model:generateContent", json=req)
        assert a.status_code == 200, a.text
        cand = a.json()["candidates"][0]
        assert cand["content"]["role"] == "model"
    # an API key may call generateContent too (keys and tokens live in PostgreSQL)
    import httpx

    b = httpx.post(f"{svc.url}/v1beta/tunedModels/pg-model:generateContent", json=req,
                   headers={"x-goog-api-key": svc.api_key}, timeout=60)
    assert b.status_code == 200, b.text
    assert b.json()["candidates"][0]["content"] == cand["content"]  # temperature 0: greedy


def test_upload_with_a_long_name_on_postgres(pg_service):
    """PostgreSQL enforces VARCHAR(255) (SQLite does not): a long display name is cut, not a
    500."""
    csv = "text_input,output\n" + "".join(f"word {i},WORD {i}\n" for i in range(20))
    with pg_service.client() as c:
        r = c.post("/v1beta/files", files={"file": ("data.csv", csv, "text/csv")},
                   data={"displayName": "x" * 300})
        assert r.status_code == 200, r.text
        f = r.json()
        assert f["displayName"] == "x" * 255 and f["exampleCount"] == 20
        assert f["name"] in [x["name"] for x in c.get("/v1beta/files").json()["files"]]
