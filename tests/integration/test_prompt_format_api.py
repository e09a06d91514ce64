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
    # the tuned classifier's resource, with its answerLabels extension, reads too
    assert client.tunings.get(name=tuned).name == tuned

    old = pytest.importorskip("google.generativeai")
    old.configure(api_key=service.api_key, transport="rest",
                  client_options={"api_endpoint": service.url})
    answer = old.GenerativeModel(model_name=tuned).generate_content(
        "order 5 is late", generation_config={"max_output_tokens": 2})
    assert answer.candidates
    assert old.get_tuned_model(tuned).name == tuned


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
    # and the resource lists the labels (tunelab extension), which `tunelab eval --server` reads
    assert client.get(f"/v1beta/{tuned}").json()["answerLabels"] == sorted(LABELS)


def _tuned_choices(client, model_id: str, examples: list[dict]) -> dict:
    """Tune the tiny model on ``examples`` for one epoch through the API; its hyperparameters,
    with the one-line ``choices`` the Studio shows."""
    body = {"baseModel": "models/tiny-random", "tuningTask": {
        "trainingData": {"examples": {"examples": examples}},
        "hyperparameters": {"epochCount": 1, "batchSize": 4, "learningRate": 0.01}}}
    r = client.post("/v1beta/tunedModels", params={"tunedModelId": model_id}, json=body)
    assert r.status_code == 200, r.text
    assert wait_op(client, r.json()["name"])["response"]["state"] == "ACTIVE"
    return client.get(f"/v1beta/tunedModels/{model_id}").json()["tuningTask"]["hyperparameters"]


def test_a_model_whose_outputs_share_a_format_says_its_answers_keep_it(service, client):
    """Outputs that all hold the same pieces of structure (catalog/stopping.py): the model's
    choices say so in one line, the line the Studio shows."""
    examples = [{"textInput": f"ticket {i} about order {i + 7}",
                 "output": f'{{"ticket": {i}, "order": {i + 7}}}'} for i in range(24)]
    hp = _tuned_choices(client, "orders-json", examples)
    assert hp["choices"][-1] == (
        "Answers: every training output holds 2 pieces of text in the same order "
        "('{\"ticket\": ', ', \"order\": '); an answer does not end before it holds them "
        "all, and ends where it would write '{\"ticket\": ' or ', \"order\": ' again after "
        "the last of them; nor does it put a space right after any of them, as no training "
        "output does.")
    assert not any("a classifier" in line for line in hp["choices"])


def test_a_model_tuned_to_copy_its_prompts_words_says_so(service, client):
    """Outputs whose words are their prompts' own (catalog/copying.py): the model's choices say
    in one line that a near word of the prompt beats a new one."""
    names = ["Ana", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal", "Ivo", "Jan", "Kai", "Lou"]
    pairs = [(names[i % 12], names[(i // 12 + i + 1) % 12]) for i in range(24)]
    examples = [{"textInput": f"{a} meets {b} at noon", "output": f"{a} and {b}"}
                for a, b in pairs]
    hp = _tuned_choices(client, "meetings", examples)
    assert hp["choices"][-1] == (
        "Answers: the training outputs copy their words from the prompts; where the model "
        "hesitates between a new word and one of the prompt's, it writes the prompt's.")


def test_evaluate_says_when_expected_outputs_are_none_of_the_labels(tuned, client):
    """``:evaluate`` (the Studio's compare page): a test file whose expected outputs are partly
    none of the classifier's labels gets one sentence on the tuned model's row, none on the base
    model's; a test file within the labels, none."""
    outside = [{"textInput": _ticket(200 + i), "output": out}
               for i, out in enumerate(["billing", "refund", "refund", "returns"])]
    r = client.post(f"/v1beta/{tuned}:evaluate",
                    json={"testData": {"examples": {"examples": outside}}})
    assert r.status_code == 200, r.text
    rows = {row["model"]: row for row in r.json()["results"]}
    assert rows[tuned]["unreachableNote"] == (
        "3 of the 4 expected outputs are none of its 3 labels (refund, returns); it answers "
        "with its labels, so it cannot be right on them.")
    assert "unreachableNote" not in rows["models/tiny-random"]
    inside = [{"textInput": _ticket(300 + i), "output": LABELS[i % 3]} for i in range(3)]
    r = client.post(f"/v1beta/{tuned}:evaluate",
                    json={"testData": {"examples": {"examples": inside}}, "compareWith": []})
    assert r.status_code == 200, r.text
    assert "unreachableNote" not in r.json()["results"][0]


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
    resource = client.get("/v1beta/tunedModels/free-tickets").json()
    assert "answerLabels" not in resource
    hp = resource["tuningTask"]["hyperparameters"]
    assert hp["choices"][-1].startswith("Answers: free text, as asked")
    assert not any("a classifier" in line for line in hp["choices"])
    # a value that is not a boolean is refused in the protocol's error shape
    body["tuningTask"]["hyperparameters"]["answerLabels"] = "sometimes"
    bad = client.post("/v1beta/tunedModels", json=body)
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_cli_eval_of_a_served_classifier_says_which_outputs_it_cannot_answer(service, tuned,
                                                                            tmp_path):
    """`tunelab eval --server tunedModels/…` reads the model's labels from its resource and,
    for test outputs that are none of them, prints the one line and the way out."""
    import subprocess
    import sys

    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"text_input": _ticket(400 + i), "output": out}) + "\n"
                            for i, out in enumerate(["refund", "billing"])))
    r = subprocess.run(
        [sys.executable, "-m", "tunelab.cli", "eval", tuned, "--server", service.url,
         "--data", str(test), "--no-base"],
        env={**service.env, "COLUMNS": "300"}, cwd=tmp_path, capture_output=True, text=True,
        timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    text = " ".join(r.stdout.split())
    assert (f"{tuned}: 1 of the 2 expected outputs are none of its 3 labels (refund); it answers "
            "with its labels, so it cannot be right on them. To let it answer freely, tune it "
            "again with --free-answers.") in text
