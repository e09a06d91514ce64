"""Every endpoint and error over plain HTTP (httpx) against a real server."""

from __future__ import annotations

import json

import pytest
from service_harness import create_body, examples, snapshot_tuples, wait_op


@pytest.fixture(scope="module")
def tuned(service):
    """One finished tuned model shared by the read-only tests."""
    with service.client() as c:
        body = create_body(epochs=2, displayName="Shared Model", description="shared",
                           temperature=0.0)
        r = c.post("/v1beta/tunedModels", params={"tunedModelId": "shared"}, json=body)
        assert r.status_code == 200, r.text
        op = wait_op(c, r.json()["name"])
        assert "error" not in op, op
        return op


def test_models_list_and_get(client):
    r = client.get("/v1beta/models")
    assert r.status_code == 200
    names = [m["name"] for m in r.json()["models"]]
    assert "models/tiny-random" in names
    m = client.get("/v1beta/models/tiny-random").json()
    assert "createTunedModel" in m["supportedGenerationMethods"]
    assert "generateContent" in m["supportedGenerationMethods"]
    assert m["inputTokenLimit"] == 512 and m["outputTokenLimit"] == 256
    assert {"temperature", "topP", "topK"} <= m.keys()
    page = client.get("/v1beta/models", params={"pageSize": 1}).json()
    assert len(page["models"]) == 1 and page["nextPageToken"]
    page2 = client.get("/v1beta/models", params={"page_size": 1,
                                                 "page_token": page["nextPageToken"]}).json()
    assert page2["models"][0]["name"] != page["models"][0]["name"]
    assert client.get("/v1/models/tiny-random").status_code == 200


