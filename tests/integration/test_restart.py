"""Jobs survive an API restart and a worker killed with SIGKILL, and finish with the same
snapshots (step, epoch, meanLoss) as an uninterrupted run."""

from __future__ import annotations

import os
import signal

import pytest
from service_harness import Service, create_body, snapshot_tuples, wait_op

# 20 examples, batch 4, 3 epochs = 15 steps; each step is slowed down so the job can be
# interrupted in the middle of epoch 2.
BODY = create_body(n=20, epochs=3, batch=4)
SLOW = {"TUNELAB_STEP_DELAY_SECONDS": "0.25"}


def _reference(c) -> list[tuple]:
    op = c.post("/v1beta/tunedModels", json=BODY).json()
    done = wait_op(c, op["name"])
    assert "error" not in done, done
    snaps = snapshot_tuples(done)
    assert len(snaps) == 15
    return snaps


def _mid_epoch_2(op: dict) -> bool:
    return op["metadata"]["completedSteps"] >= 7


def test_api_restart_mid_job(tmp_path):
    svc = Service(tmp_path, env=SLOW).start()
    try:
        with svc.client() as c:
            expected = _reference(c)
            op = c.post("/v1beta/tunedModels", json=BODY).json()
            wait_op(c, op["name"], until=_mid_epoch_2)
        svc.stop()  # API and its worker stop; the job goes back to the queue
        svc = Service(tmp_path, env=SLOW)
        svc.start()
        with svc.client() as c:
            during = c.get(f"/v1beta/{op['name']}").json()
            assert len(snapshot_tuples(during)) >= 7  # nothing lost while down
            done = wait_op(c, op["name"])
            assert "error" not in done, done
            assert snapshot_tuples(done) == expected
            model = c.get(f"/v1beta/{done['metadata']['tunedModel']}").json()
            assert snapshot_tuples(model) == expected and model["state"] == "ACTIVE"
    finally:
        svc.stop()


def test_worker_killed_mid_epoch(tmp_path):
    svc = Service(tmp_path, workers=0, env=SLOW).start()
    try:
        svc.start_worker()
        with svc.client() as c:
            expected = _reference(c)
            op = c.post("/v1beta/tunedModels", json=BODY).json()
            wait_op(c, op["name"], until=_mid_epoch_2)
            victim = svc.worker_procs[0]
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            at_kill = c.get(f"/v1beta/{op['name']}").json()
            assert not at_kill.get("done")
            svc.start_worker()  # claims the job once the dead worker's lease lapses (2 s)
            done = wait_op(c, op["name"])
            assert "error" not in done, done
            assert snapshot_tuples(done) == expected
    finally:
        svc.stop()


@pytest.mark.parametrize("_", [0])
def test_serve_restarts_a_killed_worker(tmp_path, _):
    """``tunelab serve`` supervises its worker: a killed one is replaced and the job ends."""
    svc = Service(tmp_path, env=SLOW).start()
    try:
        with svc.client() as c:
            op = c.post("/v1beta/tunedModels", json=create_body(n=20, epochs=2)).json()
            wait_op(c, op["name"], until=lambda o: o["metadata"]["completedSteps"] >= 2)
            children = open(f"/proc/{svc.proc.pid}/task/{svc.proc.pid}/children").read().split()
            assert children
            for pid in children:
                os.kill(int(pid), signal.SIGKILL)
            done = wait_op(c, op["name"])
            assert "error" not in done and len(snapshot_tuples(done)) == 10
    finally:
        svc.stop()


def test_worker_killed_during_a_refit(tmp_path):
    """48 examples, epochs automatic: a first run of 81 steps on 36, then a refit on all 48
    (training/refit.py). A worker killed half-way through the refit: the next one resumes the
    refit from its last checkpoint, and the job ends as an uninterrupted one, the corrected
    total included."""
    body = create_body(n=48)
    body["tuningTask"]["hyperparameters"] = {}
    svc = Service(tmp_path, workers=0, env={"TUNELAB_STEP_DELAY_SECONDS": "0.02"}).start()
    try:
        svc.start_worker()
        with svc.client() as c:
            ref = wait_op(c, c.post("/v1beta/tunedModels", json=body).json()["name"])
            assert "error" not in ref, ref
            expected, total = snapshot_tuples(ref), ref["metadata"]["totalSteps"]
            assert total > 81 and len(expected) == total
            op = c.post("/v1beta/tunedModels", json=body).json()
            half = 81 + max(1, (total - 81) // 2)
            wait_op(c, op["name"], until=lambda o: o["metadata"]["completedSteps"] >= half)
            victim = svc.worker_procs[0]
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            svc.start_worker()
            done = wait_op(c, op["name"])
            assert "error" not in done, done
            assert snapshot_tuples(done) == expected and done["metadata"]["totalSteps"] == total
            epochs = c.get(f"/v1beta/{done['metadata']['tunedModel']}/epochs").json()
            assert epochs["refit"]["served"] and epochs["refit"]["status"] == "COMPLETED"
    finally:
        svc.stop()
