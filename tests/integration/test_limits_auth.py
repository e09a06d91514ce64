"""Limits that hold under concurrency, sign-in rate limits, no user enumeration, and caps on
keys, uploads and descriptions -- against a real server (``tunelab serve``) on SQLite and on
PostgreSQL, over HTTP."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from service_harness import Service, create_body

CSV = "text_input,output\n" + "".join(f"word {i},WORD {i}\n" for i in range(20))


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


# -- one server with small limits for the rest of the module --------------------------------
STUDIO = {"X-Tunelab-Studio": "1"}
GUARDED = {
    "TUNELAB_SIGNIN_ATTEMPTS": "3",
    "TUNELAB_SIGNIN_BACKOFF_SECONDS": "1",
    "TUNELAB_MAX_FILES": "2",
    "TUNELAB_MAX_API_KEYS": "2",
    "TUNELAB_MAX_DESCRIPTION_CHARS": "50",
    # 20 wrong credentials, then one more every 100 s: the tests see the refusal, not a refill
    "TUNELAB_BAD_CREDENTIALS_BURST": "20",
    "TUNELAB_BAD_CREDENTIALS_PER_SECOND": "0.01",
}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    svc = Service(tmp_path_factory.mktemp("guarded"), workers=0, env=GUARDED).start()
    acc = svc.accounts()
    for name in ("ann", "bea", "cid"):
        acc.add_user(name, f"{name}-password")
    yield svc
    svc.stop()


def _token(svc: Service, user: str, password: str) -> httpx.Response:
    return httpx.post(svc.url + "/oauth2/token", data={
        "grant_type": "password", "client_id": "tunelab", "username": user,
        "password": password})


def _retry_after(r: httpx.Response) -> int:
    return int(r.headers["Retry-After"])


def test_token_endpoint_backs_off_in_oauth_shape(guarded):
    for _ in range(3):
        r = _token(guarded, "ann", "wrong-password")
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = _token(guarded, "ann", "ann-password")  # even the right one waits now
    assert r.status_code == 429, r.text
    assert r.json()["error"] == "rate_limit_exceeded"
    assert "Too many sign-in attempts" in r.json()["error_description"]
    assert _retry_after(r) >= 1 and r.headers["Cache-Control"] == "no-store"
    time.sleep(_retry_after(r) + 0.2)
    r = _token(guarded, "ann", "ann-password")  # the right password after the wait works
    assert r.status_code == 200 and r.json()["access_token"]


def test_unknown_users_back_off_as_known_ones_do(guarded):
    answers = [_token(guarded, "no-such-user", "wrong-password") for _ in range(4)]
    known = [_token(guarded, "bea", "wrong-password") for _ in range(4)]
    assert [(r.status_code, r.json()) for r in answers] == [
        (r.status_code, r.json()) for r in known]
    assert [r.status_code for r in answers] == [400, 400, 400, 429]


def test_studio_sign_in_backs_off_in_google_shape(guarded):
    with httpx.Client(base_url=guarded.url) as c:
        for _ in range(3):
            r = c.post("/studio/login", json={"username": "cid", "password": "nope"},
                       headers=STUDIO)
            assert r.status_code == 401
        r = c.post("/studio/login", json={"username": "cid", "password": "cid-password"},
                   headers=STUDIO)
        assert r.status_code == 429
        err = r.json()["error"]
        assert err["status"] == "RESOURCE_EXHAUSTED" and err["code"] == 429
        assert err["message"].startswith("Too many sign-in attempts. Try again in")
        assert "set-cookie" not in r.headers
        time.sleep(_retry_after(r) + 0.2)
        r = c.post("/studio/login", json={"username": "cid", "password": "cid-password"},
                   headers=STUDIO)
        assert r.status_code == 200 and r.json()["user"]["name"] == "cid"


def test_caps_on_keys_uploads_and_descriptions(guarded):
    with guarded.client() as c:
        for _ in range(2):
            assert c.post("/v1beta/files", files={"file": ("d.csv", CSV)}).status_code == 200
        r = c.post("/v1beta/files", files={"file": ("d.csv", CSV)})
        assert r.status_code == 429 and "max_files" in r.json()["error"]["message"]
        assert len(list(Path(guarded.home, "artifacts", "files").iterdir())) == 2
        # the owner has the key `serve` made; one more fits
        assert c.post("/v1beta/apiKeys", json={"displayName": "k"}).status_code == 200
        r = c.post("/v1beta/apiKeys", json={"displayName": "k"})
        assert r.status_code == 429 and "max_api_keys" in r.json()["error"]["message"]
        body = create_body(epochs=1, description="d" * 51)
        r = c.post("/v1beta/tunedModels", params={"tunedModelId": "long"}, json=body)
        assert r.status_code == 400
        assert "description is 51 characters; the limit is 50" in r.json()["error"]["message"]
        r = c.post("/v1beta/tunedModels", params={"tunedModelId": "short"},
                   json=create_body(epochs=1, description="fine"))
        assert r.status_code == 200
        r = c.patch("/v1beta/tunedModels/short", json={"description": "d" * 51})
        assert r.status_code == 400 and "limit is 50" in r.json()["error"]["message"]


def test_wrong_credentials_are_throttled_per_address(guarded):
    """Last in the module: it leaves 127.0.0.1 throttled."""
    with httpx.Client(base_url=guarded.url) as c:
        codes = [c.get("/v1beta/models", headers={"x-goog-api-key": f"tlk_wrong{i}"}).status_code
                 for i in range(25)]
        assert codes[:20] == [400] * 20 and set(codes[20:]) == {429}
        r = c.get("/v1beta/models", headers={"Authorization": "Bearer tla_wrong"})
        assert r.status_code == 429 and _retry_after(r) >= 1
        err = r.json()["error"]
        assert err["status"] == "RESOURCE_EXHAUSTED" and "invalid API key" in err["message"]
        assert any(d.get("retryDelay") for d in err["details"])
        # while throttled, the address waits whatever it sends; requests without
        # credentials are not guesses and still get their 401
        r = c.get("/v1beta/models", headers={"x-goog-api-key": guarded.api_key})
        assert r.status_code == 429
        assert c.get("/v1beta/models").status_code == 401
