"""The refit through the service (training/refit.py): a small dataset with automatic epochs is
scored on held-out examples, then tuned again on every example; the operation's steps, the
evaluation, the epochs view and :selectEpoch say so; a cancel during the refit keeps the
first run's model."""

from __future__ import annotations

import pytest
from service_harness import Service, examples, wait_op

# 48 examples: a third (16) held out, 32 trained at batch 4 = 8 steps an epoch; 9 epochs (on all
# 48, 12 steps an epoch: 100 steps for the served refit)
FIRST = 72


def _create(client, model_id: str) -> dict:
    r = client.post("/v1beta/tunedModels", params={"tunedModelId": model_id}, json={
        "baseModel": "models/tiny-random",
        "tuningTask": {"trainingData": {"examples": {"examples": examples(48)}}}})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_refit_is_planned_run_reported_and_can_be_chosen(client):
    op = _create(client, "refit-flow")
    # at most every epoch again on all 48 (12 steps each), until the refit's length is known
    assert op["metadata"]["totalSteps"] == FIRST + 9 * 12
    assert op["metadata"]["hyperparameterChoices"][-1].startswith(
        "Served model: a refit (automatic). The epoch is chosen on the 16 held-out examples")
    done = wait_op(client, op["name"])
    assert "error" not in done, done
    epochs = client.get("/v1beta/tunedModels/refit-flow/epochs").json()
    refit = epochs["refit"]
    steps = refit["steps"]
    assert refit["status"] == "COMPLETED" and refit["served"] is True
    assert (refit["examples"], refit["heldOut"], refit["firstStep"]) == (48, 16, FIRST + 1)
    assert steps == refit["fromEpoch"] * 12 and refit["meanLoss"] > 0
    assert epochs.get("selectedEpoch") is None and epochs["stepsPerEpoch"] == 8
    assert [e["epoch"] for e in epochs["epochs"]] == list(range(1, 10))  # the refit is no epoch
    # the job's steps: the first run's, then the refit's; the total corrected to the real one
    meta = done["metadata"]
    assert meta["totalSteps"] == FIRST + steps == meta["completedSteps"]
    assert [s["step"] for s in meta["snapshots"]] == list(range(1, FIRST + steps + 1))
    evaluation = done["response"]["evaluation"]
    assert f"({steps} steps), as many epochs as the run that held 16" in evaluation["refit"]
    assert evaluation["bestEpoch"] == refit["fromEpoch"]
    # serve an epoch of the first run, then the refit again
    picked = client.post("/v1beta/tunedModels/refit-flow:selectEpoch", json={"epoch": 3}).json()
    assert picked["selectedEpoch"] == 3 and picked["refit"]["served"] is False
    assert "Epoch 3 of the run that held 16 examples out is served" in picked["refit"]["message"]
    answer = client.post("/v1beta/tunedModels/refit-flow:generateContent", json={
        "contents": [{"parts": [{"text": "add 1 and 2"}]}]})
    assert answer.status_code == 200, answer.text
    back = client.post("/v1beta/tunedModels/refit-flow:selectEpoch", json={"refit": True}).json()
    assert back.get("selectedEpoch") is None and back["refit"]["served"] is True
    model = client.get("/v1beta/tunedModels/refit-flow").json()
    assert "trained on all 48 examples" in model["evaluation"]["refit"]


@pytest.mark.parametrize("body", [{}, {"epoch": 2, "refit": True}, {"refit": False}])
def test_select_epoch_takes_an_epoch_or_the_refit(client, body):
    r = client.post("/v1beta/tunedModels/refit-flow:selectEpoch", json=body)
    assert r.status_code == 400
    assert "Give either epoch" in r.json()["error"]["message"]


def test_a_model_without_a_refit_says_so_when_asked_for_one(client):
    r = client.post("/v1beta/tunedModels", params={"tunedModelId": "no-refit"}, json={
        "baseModel": "models/tiny-random",
        "tuningTask": {"trainingData": {"examples": {"examples": examples(48)}},
                       "hyperparameters": {"epochCount": 2}}})
    assert r.status_code == 200, r.text
    assert "refit" not in r.json()["metadata"]["hyperparameterChoices"][-1]
    wait_op(client, r.json()["name"])
    assert "refit" not in client.get("/v1beta/tunedModels/no-refit/epochs").json()
    r = client.post("/v1beta/tunedModels/no-refit:selectEpoch", json={"refit": True})
    assert r.status_code == 400 and "no completed refit" in r.json()["error"]["message"]


def test_cancelled_during_the_refit_the_first_run_is_served(tmp_path):
    svc = Service(tmp_path, env={"TUNELAB_STEP_DELAY_SECONDS": "0.03"}).start()
    try:
        with svc.client() as c:
            op = _create(c, "cut-refit")
            wait_op(c, op["name"], until=lambda o: o["metadata"].get("completedSteps", 0)
                    >= FIRST + 3 or o.get("done"))
            assert c.post(f"/v1beta/{op['name']}:cancel").status_code == 200
            done = wait_op(c, op["name"])
            model = c.get("/v1beta/tunedModels/cut-refit").json()
            epochs = c.get("/v1beta/tunedModels/cut-refit/epochs").json()
    finally:
        svc.stop()
    assert done["error"]["code"] == 1  # CANCELLED, as any cancel
    chosen = epochs["refit"]["fromEpoch"]
    assert model["state"] == "ACTIVE" and model["cancelled"] is True
    message = model["stateMessage"]
    assert message.startswith("The refit on all 48 examples was cancelled after step ")
    assert f"the model serves epoch {chosen} of the run that held 16 of them out" in message
    assert message.endswith("which completed.")
    assert epochs["refit"]["status"] == "CANCELLED" and not epochs["refit"]["served"]
    assert epochs["selectedEpoch"] == chosen
    assert model["evaluation"]["bestEpoch"] == chosen
    assert "unpredictable" not in model["evaluation"]["advice"]
