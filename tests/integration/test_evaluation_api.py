"""Validation data, per-epoch scores and :evaluate over HTTP, against a real server."""

from __future__ import annotations

import pytest
from service_harness import create_body, wait_op


def labelled(n: int, start: int = 0) -> list[dict]:
    return [{"textInput": f"item {i}", "output": "even" if i % 2 == 0 else "odd"}
            for i in range(start, start + n)]


def body_with(examples: list[dict], epochs: int = 2, **task) -> dict:
    body = create_body(epochs=epochs)
    body["tuningTask"]["trainingData"] = {"examples": {"examples": examples}}
    body["tuningTask"].update(task)
    return body


@pytest.fixture(scope="module")
def held_out(service):
    with service.client() as c:
        r = c.post("/v1beta/tunedModels", params={"tunedModelId": "held"},
                   json=body_with(labelled(48)))
        assert r.status_code == 200, r.text
        queued = r.json()
        return queued, wait_op(c, queued["name"])


def test_held_out_examples_are_listed_and_every_epoch_is_scored(client, held_out):
    queued, op = held_out
    v = queued["metadata"]["evaluation"]["validation"]
    assert v["source"] == "HELD_OUT" and v["exampleCount"] == 8
    assert len(v["heldOutExamples"]) == 8 and "8 of the 48 examples were held out" in v["message"]
    assert queued["metadata"]["totalSteps"] == 2 * 10  # 40 training examples, batch 4
    ev = op["metadata"]["evaluation"]
    assert ev == op["response"]["evaluation"]
    assert ev["metric"] == "accuracy" and ev["validation"] == v
    assert ev["metricNote"].startswith("Accuracy ranks them: the outputs are labels")
    assert ev["baseline"]["epoch"] == 0 and [e["epoch"] for e in ev["epochs"]] == [1, 2]
    for e in ev["epochs"]:
        assert {"validationLoss", "exactMatch", "score", "accuracy", "confusion"} <= e.keys()
        assert sum(x["count"] for x in e["confusion"]) == 8
    best = ev["bestEpoch"]
    assert ev["advice"].startswith(f"Epoch {best}") and "validation accuracy" in ev["advice"]
    assert "evaluating" not in ev
    model = client.get("/v1beta/tunedModels/held").json()
    assert model["evaluation"] == ev
    epochs = client.get("/v1beta/tunedModels/held/epochs").json()
    assert epochs["selectedEpoch"] == best and epochs["advice"]["basis"] == "validation"
    assert [x["validationScore"] for x in epochs["epochs"]] == [e["score"] for e in ev["epochs"]]


def test_below_40_examples_nothing_is_held_out_and_the_api_says_so(client):
    r = client.post("/v1beta/tunedModels", json=body_with(labelled(24), epochs=1))
    assert r.status_code == 200, r.text
    v = r.json()["metadata"]["evaluation"]["validation"]
    assert v["source"] == "NONE" and v["exampleCount"] == 0
    assert "fewer than 40" in v["message"]
    op = wait_op(client, r.json()["name"])
    assert op["response"]["evaluation"]["validation"] == v
    epochs = client.get(f"/v1beta/{op['metadata']['tunedModel']}/epochs").json()
    assert epochs["advice"]["basis"] == "training_loss"


def test_given_validation_data_with_a_duplicate_is_warned_about(client):
    given = [{"textInput": "item 3", "output": "odd"}, {"textInput": "item 99", "output": "odd"}]
    r = client.post("/v1beta/tunedModels", json=body_with(
        labelled(24), epochs=1, validationData={"examples": {"examples": given}}))
    assert r.status_code == 200, r.text
    v = r.json()["metadata"]["evaluation"]["validation"]
    assert v["source"] == "GIVEN" and v["exampleCount"] == 2 and "heldOutExamples" not in v
    assert "1 of 2 validation inputs also appear in the training data" in v["warnings"][0]
    op = wait_op(client, r.json()["name"])
    assert [e["epoch"] for e in op["response"]["evaluation"]["epochs"]] == [1]


def test_bad_validation_data_is_reported_with_its_place(client):
    bad = [{"textInput": "item 1", "output": " "}]
    r = client.post("/v1beta/tunedModels", json=body_with(
        labelled(24), validationData={"examples": {"examples": bad}}))
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["status"] == "INVALID_ARGUMENT"
    assert "validationData, example 1" in err["message"] and "only whitespace" in err["message"]
    r = client.post("/v1beta/tunedModels", json=body_with(
        labelled(24), validationData={"examples": {"examples": []}}))
    assert r.status_code == 400 and "validationData holds no examples" in r.text


