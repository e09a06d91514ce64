"""Training as Ray tasks (TUNELAB_RAY_ADDRESS): a real local Ray cluster started with
`ray start --head`, and a real service whose worker sends each job's training to it. The job
must be the same job as on a local worker: the same snapshots for the same seed, cancel within
a step keeping what was learned, clear errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from service_harness import Service, create_body, free_port, snapshot_tuples, wait_op

pytest.importorskip("ray")
RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def ray_address():
    # Ray's socket paths must stay short: its own directory right under the temp root
    temp = tempfile.mkdtemp(prefix="tlray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    port = free_port()
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=2",
                    "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats"],
                   check=True, env=env, capture_output=True, timeout=300)
    yield f"127.0.0.1:{port}"
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_service(tmp_path_factory, ray_address):
    svc = Service(tmp_path_factory.mktemp("rayhome"),
                  env={"TUNELAB_RAY_ADDRESS": ray_address}).start()
    yield svc
    svc.stop()


def test_a_job_trains_on_ray_like_on_a_local_worker(ray_service, service):
    body = create_body(epochs=2)
    runs = {}
    for name, svc in (("ray", ray_service), ("local", service)):
        with svc.client() as c:
            op = c.post("/v1beta/tunedModels", params={"tunedModelId": "same-job"},
                        json=body).json()
            done = wait_op(c, op["name"], timeout=600)
            assert "error" not in done, done
            runs[name] = snapshot_tuples(done)
            r = c.post("/v1beta/tunedModels/same-job:generateContent",
                       json={"contents": [{"parts": [{"text": "word 3"}]}],
                             "generationConfig": {"maxOutputTokens": 3}})
            assert r.status_code == 200, r.text
    assert len(runs["ray"]) == 10 and runs["ray"] == runs["local"]
    log = ray_service.read_log()
    assert "completed (trained in Ray node" in log, log


def test_cancel_reaches_the_ray_task(ray_address, tmp_path):
    svc = Service(tmp_path, env={"TUNELAB_RAY_ADDRESS": ray_address,
                                 "TUNELAB_STEP_DELAY_SECONDS": "0.3"}).start()
    try:
        with svc.client() as c:
            op = c.post("/v1beta/tunedModels", json=create_body(epochs=20)).json()
            wait_op(c, op["name"], timeout=600,
                    until=lambda o: o["metadata"].get("completedSteps", 0) >= 2)
            assert c.post(f"/v1beta/{op['name']}:cancel").json() == {}
            done = wait_op(c, op["name"], timeout=300)
            assert done["error"]["code"] == 1
            steps = len(snapshot_tuples(done))
            assert 2 <= steps < 100
            model = c.get(f"/v1beta/{op['name'].split('/operations/')[0]}").json()
            assert model["state"] == "ACTIVE"
            assert f"after step {steps} of 100" in model["stateMessage"]
    finally:
        svc.stop()


def test_unreachable_cluster_fails_the_job_with_what_to_do(tmp_path):
    svc = Service(tmp_path, env={"TUNELAB_RAY_ADDRESS": f"127.0.0.1:{free_port()}"}).start()
    try:
        with svc.client() as c:
            op = c.post("/v1beta/tunedModels", json=create_body(epochs=1)).json()
            done = wait_op(c, op["name"], timeout=600)
            message = done["error"]["message"]
            assert "Cannot reach the Ray cluster at 127.0.0.1:" in message, message
            assert "TUNELAB_RAY_ADDRESS" in message
    finally:
        svc.stop()


def test_a_killed_worker_takes_its_ray_task_along_and_the_job_resumes(ray_address, tmp_path):
    """kill -9 of the worker mid-epoch 2: Ray ends the task it owned (else two trainings would
    write the same checkpoints), the lease lapses, a new worker resumes from the epoch-1
    checkpoint, and the run ends with the snapshots of an uninterrupted one."""
    import signal

    body = create_body(n=20, epochs=3, batch=4)
    svc = Service(tmp_path, workers=0, env={"TUNELAB_RAY_ADDRESS": ray_address,
                                            "TUNELAB_STEP_DELAY_SECONDS": "0.3"}).start()
    try:
        with svc.client() as c:
            svc.start_worker()
            reference = c.post("/v1beta/tunedModels", json=body).json()
            expected = snapshot_tuples(wait_op(c, reference["name"], timeout=600))
            assert len(expected) == 15
            op = c.post("/v1beta/tunedModels", json=body).json()
            wait_op(c, op["name"], timeout=600,
                    until=lambda o: o["metadata"].get("completedSteps", 0) >= 7)
            victim = svc.worker_procs[0]
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            svc.start_worker()
            done = wait_op(c, op["name"], timeout=600)
            assert "error" not in done, done
            assert snapshot_tuples(done) == expected
    finally:
        svc.stop()
