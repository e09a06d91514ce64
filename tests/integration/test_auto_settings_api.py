"""Unset hyperparameters are chosen from the data and reported as the Gemini API reports
hyperparameters, with one line on each choice (an extension strict clients never see)."""

from __future__ import annotations

from service_harness import examples, wait_op


def _create(client, n: int, hyperparameters: dict) -> dict:
    r = client.post("/v1beta/tunedModels", json={
        "baseModel": "models/tiny-random",
        "tuningTask": {"trainingData": {"examples": {"examples": examples(n)}},
                       "hyperparameters": hyperparameters}})
    assert r.status_code == 200, r.text
    return r.json()


def test_unset_values_are_chosen_reported_and_explained(client):
    op = _create(client, 48, {"epochCount": 1})  # 8 held out: 40 train, batch 4 → 10 steps
    choices = op["metadata"]["hyperparameterChoices"]
    assert choices[0] == "batchSize 4 (automatic): fewer than 1,000 examples."
    assert choices[1] == "epochCount 1: as given."
    assert choices[2].startswith("learningRate 0.01 (automatic): the base model's recommended "
                                 "rate, reached after 1 warmup step and decayed on a cosine")
    assert op["metadata"]["totalSteps"] == 10
    done = wait_op(client, op["name"])
    hp = done["response"]["tuningTask"]["hyperparameters"]
    assert (hp["epochCount"], hp["batchSize"], hp["learningRate"]) == (1, 4, 0.01)
    assert hp["choices"] == choices
    strict = client.get(f"/v1beta/{op['name']}", headers={"x-goog-api-client": "gax/2.0"})
    assert "hyperparameterChoices" not in strict.json()["metadata"]
    assert "choices" not in strict.json()["response"]["tuningTask"]["hyperparameters"]


def test_a_small_dataset_with_nothing_set(client):
    op = _create(client, 20, {})
    model = op["metadata"]["tunedModel"]
    got = client.get(f"/v1beta/{model}").json()["tuningTask"]["hyperparameters"]
    # 20 examples at batch 4: 5 steps an epoch; 20 epochs give 100 steps
    assert (got["epochCount"], got["batchSize"], op["metadata"]["totalSteps"]) == (20, 4, 100)
    assert got["choices"][-1].startswith("Served epoch: the last")
    client.delete(f"/v1beta/{model}")


def test_a_classifiers_rate_is_constant_and_says_why(client):
    teams = ("billing", "shipping", "accounts")
    r = client.post("/v1beta/tunedModels", json={
        "baseModel": "models/tiny-random",
        "tuningTask": {"trainingData": {"examples": {"examples": [
            {"textInput": f"message {i} from a customer", "output": teams[i % 3]}
            for i in range(24)]}}, "hyperparameters": {"epochCount": 1}}})
    assert r.status_code == 200, r.text
    choices = r.json()["metadata"]["hyperparameterChoices"]
    assert choices[2] == ("learningRate 0.01 (automatic): the base model's recommended rate, "
                          "constant over all 6 steps, no warmup: the outputs are 3 labels, and "
                          "a classifier learns its labels best at the full rate.")
    done = wait_op(client, r.json()["name"])
    served = done["response"]["tuningTask"]["hyperparameters"]["choices"]
    assert served[:len(choices)] == choices and served[-1].startswith("Answers: a classifier")
