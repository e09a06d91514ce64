"""Storage faults lose nothing: a full or read-only disk, made for real with a small tmpfs
mounted over a folder of a running service's data directory, and files damaged on disk.

- a full or read-only ``checkpoints/``: the job is not failed; it waits in the queue with the
  reason in its model's stateMessage, and finishes with the same snapshots as an undisturbed
  run once space returns (the tmpfs is remounted larger, or read-write);
- uploads and creates on a full or read-only disk: 503 UNAVAILABLE with Retry-After, saying
  what is wrong without a server path, and nothing half-created;
- a truncated adapter and a garbled manifest: DATA_LOSS saying what to do, not a 500 INTERNAL;
- ``tunelab serve`` on a read-only data directory: one plain line, no traceback.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_harness import Service, create_body, free_port, snapshot_tuples, wait_op

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="a real full or read-only file system is made by mounting a small tmpfs, which "
    "needs root (CI runs the suite as root)")

BODY = create_body(n=20, epochs=2, batch=4)  # 10 steps
RETRY = {"TUNELAB_STORAGE_RETRY_SECONDS": "0.5"}


def _mount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)


def _remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs at ``path`` for the duration (``size=64k``: smaller than one checkpoint)."""
    path.mkdir(parents=True, exist_ok=True)
    _mount(path, options)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="module")
def svc(tmp_path_factory) -> Iterator[Service]:
    service = Service(tmp_path_factory.mktemp("home"), env=RETRY).start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def client(svc) -> Iterator[httpx.Client]:
    with svc.client() as c:
        yield c


def _create(client: httpx.Client, model_id: str) -> httpx.Response:
    return client.post("/v1beta/tunedModels", params={"tunedModelId": model_id}, json=BODY)


@pytest.fixture(scope="module")
def reference(client) -> tuple[str, list]:
    """An undisturbed run: (its model id, its snapshots)."""
    op = _create(client, "undisturbed").json()
    done = wait_op(client, op["name"])
    assert "error" not in done, done
    return "undisturbed", snapshot_tuples(done)


