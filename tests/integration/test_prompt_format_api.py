"""A prompt that does not follow a tuned model's training format is answered with a note
saying so (``promptFormat``, which the real SDKs ignore) and counted in ``GET /healthz``; a
tuned classifier answers with one of its labels, with a note where it replaced the model's own
answer (``answerLabel``, catalog/labels.py)."""

from __future__ import annotations

import json
import warnings

import httpx
import pytest
from service_harness import wait_op

warnings.filterwarnings("ignore")

PREAMBLE = "Classify the support ticket into one category."
LABELS = ["billing", "shipping", "account"]


def _ticket(i: int) -> str:
    return f"{PREAMBLE}\n\nTicket: order {i} has a problem\nCustomer: person {i}"


@pytest.fixture(scope="module")
def tuned(service) -> str:
    examples = [{"textInput": _ticket(i), "output": LABELS[i % 3]} for i in range(24)]
    body = {"baseModel": "models/tiny-random", "tuningTask": {
        "trainingData": {"examples": {"examples": examples}},
        "hyperparameters": {"epochCount": 1, "batchSize": 4, "learningRate": 0.01}}}
    with service.client() as c:
        r = c.post("/v1beta/tunedModels", params={"tunedModelId": "tickets"}, json=body)
        assert r.status_code == 200, r.text
        op = wait_op(c, r.json()["name"])
        assert op["response"]["state"] == "ACTIVE"
    return "tunedModels/tickets"


def _ask(c: httpx.Client, model: str, prompt: str, tokens: int = 2) -> dict:
    r = c.post(f"/v1beta/{model}:generateContent", json={
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "generationConfig": {"maxOutputTokens": tokens}})
    assert r.status_code == 200, r.text
    return r.json()


def _stats(service) -> dict:
    return httpx.get(service.url + "/healthz").json()["promptFormat"]


def test_prompts_are_checked_against_the_training_format(service, tuned, client):
    before = _stats(service)
    assert "promptFormat" not in _ask(client, tuned, _ticket(99))
    note = _ask(client, tuned, "order 99 has a problem")["promptFormat"]
    assert note["followsTrainingFormat"] is False
    assert f'start with "{PREAMBLE}"' in note["message"]
    assert "24 training prompts" in note["message"]
    labels = _ask(client, tuned, f"{PREAMBLE}\n\nTicket: order 99 has a problem")["promptFormat"]
    assert "the field label 'customer:'" in labels["message"]
    # base models have no training format: never a note, never counted
    assert "promptFormat" not in _ask(client, "models/tiny-random", "order 99")
    after = _stats(service)
    assert after["tunedModelPrompts"] - before["tunedModelPrompts"] == 3
    assert after["promptsNotInTrainingFormat"] - before["promptsNotInTrainingFormat"] == 2


def test_a_streamed_answer_carries_the_note_once(tuned, client):
    r = client.post(f"/v1beta/{tuned}:streamGenerateContent", params={"alt": "sse"}, json={
        "contents": [{"role": "user", "parts": [{"text": "order 7 is late"}]}],
        "generationConfig": {"maxOutputTokens": 3}})
    assert r.status_code == 200, r.text
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    notes = [e["promptFormat"] for e in events if "promptFormat" in e]
    assert len(notes) == 1 and events[-1]["candidates"][0]["finishReason"]
    assert "does not follow the format the model was tuned on" in notes[0]["message"]


def test_the_real_sdks_ignore_the_note(service, tuned):
    genai = pytest.importorskip("google.genai")
    from google.genai import types

    client = genai.Client(api_key=service.api_key, http_options=types.HttpOptions(
        base_url=service.url, api_version="v1beta"))
    res = client.models.generate_content(
        model=tuned, contents="order 5 is late",
        config=types.GenerateContentConfig(max_output_tokens=2))
    assert res.candidates and res.usage_metadata.prompt_token_count > 0

    old = pytest.importorskip("google.generativeai")
    old.configure(api_key=service.api_key, transport="rest",
                  client_options={"api_endpoint": service.url})
    answer = old.GenerativeModel(model_name=tuned).generate_content(
        "order 5 is late", generation_config={"max_output_tokens": 2})
    assert answer.candidates


def test_a_tuned_classifier_answers_with_one_of_its_labels(tuned, client):
    """The tiny model tuned for one epoch mostly writes nonsense; every answer is a label, and
    one that replaced the model's own answer says so and what that answer was."""
    candidates = [_ask(client, tuned, _ticket(100 + i), tokens=12)["candidates"][0]
                  for i in range(4)]
    assert all(c["content"]["parts"][0]["text"] in LABELS for c in candidates)
    notes = [c["answerLabel"] for c in candidates if "answerLabel" in c]
    assert notes and all(n["modelAnswer"] not in LABELS for n in notes)
    assert "classifier tuned on a fixed set of labels" in notes[0]["message"]
    # streamed: the label in one piece, the note on it
    r = client.post(f"/v1beta/{tuned}:streamGenerateContent", params={"alt": "sse"}, json={
        "contents": [{"role": "user", "parts": [{"text": _ticket(100)}]}],
        "generationConfig": {"maxOutputTokens": 12}})
    assert r.status_code == 200, r.text
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    texts = [e["candidates"][0]["content"]["parts"][0]["text"] for e in events]
    assert "".join(texts) == candidates[0]["content"]["parts"][0]["text"]
    assert ("answerLabel" in events[-1]["candidates"][0]) == ("answerLabel" in candidates[0])


def test_the_model_says_it_answers_with_its_labels(tuned, client):
    """The Studio's list of choices (``tuningTask.hyperparameters.choices``) says so in one line."""
    hp = client.get(f"/v1beta/{tuned}").json()["tuningTask"]["hyperparameters"]
    assert hp["choices"][-1] == (
        "Answers: a classifier: the training outputs are 3 labels (account, billing, shipping); "
        "an answer that is none of them is replaced by the label the model finds most likely.")


def test_a_classifier_tuned_with_free_answers_answers_as_it_writes(service, client):
    """``hyperparameters.answerLabels: false`` (tunelab extension): the same kind of classifier
    keeps the model's own answers, and its choices say so instead of naming labels."""
    examples = [{"textInput": _ticket(i), "output": LABELS[i % 3]} for i in range(24)]
    body = {"baseModel": "models/tiny-random", "tuningTask": {
        "trainingData": {"examples": {"examples": examples}},
        "hyperparameters": {"epochCount": 1, "batchSize": 4, "learningRate": 0.01,
                            "answerLabels": False}}}
    r = client.post("/v1beta/tunedModels", params={"tunedModelId": "free-tickets"}, json=body)
    assert r.status_code == 200, r.text
    assert wait_op(client, r.json()["name"])["response"]["state"] == "ACTIVE"
    candidates = [_ask(client, "tunedModels/free-tickets", _ticket(100 + i), tokens=12)
                  ["candidates"][0] for i in range(4)]
    assert not any("answerLabel" in c for c in candidates)
    assert any(c["content"]["parts"][0]["text"] not in LABELS for c in candidates)
    hp = client.get("/v1beta/tunedModels/free-tickets").json()["tuningTask"]["hyperparameters"]
    assert hp["choices"][-1].startswith("Answers: free text, as asked")
    assert not any("a classifier" in line for line in hp["choices"])
    # a value that is not a boolean is refused in the protocol's error shape
    body["tuningTask"]["hyperparameters"]["answerLabels"] = "sometimes"
    bad = client.post("/v1beta/tunedModels", json=body)
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"