def test_create_returns_operation_and_finishes(client, tuned):
    op = tuned
    assert op["name"].startswith("tunedModels/shared/operations/")
    meta = op["metadata"]
    assert meta["@type"] == (
        "type.googleapis.com/google.ai.generativelanguage.v1beta.CreateTunedModelMetadata")
    assert meta["tunedModel"] == "tunedModels/shared"
    assert meta["totalSteps"] == 10 and meta["completedSteps"] == 10
    assert meta["completedPercent"] == 100.0
    assert [s[:2] for s in snapshot_tuples(op)] == [(i, 1 + (i - 1) // 5) for i in range(1, 11)]
    assert set(meta) == {"@type", "tunedModel", "totalSteps", "completedSteps",
                         "completedPercent", "snapshots", "evaluation",
                         "hyperparameterChoices"}
    # 20 examples: nothing held out, and the metadata says so (docs/evaluation.md)
    assert meta["evaluation"]["validation"]["source"] == "NONE"
    assert set(op) == {"name", "metadata", "done", "response"}
    resp = op["response"]
    assert resp["@type"] == "type.googleapis.com/google.ai.generativelanguage.v1beta.TunedModel"
    assert resp["state"] == "ACTIVE" and "cancelled" not in resp
    assert "trainingData" not in resp["tuningTask"]
    hp = resp["tuningTask"]["hyperparameters"]
    assert {k: hp[k] for k in ("epochCount", "batchSize", "learningRate")} == {
        "epochCount": 2, "batchSize": 4, "learningRate": 0.01}
    assert "epochCount 2: as given." in hp["choices"]  # tunelab extension: one line each


def test_get_tuned_model(client, tuned):
    m = client.get("/v1beta/tunedModels/shared").json()
    assert m["name"] == "tunedModels/shared"
    assert m["displayName"] == "Shared Model" and m["description"] == "shared"
    assert m["baseModel"] == "models/tiny-random"
    assert m["state"] == "ACTIVE"
    assert m["temperature"] == 0.0 and m["topP"] == 0.95 and m["topK"] == 40
    assert m["createTime"].endswith("Z") and m["updateTime"].endswith("Z")
    task = m["tuningTask"]
    assert task["startTime"].endswith("Z") and task["completeTime"].endswith("Z")
    assert len(task["snapshots"]) == 10
    assert "learningRateMultiplier" not in task["hyperparameters"]


def test_snake_case_trailing_commas_and_multiplier(client):
    ex = ",".join(json.dumps({"text_input": e["textInput"], "output": e["output"]})
                  for e in examples())
    raw = ('{"display_name": "Snake Case Model", "base_model": "models/tiny-random",'
           ' "tuning_task": {"hyperparameters": {"batch_size": 4, "learning_rate_multiplier": 2,'
           ' "epoch_count": 1,}, "training_data": {"examples": {"examples": [' + ex + ',]}},},}')
    r = client.post("/v1beta/tunedModels?%24alt=json%3Benum-encoding%3Dint", content=raw,
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    name = r.json()["metadata"]["tunedModel"]
    assert name.startswith("tunedModels/snake-case-model-")
    m = client.get(f"/v1beta/{name}").json()
    # multiplier × the base model's recommended rate (tiny-random: 0.01), reported as a rate
    hp = m["tuningTask"]["hyperparameters"]
    assert {k: hp[k] for k in ("epochCount", "batchSize", "learningRate")} == {
        "epochCount": 1, "batchSize": 4, "learningRate": 0.02}
    # curl -d without a Content-Type still means JSON
    r = client.post("/v1beta/tunedModels", content=json.dumps(create_body(epochs=1)),
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text


def test_list_tuned_models_pages_and_filter(client, tuned):
    for i in range(2):
        r = client.post("/v1beta/tunedModels", json=create_body(
            epochs=1, displayName=f"Lister {i}", description="findme"))
        assert r.status_code == 200
    all_ = client.get("/v1beta/tunedModels", params={"pageSize": 1000}).json()["tunedModels"]
    p1 = client.get("/v1beta/tunedModels", params={"pageSize": 2}).json()
    assert len(p1["tunedModels"]) == 2 and p1["nextPageToken"]
    p2 = client.get("/v1beta/tunedModels",
                    params={"pageSize": 2, "pageToken": p1["nextPageToken"]}).json()
    assert {m["name"] for m in p1["tunedModels"]}.isdisjoint(m["name"] for m in p2["tunedModels"])
    found = client.get("/v1beta/tunedModels", params={"filter": "owner:me findme"}).json()
    assert {m["displayName"] for m in found["tunedModels"]} == {"Lister 0", "Lister 1"}
    assert client.get("/v1beta/tunedModels", params={"filter": "readers:everyone"}).json() == {}
    assert len(all_) >= 3


def test_patch_with_and_without_mask(client, tuned):
    r = client.patch("/v1beta/tunedModels/shared", json={"description": "new", "topK": 5})
    assert r.status_code == 200, r.text
    assert r.json()["description"] == "new" and r.json()["topK"] == 5
    whole = client.get("/v1beta/tunedModels/shared").json()
    whole.update({"state": 2, "displayName": "Renamed", "description": "ignored"})
    r = client.patch("/v1beta/tunedModels/shared",
                     params={"updateMask": "display_name,temperature", "%24alt": "json"},
                     json=whole)
    assert r.status_code == 200, r.text
    m = r.json()
    assert m["displayName"] == "Renamed" and m["description"] == "new"
    r = client.patch("/v1beta/tunedModels/shared", params={"updateMask": "baseModel"},
                     json={"baseModel": "models/x"})
    assert r.status_code == 400 and "baseModel" in r.json()["error"]["message"]


def test_generate_content_uses_model_defaults(client, tuned):
    req = {"contents": [{"role": "user", "parts": [{"text": "word 3"}]}],
           "generationConfig": {"maxOutputTokens": 8}}
    a = client.post("/v1beta/tunedModels/shared:generateContent", json=req)
    assert a.status_code == 200, a.text
    body = a.json()
    cand = body["candidates"][0]
    assert cand["content"]["role"] == "model" and cand["index"] == 0
    assert cand["finishReason"] in ("STOP", "MAX_TOKENS")
    assert body["usageMetadata"]["promptTokenCount"] > 0
    assert body["modelVersion"] == "tunedModels/shared"
    # temperature 0 (the model's own default) → greedy → the same answer twice
    b = client.post("/v1/tunedModels/shared:generateContent", json=req).json()
    assert b["candidates"][0]["content"] == cand["content"]
    multi = {"contents": [{"role": "user", "parts": [{"text": "a"}]},
                          {"role": "model", "parts": [{"text": "b"}]},
                          {"role": "user", "parts": [{"text": "c"}]}],
             "systemInstruction": {"parts": [{"text": "be brief"}]},
             "generationConfig": {"maxOutputTokens": 4, "temperature": 0.9, "seed": 1,
                                  "candidateCount": 2}}
    r = client.post("/v1beta/tunedModels/shared:generateContent", json=multi)
    assert r.status_code == 200 and len(r.json()["candidates"]) == 2


def test_stream_sse_and_json_array(client, tuned):
    req = {"contents": [{"parts": [{"text": "word 3"}]}], "generationConfig": {
        "maxOutputTokens": 6}}
    r = client.post("/v1beta/tunedModels/shared:streamGenerateContent",
                    params={"alt": "sse"}, json=req)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in r.text.split("\r\n") if line.startswith("data: ")]
    assert events and events[-1]["candidates"][0]["finishReason"] in ("STOP", "MAX_TOKENS")
    r = client.post("/v1beta/tunedModels/shared:streamGenerateContent",
                    params={"$alt": "json;enum-encoding=int"}, json=req)
    arr = json.loads(r.text)
    assert isinstance(arr, list) and arr[-1]["candidates"][0]["finishReason"]
    text = "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in arr)
    full = client.post("/v1beta/tunedModels/shared:generateContent",
                       json={**req, "generationConfig": {"maxOutputTokens": 6,
                                                         "temperature": 0}}).json()
    assert text == full["candidates"][0]["content"]["parts"][0]["text"]


def test_count_tokens(client, tuned):
    r = client.post("/v1beta/tunedModels/shared:countTokens",
                    json={"contents": [{"parts": [{"text": "hello"}]}]})
    assert r.status_code == 200 and r.json()["totalTokens"] > 5
    r2 = client.post("/v1beta/models/tiny-random:countTokens",
                     json={"generateContentRequest": {
                         "contents": [{"parts": [{"text": "hello"}]}]}})
    assert r2.json() == r.json()


def test_operations_list_and_get(client, tuned):
    ops = client.get("/v1beta/tunedModels/shared/operations").json()["operations"]
    assert [o["name"] for o in ops] == [tuned["name"]]
    op_id = tuned["name"].rsplit("/", 1)[1]
    assert client.get(f"/v1/tunedModels/shared/operations/{op_id}").json()["done"] is True


def test_cancel_running_job_keeps_parameters(service, client):
    body = create_body(n=40, epochs=50)  # 500 steps: long enough to cancel mid-way
    op = client.post("/v1beta/tunedModels", json=body).json()
    name = op["metadata"]["tunedModel"]
    wait_op(client, op["name"], until=lambda o: o["metadata"]["completedSteps"] >= 3)
    r = client.post(f"/v1beta/{op['name']}:cancel")
    assert r.status_code == 200 and r.json() == {}
    done = wait_op(client, op["name"])
    assert done["error"]["code"] == 1 and "cancelled" in done["error"]["message"]
    assert "response" not in done
    m = client.get(f"/v1beta/{name}").json()
    assert m["state"] == "ACTIVE" and m["cancelled"] is True  # a flag, not words to match
    assert "quality is unpredictable" in m["stateMessage"]
    assert done["metadata"]["completedSteps"] < 500
    r = client.post(f"/v1beta/{name}:generateContent",
                    json={"contents": [{"parts": [{"text": "hi"}]}],
                          "generationConfig": {"maxOutputTokens": 2}})
    assert r.status_code == 200
    # cancelling a finished operation is a no-op
    assert client.post(f"/v1beta/{op['name']}:cancel").json() == {}


def test_cancel_queued_job_and_google_genai_cancel_route(service, client):
    long = client.post("/v1beta/tunedModels", json=create_body(n=40, epochs=50)).json()
    queued = client.post("/v1beta/tunedModels", json=create_body(epochs=1)).json()
    meta = client.get(f"/v1beta/{queued['name']}").json()["metadata"]
    assert meta.get("queuePosition", 0) >= 1
    qname = queued["metadata"]["tunedModel"]
    assert client.post(f"/v1beta/{qname}:cancel").json() == {}
    done = client.get(f"/v1beta/{queued['name']}").json()
    assert done["done"] is True and done["error"]["code"] == 1
    m = client.get(f"/v1beta/{qname}").json()
    assert m["state"] == "FAILED" and "before it started" in m["stateMessage"]
    assert m["cancelled"] is True
    r = client.post(f"/v1beta/{qname}:generateContent",
                    json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert r.status_code == 400 and r.json()["error"]["status"] == "FAILED_PRECONDITION"
    # deleting a CREATING model stops its job
    lname = long["metadata"]["tunedModel"]
    assert client.delete(f"/v1beta/{lname}").json() == {}
    assert client.get(f"/v1beta/{lname}").status_code == 404


def test_generate_from_creating_model_is_failed_precondition(client):
    op = client.post("/v1beta/tunedModels", json=create_body(n=40, epochs=50)).json()
    name = op["metadata"]["tunedModel"]
    r = client.post(f"/v1beta/{name}:generateContent",
                    json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["status"] == "FAILED_PRECONDITION" and "CREATING" in err["message"]
    client.delete(f"/v1beta/{name}")


def test_delete(client):
    op = client.post("/v1beta/tunedModels", json=create_body(epochs=1)).json()
    wait_op(client, op["name"])
    name = op["metadata"]["tunedModel"]
    assert client.delete(f"/v1beta/{name}").json() == {}
    assert client.get(f"/v1beta/{name}").status_code == 404
    assert client.get(f"/v1beta/{op['name']}").status_code == 404


def test_file_upload_and_tune_from_file(client, tmp_path):
    csv = "text_input,output\n" + "".join(f"word {i},WORD {i}\n" for i in range(20))
    r = client.post("/v1beta/files", files={"file": ("data.csv", csv, "text/csv")},
                    data={"displayName": "my data"})
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["name"].startswith("files/") and f["exampleCount"] == 20
    assert f["displayName"] == "my data" and f["sizeBytes"] == str(len(csv))
    assert f["preview"][0] == {"textInput": "word 0", "output": "WORD 0"}
    assert client.get(f"/v1beta/{f['name']}").json()["name"] == f["name"]
    assert f["name"] in [x["name"] for x in client.get("/v1beta/files").json()["files"]]
    body = create_body(epochs=1)
    body["tuningTask"]["trainingData"] = {"file": f["name"]}
    op = client.post("/v1beta/tunedModels", json=body).json()
    done = wait_op(client, op["name"])
    assert done["response"]["state"] == "ACTIVE"
    few = client.post("/v1beta/files", files={"file": ("few.csv", csv[:60], "text/csv")})
    assert few.status_code == 400 and "at least 20" in few.json()["error"]["message"]
    mixed = csv + "word 1,WORD 1\n"  # a duplicate: a warning, not an error
    warn = client.post("/v1beta/files", files={"file": ("mixed.csv", mixed, "text/csv")})
    assert warn.status_code == 200, warn.text
    # the warnings as the Studio's preview gives them: a code, words and the rows concerned
    got = warn.json()["warnings"]
    assert got == client.post("/studio/datasets:preview",
                              files={"file": ("mixed.csv", mixed, "text/csv")}).json()["warnings"]
    assert got[0]["code"] == "DUPLICATE_EXAMPLES" and got[0]["examples"] == [1, 20]
    assert "identical" in got[0]["message"]
    assert client.get(f"/v1beta/{warn.json()['name']}").json()["warnings"] == got
    bad = client.post("/v1beta/files", files={"file": ("bad.csv", "a,b\n1,2\n", "text/csv")})
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"
    big = client.post("/v1beta/files", files={"file": ("big.jsonl", b"x" * (4 * 2**20 + 1))})
    assert big.status_code == 400 and "4 MB" in big.json()["error"]["message"]
    assert client.delete(f"/v1beta/{f['name']}").json() == {}
    assert client.get(f"/v1beta/{f['name']}").status_code == 404


ERRORS = [
    # (method, path, kwargs, http code, status, text in message)
    ("get", "/v1beta/tunedModels/missing-1", {}, 404, "NOT_FOUND", "tunedModels/missing-1"),
    ("get", "/v1beta/models/nope", {}, 404, "NOT_FOUND", "models/nope"),
    ("get", "/v1beta/tunedModels/x/operations/y", {}, 404, "NOT_FOUND", "Operation"),
    ("post", "/v1beta/tunedModels", {"json": {"baseModel": "models/tiny-random"}}, 400,
     "INVALID_ARGUMENT", "google-genai 1.47"),
    ("post", "/v1beta/tunedModels", {"json": create_body(n=5)}, 400, "INVALID_ARGUMENT",
     "at least 20"),
    ("post", "/v1beta/tunedModels", {"json": create_body(baseModel="models/nope")}, 404,
     "NOT_FOUND", "nope"),
    ("post", "/v1beta/tunedModels", {"json": {**create_body(), "foo": 1}}, 400,
     "INVALID_ARGUMENT", 'Unknown name "foo"'),
    ("post", "/v1beta/tunedModels", {"json": create_body(displayName="x" * 41)}, 400,
     "INVALID_ARGUMENT", "displayName"),
    ("post", "/v1beta/tunedModels?tunedModelId=Bad_Id", {"json": create_body()}, 400,
     "INVALID_ARGUMENT", "tunedModelId"),
    ("post", "/v1beta/tunedModels", {"content": "{not json"}, 400, "INVALID_ARGUMENT",
     "Invalid JSON"),
    ("post", "/v1beta/tunedModels?tunedModelId=shared", {"json": create_body()}, 409,
     "ALREADY_EXISTS", "already exists"),
    ("post", "/v1beta/tunedModels/shared:generateContent",
     {"json": {"contents": [{"parts": [{"text": "x"}]}],
               "generationConfig": {"temperature": 5}}}, 400, "INVALID_ARGUMENT", "temperature"),
    ("post", "/v1beta/tunedModels/shared:generateContent",
     {"json": {"contents": [{"role": "model", "parts": [{"text": "x"}]}]}}, 400,
     "INVALID_ARGUMENT", "role 'user'"),
    ("delete", "/v1beta/tunedModels/missing-1", {}, 404, "NOT_FOUND", "missing-1"),
    ("get", "/v1beta/nothing-here", {}, 404, "NOT_FOUND", "nothing-here"),
    ("get", "/v1beta/tunedModels?pageToken=garbage!", {}, 400, "INVALID_ARGUMENT", "pageToken"),
    # model methods tunelab does not serve: the Gemini API's answer, naming what is served
    ("post", "/v1beta/models/tiny-random:embedContent", {"json": {}}, 404, "NOT_FOUND",
     "not supported for embedContent. tunelab's models support generateContent"),
    ("post", "/v1/models/tiny-random:batchEmbedContents", {"json": {}}, 404, "NOT_FOUND",
     "models/tiny-random is not found for API version v1, or is not supported for "
     "batchEmbedContents"),
    ("post", "/v1beta/tunedModels/shared:generateText", {"json": {}}, 404, "NOT_FOUND",
     "supportedGenerationMethods"),
]


@pytest.mark.parametrize("method,path,kwargs,code,status,text", ERRORS,
                         ids=[f"{e[0]} {e[1]} {e[3]}" for e in ERRORS])
def test_errors(client, tuned, method, path, kwargs, code, status, text):
    r = getattr(client, method)(path, **kwargs) if method != "post" else client.post(path, **kwargs)
    assert r.status_code == code, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["status"] == status
    assert text in err["message"], err["message"]


def test_dataset_errors_list_every_problem(client):
    body = create_body()
    exs = body["tuningTask"]["trainingData"]["examples"]["examples"]
    exs[2]["output"] = ""
    exs[5]["output"] = "   "
    r = client.post("/v1beta/tunedModels", json=body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert "2 problems" in err["message"] and "example 3" in err["message"]
    assert "example 6" in err["message"]
    assert len(err["details"][0]["fieldViolations"]) == 2


def test_openapi_document(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for p in ("/v1beta/tunedModels", "/v1beta/tunedModels/{model_id}",
              "/v1beta/tunedModels/{model_id}:generateContent",
              "/v1beta/tunedModels/{model_id}:streamGenerateContent",
              "/v1beta/tunedModels/{model_id}/operations/{op_id}:cancel",
              "/v1beta/tunedModels/{model_id}:cancel", "/v1beta/files", "/v1/models"):
        assert p in paths, p
    op_schema = spec["components"]["schemas"]["Operation"]
    assert set(op_schema["properties"]) == {"name", "metadata", "done", "error", "response"}
    params = {x["name"] for x in paths["/v1beta/tunedModels"]["get"]["parameters"]}
    assert {"pageSize", "pageToken", "filter"} <= params


def test_chat_format_upload_tunes_with_its_system_prompt(client):
    """An OpenAI-style chat JSONL: the upload reads the system prompt, the tuned model uses it
    when a request brings none (counted by countTokens, as generation sees it)."""
    system = "Shout the word back."
    lines = [json.dumps({"messages": [{"role": "system", "content": system},
                                      {"role": "user", "content": f"word {i}"},
                                      {"role": "assistant", "content": f"WORD {i}"}]})
             for i in range(20)]
    r = client.post("/v1beta/files", files={"file": ("chat.jsonl", "\n".join(lines))})
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["preview"][0] == {"textInput": "word 0", "output": "WORD 0",
                               "systemInstruction": system}
    body = create_body(epochs=1)
    body["tuningTask"]["trainingData"] = {"file": f["name"]}
    op = client.post("/v1beta/tunedModels", json=body).json()
    done = wait_op(client, op["name"])
    assert "error" not in done, done
    model = done["response"]["name"]
    ask = {"contents": [{"parts": [{"text": "word 3"}]}]}
    tuned = client.post(f"/v1beta/{model}:countTokens", json=ask).json()["totalTokens"]
    base = client.post("/v1beta/models/tiny-random:countTokens", json={
        "generateContentRequest": {**ask, "systemInstruction": {"parts": [{"text": system}]}}
    }).json()["totalTokens"]
    assert tuned == base
    gen = client.post(f"/v1beta/{model}:generateContent",
                      json={**ask, "generationConfig": {"maxOutputTokens": 2}}).json()
    assert gen["usageMetadata"]["promptTokenCount"] == base