def _wait_model(client: httpx.Client, model_id: str, until, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = client.get(f"/v1beta/tunedModels/{model_id}").json()
        if until(model):
            return model
        time.sleep(0.1)
    raise AssertionError(f"tunedModels/{model_id} did not reach the condition: {model}")


@pytest.mark.parametrize("fault, mount, recover, says", [
    ("full", "size=64k", "size=64m", "ran out of storage space"),
    ("read-only", "size=64m,ro", "rw", "became read-only"),
])
def test_a_job_waits_out_a_storage_fault_and_finishes_as_if_undisturbed(
        svc, client, reference, fault, mount, recover, says):
    model_id = f"{fault}-checkpoints"
    checkpoints = svc.home / "artifacts" / "tuned" / model_id / "checkpoints"
    with tmpfs(checkpoints, mount):
        op = _create(client, model_id).json()
        waiting = _wait_model(client, model_id,
                              lambda m: m.get("stateMessage") or m["state"] != "CREATING")
        assert waiting["state"] == "CREATING", waiting  # not FAILED
        assert waiting["stateMessage"].startswith("Waiting for storage")
        assert says in waiting["stateMessage"] and "tried again automatically" in (
            waiting["stateMessage"])
        assert str(svc.home) not in waiting["stateMessage"]
        assert not client.get(f"/v1beta/{op['name']}").json().get("done")
        assert list(checkpoints.iterdir()) == []  # no half-written checkpoint left behind

        _remount(checkpoints, recover)  # space returns
        done = wait_op(client, op["name"])
        assert "error" not in done, done
        assert snapshot_tuples(done) == reference[1]
        model = client.get(f"/v1beta/tunedModels/{model_id}").json()
        assert model["state"] == "ACTIVE" and "stateMessage" not in model
        assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch-1", "epoch-2"]


def test_an_upload_to_a_full_disk_is_503_and_stores_nothing(svc, client):
    rows = "".join(f"question number {i} {'x' * 60},ANSWER {i} {'y' * 60}\n" for i in range(1500))
    csv = "input,output\n" + rows  # ~200 KB: more than the 64 KiB disk holds
    files = svc.home / "artifacts" / "files"
    with tmpfs(files, "size=64k"):
        r = client.post("/v1beta/files", files={"file": ("data.csv", csv, "text/csv")})
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["status"] == "UNAVAILABLE" and "out of storage space" in err["message"]
        assert str(svc.home) not in err["message"] and "Traceback" not in r.text
        assert int(r.headers["Retry-After"]) > 0
        assert client.get("/v1beta/files").json().get("files", []) == []

        _remount(files, "size=64m")
        r = client.post("/v1beta/files", files={"file": ("data.csv", csv, "text/csv")})
        assert r.status_code == 200, r.text
        assert r.json()["exampleCount"] == 1500
        assert [f["name"] for f in client.get("/v1beta/files").json()["files"]] == [
            r.json()["name"]]
        client.delete(f"/v1beta/{r.json()['name']}")


def test_a_create_on_a_read_only_disk_is_503_and_creates_nothing(svc, client, reference):
    datasets = svc.home / "artifacts" / "datasets"
    with tmpfs(datasets, "size=64m,ro"):
        r = _create(client, "read-only-create")
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["status"] == "UNAVAILABLE" and "read-only" in err["message"]
        assert str(svc.home) not in err["message"]
        assert client.get("/v1beta/tunedModels/read-only-create").status_code == 404


def test_a_damaged_adapter_or_manifest_is_named_with_what_to_do(svc, client, reference):
    model_id = reference[0]
    out = svc.home / "artifacts" / "tuned" / model_id
    ask = {"contents": [{"role": "user", "parts": [{"text": "word 3"}]}],
           "generationConfig": {"maxOutputTokens": 4}}
    url = f"/v1beta/tunedModels/{model_id}:generateContent"
    assert client.post(url, json=ask).status_code == 200

    weights = out / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    r = client.post(url, json=ask)
    assert r.status_code == 500, r.text
    err = r.json()["error"]
    assert err["status"] == "DATA_LOSS" and "adapter weights on the server are damaged" in (
        err["message"])
    assert ":selectEpoch" in err["message"] and str(svc.home) not in err["message"]

    r = client.post(f"/v1beta/tunedModels/{model_id}:selectEpoch", json={"epoch": 2})
    assert r.status_code == 200, r.text  # served again from epoch 2's intact checkpoint
    assert client.post(url, json=ask).status_code == 200

    (out / "manifest.json").write_text('{"status": "completed", "snapsh')  # garbled
    r = client.get(f"/v1beta/tunedModels/{model_id}/epochs")
    assert r.status_code == 500, r.text
    err = r.json()["error"]
    assert err["status"] == "DATA_LOSS" and "manifest.json is damaged" in err["message"]
    assert "delete the model and tune it again" in err["message"]
    assert str(svc.home) not in err["message"]
    assert client.post(url, json=ask).status_code == 200  # serving does not need it


def _serve(home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TUNELAB_HOME": str(home), "TUNELAB_DEFAULT_BASE_MODEL": "tiny-random"}
    return subprocess.run(
        [sys.executable, "-m", "tunelab.cli", "serve", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.parametrize("populated", [False, True])
def test_serve_on_a_read_only_data_dir_says_so_in_one_line(tmp_path, populated):
    home = tmp_path / "home"
    with tmpfs(home, "size=64m"):
        if populated:  # a data dir tunelab made earlier, since remounted read-only
            from tunelab.config import Settings
            from tunelab.store import Store

            Store.open(Settings(home=home)).close()
        _remount(home, "ro")
        r = _serve(home)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert "Traceback" not in r.stderr
    assert lines[-1].startswith("Error: cannot start: the data directory")
    assert "read-only file system" in r.stderr and "TUNELAB_HOME" in r.stderr
