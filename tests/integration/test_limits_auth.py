"""Limits that hold under concurrency, sign-in rate limits, no user enumeration, and caps on
keys, uploads and descriptions -- against a real server (``tunelab serve``) on SQLite and on
PostgreSQL, over HTTP."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from service_harness import Service, create_body


def _race(n: int, call) -> list[httpx.Response]:
    """``call(i)`` from ``n`` threads released together; the responses in order."""
    go = threading.Barrier(n)
    out: list[httpx.Response | BaseException] = [None] * n  # type: ignore[list-item]

    def run(i: int) -> None:
        try:
            go.wait()
            out[i] = call(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    errors = [r for r in out if not isinstance(r, httpx.Response)]
    assert not errors, errors
    return out  # type: ignore[return-value]


@pytest.fixture(params=["sqlite", "postgresql"])
def limited(request, tmp_path):
    """A server without a worker (jobs stay queued) and a limit of 4 jobs per user."""
    env = {"TUNELAB_MAX_CONCURRENT_JOBS": "4"}
    if request.param == "postgresql":
        env["TUNELAB_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    svc = Service(tmp_path, workers=0, env=env).start()
    yield svc
    svc.stop()


def test_concurrent_creates_cannot_pass_the_job_limit(limited):
    def create(i: int) -> httpx.Response:
        with limited.client() as c:
            return c.post("/v1beta/tunedModels", params={"tunedModelId": f"race-{i}"},
                          json=create_body(epochs=1))

    responses = _race(16, create)
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 4 + [429] * 12, [r.text for r in responses]
    for r in responses:
        if r.status_code == 429:
            err = r.json()["error"]
            assert err["status"] == "RESOURCE_EXHAUSTED"
            assert "max_concurrent_jobs" in err["message"] and "limit is 4" in err["message"]
    with limited.client() as c:
        models = c.get("/v1beta/tunedModels", params={"pageSize": 50}).json()["tunedModels"]
    assert len(models) == 4
    # a refused create leaves no examples behind
    datasets = Path(limited.home, "artifacts", "datasets")
    assert len(list(datasets.glob("*.jsonl"))) == 4