def test_evaluate_compares_the_tuned_model_with_its_base(client, held_out):
    test = labelled(6, start=100)
    r = client.post("/v1beta/tunedModels/held:evaluate",
                    json={"testData": {"examples": {"examples": test}}})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["metric"] == "accuracy" and out["exampleCount"] == 6
    assert [x["model"] for x in out["results"]] == ["tunedModels/held", "models/tiny-random"]
    for x in out["results"]:
        assert 0 <= x["score"] <= 1 and x["meanLatencyMs"] > 0
    for d in out.get("differences", []):
        assert [a["model"] for a in d["answers"]] == ["tunedModels/held", "models/tiny-random"]
        assert len({a["text"].strip() for a in d["answers"]}) == 2
    assert out["differingCount"] == len(out.get("differences", []))


def test_the_base_is_asked_as_the_tuned_model_is_and_scores_as_in_its_validation(client,
                                                                                 held_out):
    """A tuned classifier answers with its labels; the base model beside it is asked the same
    way (as the validation scores ask it), so on the held-out examples :evaluate gives the base
    the very score the job's baseline reports, and every base answer is one of the labels."""
    _, op = held_out
    ev = op["metadata"]["evaluation"]
    every = labelled(48)
    test = [every[n - 1] for n in ev["validation"]["heldOutExamples"]]
    out = client.post("/v1beta/tunedModels/held:evaluate",
                      json={"testData": {"examples": {"examples": test}}}).json()
    tuned, base = out["results"]
    assert base["model"] == "models/tiny-random" and "askedAs" not in tuned
    assert base["askedAs"] == "tunedModels/held" and base["askedWith"] == "its 2 labels"
    assert base["score"] == ev["baseline"]["score"]
    for d in out.get("differences", []):
        assert d["answers"][1]["text"] in ("even", "odd")


def test_evaluate_scores_short_values_by_exact_match(client, held_out):
    """Values (codes, dates, amounts) are right or wrong: the metric is exactMatch, and token F1
    is reported beside it."""
    test = [{"textInput": f"code of item {i}", "output": f"A-{100 + i}"} for i in range(5)]
    r = client.post("/v1beta/tunedModels/held:evaluate",
                    json={"testData": {"examples": {"examples": test}}, "compareWith": []})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["metric"] == "exactMatch" and out["exampleCount"] == 5
    assert out["metricNote"].startswith(
        "Exact match ranks them: the outputs are short values or share a fixed format")
    (result,) = out["results"]
    assert result["score"] == result["exactMatch"] and 0 <= result["tokenF1"] <= 1


def test_evaluate_errors_say_what_to_do(client, held_out):
    too_many = {"testData": {"examples": {"examples": labelled(101)}}}
    r = client.post("/v1beta/tunedModels/held:evaluate", json=too_many)
    assert r.status_code == 400 and "at most 100 are scored per request" in r.text
    r = client.post("/v1beta/tunedModels/held:evaluate",
                    json={"testData": {"examples": {"examples": labelled(2)}},
                          "compareWith": ["tunedModels/nope"]})
    assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"
    r = client.post("/v1beta/tunedModels/held:evaluate",
                    json={"testData": {"examples": {"examples": labelled(2)}},
                          "compareWith": ["gpt"]})
    assert r.status_code == 400 and "'models/ID' or 'tunedModels/ID'" in r.text


def test_compare_with_names_only_the_servers_base_models(client, held_out, tmp_path):
    """'models/...' in compareWith is one of the server's base models: a server folder, named
    through 'models/../..', is an unknown base model whether it exists or not (not loaded, not
    confirmed to exist), and the answer names the server's models, never a local path."""
    (tmp_path / "config.json").write_text("{}")
    for folder in (tmp_path, tmp_path / "missing"):
        r = client.post("/v1beta/tunedModels/held:evaluate", json={
            "testData": {"examples": {"examples": labelled(2)}},
            "compareWith": ["models/" + "../" * 30 + str(folder).lstrip("/")]})
        assert r.status_code == 404, r.text
        message = r.json()["error"]["message"]
        assert "is not a base model of this server; give one of models/" in message
        assert "models/tiny-random" in message
        assert "path" not in message and "folder" not in message


def test_cli_eval_of_a_served_model_and_its_base(service, held_out, tmp_path):
    import json
    import os
    import subprocess
    import sys

    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"text_input": e["textInput"], "output": e["output"]})
                            + "\n" for e in labelled(4, start=300)))
    r = subprocess.run(
        [sys.executable, "-m", "tunelab.cli", "eval", "tunedModels/held", "--server",
         service.url, "--data", str(test)],
        env={**service.env, "COLUMNS": "200"}, cwd=tmp_path, capture_output=True, text=True,
        timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Scores on test.jsonl (4 examples)" in r.stdout
    rows = [line for line in r.stdout.splitlines() if " ms " in line]
    assert any("tunedModels/held" in line for line in rows)
    assert any("models/tiny-random" in line for line in rows)  # its base, from the server
    assert "Traceback" not in r.stderr and os.path.exists(test)
