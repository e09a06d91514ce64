"""One typed source per parameter set (tunelab/parameters.py), seen from outside a real server:
a create request's field problems and example rows in one answer, the Studio's limits and the
API schema equal to what the server enforces, and the CLI neither cutting a display name nor
re-typing a limit."""

from __future__ import annotations

import subprocess
import sys

from service_harness import create_body


def _violations(r) -> dict[str, str]:
    details = r.json()["error"].get("details") or []
    bad = next(d for d in details if d["@type"].endswith("google.rpc.BadRequest"))
    return {v["field"]: v["description"] for v in bad["fieldViolations"]}


def test_a_create_request_reports_field_and_row_problems_together(client):
    body = create_body(displayName="x" * 41, temperature=3)
    body["tuningTask"]["hyperparameters"]["batchSize"] = 1024
    body["tuningTask"]["trainingData"]["examples"]["examples"][2]["output"] = ""
    r = client.post("/v1beta/tunedModels", json=body)
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "displayName is 41 characters; the limit is 40" in message
    assert "batchSize must be a whole number from 1 to 512, got 1024" in message
    assert "example 3" in message  # the row's problem, in the same answer
    found = _violations(r)
    assert {"displayName", "temperature", "batchSize", "examples[2].output"} <= set(found)
    assert found["batchSize"] == "batchSize must be a whole number from 1 to 512, got 1024"
    assert not client.get("/v1beta/tunedModels").json().get("tunedModels")


def test_an_unknown_base_model_is_404_and_names_the_other_problems_in_the_same_answer(client):
    """The Gemini API answers an unknown base model with 404 NOT_FOUND (the reference, 3.1);
    the request's other problems come with it, not one round trip later."""
    body = create_body(baseModel="models/no-such-base", displayName="x" * 41)
    body["tuningTask"]["trainingData"]["examples"]["examples"][2]["output"] = ""
    r = client.post("/v1beta/tunedModels", json=body)
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert error["status"] == "NOT_FOUND"
    assert error["message"].startswith(
        "Invalid tuned model: baseModel 'models/no-such-base' is not a base model of this "
        "server; give one of ")
    assert "displayName is 41 characters" in error["message"] and "example 3" in error["message"]
    found = _violations(r)
    assert {"baseModel", "displayName", "examples[2].output"} <= set(found)
    assert "models/tiny-random" in found["baseModel"]
    alone = client.post("/v1beta/tunedModels", json=create_body(baseModel="models/nope"))
    assert alone.status_code == 404 and set(_violations(alone)) == {"baseModel"}
    assert not client.get("/v1beta/tunedModels").json().get("tunedModels")


def test_a_base_model_named_by_a_server_path_is_unknown(client, tmp_path):
    """A folder on the server is not a base model over the wire, named directly or through
    'models/../..': the answer is the unknown base model's, whether the folder exists or not."""
    (tmp_path / "config.json").write_text("{}")
    for name in (str(tmp_path), "models/" + "../" * 30 + str(tmp_path).lstrip("/"),
                 str(tmp_path / "missing")):
        r = client.post("/v1beta/tunedModels", json=create_body(baseModel=name))
        assert r.status_code == 404, r.text
        assert set(_violations(r)) == {"baseModel"}
        assert "is not a base model of this server" in r.json()["error"]["message"]
    assert not client.get("/v1beta/tunedModels").json().get("tunedModels")


def test_the_studio_limits_and_the_api_schema_are_what_the_server_enforces(client):
    limits = client.get("/studio/limits").json()
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    hp = schema["HyperparametersIn"]["properties"]
    for wire in ("epochCount", "batchSize"):
        top = limits[wire]["maximum"]
        assert limits[wire]["integer"] and limits[wire]["minimum"] == 1
        assert hp[wire]["maximum"] == top and hp[wire]["description"]
        body = create_body()
        body["tuningTask"]["hyperparameters"][wire] = top + 1
        r = client.post("/v1beta/tunedModels", json=body)
        assert r.status_code == 400 and wire in _violations(r), r.text
    name = limits["displayName"]["maxLength"]
    assert schema["TunedModelIn"]["properties"]["displayName"]["maxLength"] == name
    r = client.post("/v1beta/tunedModels", json=create_body(displayName="n" * (name + 1)))
    assert r.status_code == 400 and "displayName" in _violations(r)
    assert limits["topP"]["exclusiveMinimum"] == 0 and limits["topP"]["maximum"] == 1
    r = client.post("/v1beta/tunedModels", json=create_body(topP=0))
    assert r.status_code == 400 and "topP" in _violations(r)


def test_tune_with_server_refuses_a_long_display_name_instead_of_cutting_it(service, client,
                                                                            tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("text_input,output\n" + "".join(f"word {i},WORD {i}\n" for i in range(20)))
    long_name = "A display name that is far too long to fit"
    r = subprocess.run([sys.executable, "-m", "tunelab.cli", "tune", str(data), "--server",
                        service.url, "--epochs", "1", "--display-name", long_name],
                       env=service.env, capture_output=True, text=True, timeout=180)
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 2, out
    assert f"--display-name is {len(long_name)} characters; the limit is 40" in out
    assert "Traceback" not in out
    names = [m.get("displayName") for m in
             client.get("/v1beta/tunedModels").json().get("tunedModels") or []]
    assert not any(n and n.startswith("A display name") for n in names)


def test_the_cli_help_shows_the_servers_ranges(service):
    r = subprocess.run([sys.executable, "-m", "tunelab.cli", "tune", "--help"],
                       env={**service.env, "COLUMNS": "200"}, capture_output=True, text=True,
                       timeout=120)
    text = " ".join(r.stdout.split())
    assert r.returncode == 0, r.stderr
    assert "Examples per optimizer step" in text and "From 1 to 512." in text
    assert "From 1 to 1000." in text and "At most 40 characters." in text


def test_sampling_limits_are_one_rule_for_a_tuned_model_and_a_call(client):
    """A tuned model's sampling defaults and a call's generationConfig are checked against
    the same limits, in the same words."""
    for field, value in (("temperature", 2.5), ("topP", 0), ("topK", 0)):
        r = client.post("/v1beta/tunedModels", json=create_body(**{field: value}))
        assert r.status_code == 400, r.text
        said = _violations(r)[field]
        call = client.post("/v1beta/models/tiny-random:generateContent", json={
            "contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {field: value}})
        assert call.status_code == 400 and said in call.json()["error"]["message"], call.text


def test_an_update_reports_every_problem_at_once(client):
    """PATCH is checked by the tuned-model service against the same limits as a create, every
    problem in one answer; nothing is changed by a rejected update."""
    op = client.post("/v1beta/tunedModels", params={"tunedModelId": "patch-limits"},
                     json=create_body(epochs=1, displayName="Before")).json()
    r = client.patch("/v1beta/tunedModels/patch-limits",
                     json={"displayName": "y" * 41, "topP": 0, "temperature": 9})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    for said in ("displayName is 41 characters; the limit is 40",
                 "topP must be a number above 0 and at most 1, got 0",
                 "temperature must be a number from 0 to 2, got 9"):
        assert said in message, message
    model = client.get("/v1beta/tunedModels/patch-limits").json()
    assert model["displayName"] == "Before"
    r = client.patch("/v1beta/tunedModels/patch-limits", json={"displayName": "z" * 40})
    assert r.status_code == 200 and r.json()["displayName"] == "z" * 40
    client.post(f"/v1beta/{op['name']}:cancel")
