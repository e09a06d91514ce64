"""The newest openai SDK against a real ``tunelab serve`` (tiny random model): files,
fine-tuning jobs (events, checkpoints, cancel), models, chat completions and completions
(streamed too), errors in OpenAI's shape, the scope rules, the /v1 dispatch between the
OpenAI and Gemini protocols, and one tuned model seen through both."""

from __future__ import annotations

import json
import time
import warnings

import httpx
import pytest
from service_harness import create_body, wait_op

openai = pytest.importorskip("openai")

warnings.filterwarnings("ignore")
TERMINAL = ("succeeded", "failed", "cancelled")
ERROR_KEYS = {"message", "type", "param", "code"}


def chat_lines(n: int, system: str | None = "Shout the word back.") -> bytes:
    head = [{"role": "system", "content": system}] if system else []
    return "".join(json.dumps({"messages": [*head, {"role": "user", "content": f"word {i}"},
                                            {"role": "assistant", "content": f"WORD {i}"}]})
                   + "\n" for i in range(n)).encode()


def prompt_lines(n: int) -> bytes:
    return "".join(json.dumps({"prompt": f"word {i}", "completion": f"WORD {i}"}) + "\n"
                   for i in range(n)).encode()


def client(service, credential: str | None = None):
    """An OpenAI client on tunelab: the owner's OAuth token, or their API key."""
    return openai.OpenAI(api_key=credential or service.token, base_url=service.url + "/v1",
                         max_retries=0)


def wait_job(oa, job_id: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    job = oa.fine_tuning.jobs.retrieve(job_id)
    while job.status not in TERMINAL:
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
        job = oa.fine_tuning.jobs.retrieve(job_id)
    return job


def error_of(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()
    assert set(body["error"]) == ERROR_KEYS, body
    assert body["error"]["message"] and "Traceback" not in body["error"]["message"]
    return body["error"]


@pytest.fixture(scope="module")
def files(service):
    oa = client(service)
    train = oa.files.create(file=("train.jsonl", chat_lines(24)), purpose="fine-tune")
    # a validation file needs one example, not a training set's 20
    valid = oa.files.create(file=("valid.jsonl", chat_lines(3)), purpose="fine-tune")
    return train, valid


@pytest.fixture(scope="module")
def tuned(service, files):
    """A job created and finished through the SDK: 24 chat examples, 2 epochs of 6 steps."""
    oa = client(service)
    train, valid = files
    job = oa.fine_tuning.jobs.create(
        model="tiny-random", training_file=train.id, validation_file=valid.id, suffix="shout",
        hyperparameters={"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": "auto"},
        seed=7)
    assert job.status in ("queued", "running") and job.fine_tuned_model is None
    assert job.trained_tokens is None  # not before it has trained
    return wait_job(oa, job.id)


# ------------------------------------------------------------------------------- files
def test_files_upload_list_retrieve_content_delete(service):
    oa = client(service)
    data = prompt_lines(20)  # the prompt/completion format
    f = oa.files.create(file=("pc.jsonl", data), purpose="fine-tune")
    assert f.id.startswith("file-") and f.bytes == len(data) and f.filename == "pc.jsonl"
    assert f.purpose == "fine-tune" and f.status == "processed"
    assert oa.files.retrieve(f.id).id == f.id
    assert f.id in [x.id for x in oa.files.list()]
    assert [x.id for x in oa.files.list(purpose="batch")] == []
    assert oa.files.content(f.id).content == data
    # the same upload in the Gemini API
    with service.client() as c:
        assert c.get(f"/v1beta/files/{f.id.removeprefix('file-')}").json()["exampleCount"] == 20
    assert oa.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError) as e:
        oa.files.retrieve(f.id)
    assert error_of(e.value)["type"] == "invalid_request_error"


def test_file_list_pages_with_after(service, files):
    oa = client(service)
    first = oa.files.list(limit=1)
    assert len(first.data) == 1 and first.has_more
    second = oa.files.list(limit=1, after=first.data[0].id)
    assert second.data[0].id != first.data[0].id
    assert len(list(oa.files.list(limit=1))) >= 2  # the SDK follows the cursor


def test_upload_problems_name_the_line(service):
    oa = client(service)
    bad = chat_lines(19) + b'{"messages": [{"role": "user", "content": "x"}]}\n'
    with pytest.raises(openai.BadRequestError) as e:
        oa.files.create(file=("bad.jsonl", bad), purpose="fine-tune")
    err = error_of(e.value)
    assert "line 20" in err["message"] and "one assistant" in err["message"]
    assert err["code"] == "invalid_training_file"
    with pytest.raises(openai.BadRequestError) as e:
        oa.files.create(file=("x.jsonl", chat_lines(20)), purpose="assistants")
    assert error_of(e.value)["param"] == "purpose"


# -------------------------------------------------------------------------------- jobs
def test_job_succeeds_with_resolved_hyperparameters(service, tuned, files):
    train, valid = files
    assert tuned.status == "succeeded" and tuned.error is None
    model_id = tuned.id.removeprefix("ftjob-")
    assert tuned.fine_tuned_model == f"ft:tiny-random:shout:{model_id}"
    hp = tuned.hyperparameters
    assert (hp.n_epochs, hp.batch_size, hp.learning_rate_multiplier) == (2, 4, 1.0)
    assert tuned.method.type == "supervised" and tuned.seed == 7
    assert tuned.training_file == train.id and tuned.validation_file == valid.id
    assert tuned.finished_at >= tuned.created_at
    oa = client(service)
    assert tuned.id in [j.id for j in oa.fine_tuning.jobs.list()]
    # the tokens the worker trained on: every step's, so one epoch's tokens × 2 epochs
    manifest = json.loads((service.home / "artifacts" / "tuned" / model_id / "manifest.json")
                          .read_text())
    first_epoch = sum(snap["tokens"] for snap in manifest["snapshots"] if snap["epoch"] == 1)
    assert first_epoch > 24 and tuned.trained_tokens == 2 * first_epoch == manifest["tokens"]
    listed = {j.id: j for j in oa.fine_tuning.jobs.list()}[tuned.id]
    assert listed.trained_tokens == tuned.trained_tokens


def test_a_small_file_uploads_but_trains_only_with_20_examples(service):
    oa = client(service)
    small = oa.files.create(file=("one.jsonl", chat_lines(1)), purpose="fine-tune")
    assert small.status == "processed"
    with pytest.raises(openai.BadRequestError) as e:
        oa.fine_tuning.jobs.create(model="tiny-random", training_file=small.id)
    assert "at least 20" in error_of(e.value)["message"]


def test_events_have_the_loss_of_every_step(service, tuned):
    oa = client(service)
    events = list(oa.fine_tuning.jobs.list_events(tuned.id, limit=5))  # follows the cursor
    assert events[0].message == "The job has successfully completed"  # newest first
    metrics = [e for e in events if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == list(range(12, 0, -1))
    # the same losses as the Gemini API's snapshots of the same tuned model
    with service.client() as c:
        model = c.get(f"/v1beta/tunedModels/{tuned.id.removeprefix('ftjob-')}").json()
    snapshots = {s["step"]: s["meanLoss"] for s in model["tuningTask"]["snapshots"]}
    assert {e.data["step"]: e.data["train_loss"] for e in metrics} == pytest.approx(snapshots)
    assert "Step 12/12: training loss=" in metrics[0].message
    assert sum("Checkpoint created at step" in e.message for e in events) == 2


def test_one_checkpoint_per_epoch_with_metrics(service, tuned):
    oa = client(service)
    checkpoints = oa.fine_tuning.jobs.checkpoints.list(tuned.id).data
    assert [c.step_number for c in checkpoints] == [12, 6]
    assert [c.fine_tuned_model_checkpoint for c in checkpoints] == [
        f"{tuned.fine_tuned_model}:ckpt-step-12", f"{tuned.fine_tuned_model}:ckpt-step-6"]
    for c in checkpoints:
        assert c.fine_tuning_job_id == tuned.id and c.metrics.step == c.step_number
        assert c.metrics.train_loss > 0 and c.metrics.valid_loss > 0  # a validation file


def test_cancel_a_running_job(service):
    oa = client(service)
    big = oa.files.create(file=("big.jsonl", chat_lines(40)), purpose="fine-tune")
    job = oa.fine_tuning.jobs.create(model="tiny-random", training_file=big.id,
                                     hyperparameters={"n_epochs": 50, "batch_size": 4})
    deadline = time.monotonic() + 300
    while oa.fine_tuning.jobs.retrieve(job.id).status == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    oa.fine_tuning.jobs.cancel(job.id)
    done = wait_job(oa, job.id)
    assert done.status == "cancelled" and done.finished_at is not None
    events = oa.fine_tuning.jobs.list_events(job.id).data
    assert events[0].message.startswith("Fine-tuning job cancelled") and events[0].level == "warn"
    with pytest.raises(openai.BadRequestError) as e:
        oa.fine_tuning.jobs.cancel(job.id)
    assert "already ended" in error_of(e.value)["message"]


def test_cancel_a_queued_job_ends_it_at_once(service):
    oa = client(service)
    with service.client() as c:  # keep the one worker busy
        busy = c.post("/v1beta/tunedModels", json=create_body(n=40, epochs=50)).json()
    f = oa.files.create(file=("q.jsonl", chat_lines(20)), purpose="fine-tune")
    job = oa.fine_tuning.jobs.create(model="tiny-random", training_file=f.id)
    assert oa.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    with service.client() as c:
        c.post(f"/v1beta/{busy['name'].split('/operations')[0]}:cancel")
        wait_op(c, busy["name"])


def test_job_errors_name_the_field(service, files):
    oa = client(service)
    train, _ = files
    cases = [
        ({"hyperparameters": {"n_epochs": 0}}, openai.BadRequestError, "hyperparameters"),
        ({"method": {"type": "dpo", "dpo": {}}}, openai.BadRequestError, "method.type"),
        ({"suffix": "x" * 41}, openai.BadRequestError, "suffix"),
        ({"model": "gpt-4o-mini"}, openai.NotFoundError, "model"),
        ({"training_file": "file-nope"}, openai.NotFoundError, None),
    ]
    for extra, kind, param in cases:
        args = {"model": "tiny-random", "training_file": train.id, **extra}
        with pytest.raises(kind) as e:
            oa.fine_tuning.jobs.create(**args)
        assert error_of(e.value)["param"] == param, extra
    with pytest.raises(openai.NotFoundError):
        oa.fine_tuning.jobs.retrieve("ftjob-nope")
    with pytest.raises(openai.NotFoundError) as e:  # no pause: said in OpenAI's shape
        oa.fine_tuning.jobs.pause("ftjob-nope")
    assert "no pause or resume" in error_of(e.value)["message"]


# ------------------------------------------------------------------------ generation
@pytest.mark.parametrize("credential", ["token", "api_key"])
def test_chat_completions_and_stream(service, tuned, credential):
    oa = client(service, getattr(service, credential))
    messages = [{"role": "user", "content": "word 3"}]
    r = oa.chat.completions.create(model=tuned.fine_tuned_model, messages=messages,
                                   max_tokens=6, temperature=0)
    assert r.model == tuned.fine_tuned_model and r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant" and r.choices[0].finish_reason in (
        "stop", "length")
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    chunks = list(oa.chat.completions.create(
        model=tuned.fine_tuned_model, messages=messages, max_tokens=6, temperature=0,
        stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content  # greedy: the same answer
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] is not None


def test_completions_and_stream(service, tuned):
    oa = client(service)
    r = oa.completions.create(model=tuned.fine_tuned_model, prompt="word 3", max_tokens=6,
                              temperature=0)
    assert r.object == "text_completion" and r.choices[0].finish_reason in ("stop", "length")
    streamed = "".join(c.choices[0].text for c in oa.completions.create(
        model=tuned.fine_tuned_model, prompt="word 3", max_tokens=6, temperature=0,
        stream=True) if c.choices)
    assert streamed == r.choices[0].text
    two = oa.completions.create(model=tuned.fine_tuned_model, prompt=["word 1", "word 2"],
                                max_tokens=3, n=2, temperature=0)
    assert [c.index for c in two.choices] == [0, 1, 2, 3]


def test_checkpoints_are_callable_models(service, tuned):
    oa = client(service)
    checkpoints = oa.fine_tuning.jobs.checkpoints.list(tuned.id).data
    with service.client() as c:
        served = c.get(f"/v1beta/tunedModels/{tuned.id.removeprefix('ftjob-')}/epochs"
                       ).json()["selectedEpoch"]
    messages = [{"role": "user", "content": "word 5"}]
    answers = {}
    for ckpt in checkpoints:
        name = ckpt.fine_tuned_model_checkpoint
        assert oa.models.retrieve(name).id == name
        r = oa.chat.completions.create(model=name, messages=messages, max_tokens=6,
                                       temperature=0)
        assert r.model == name
        answers[ckpt.step_number] = r.choices[0].message.content
    model = oa.chat.completions.create(model=tuned.fine_tuned_model, messages=messages,
                                       max_tokens=6, temperature=0)
    # the served epoch's checkpoint answers as the model does
    assert answers[6 * served] == model.choices[0].message.content
    with pytest.raises(openai.NotFoundError) as e:
        oa.chat.completions.create(model=f"{tuned.fine_tuned_model}:ckpt-step-5",
                                   messages=messages)
    assert error_of(e.value)["code"] == "model_not_found"


def test_generation_errors(service, tuned):
    oa = client(service)
    messages = [{"role": "user", "content": "hi"}]
    cases = [
        ({"model": "nope"}, openai.NotFoundError, "model"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, openai.BadRequestError,
         "tools"),
        ({"temperature": 3}, openai.BadRequestError, "temperature"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, openai.BadRequestError,
         "messages"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
            "url": "data:,"}}]}]}, openai.BadRequestError, "messages[0].content"),
    ]
    for extra, kind, param in cases:
        args = {"model": tuned.fine_tuned_model, "messages": messages, **extra}
        with pytest.raises(kind) as e:
            oa.chat.completions.create(**args)
        assert error_of(e.value)["param"] == param, extra


# ------------------------------------------------------------------------------ models
def test_models_list_retrieve_delete(service, files):
    oa = client(service)
    train, _ = files
    job = wait_job(oa, oa.fine_tuning.jobs.create(
        model="tiny-random", training_file=train.id, suffix="to-delete",
        hyperparameters={"n_epochs": 1}).id)
    names = [m.id for m in oa.models.list()]
    assert "tiny-random" in names and job.fine_tuned_model in names
    m = oa.models.retrieve(job.fine_tuned_model)
    assert m.owned_by == "owner" and m.object == "model"
    assert oa.models.retrieve("tiny-random").owned_by == "tunelab"
    with pytest.raises(openai.PermissionDeniedError) as e:
        client(service, service.api_key).models.delete(job.fine_tuned_model)
    assert error_of(e.value)["code"] == "insufficient_permissions"
    with pytest.raises(openai.PermissionDeniedError):
        oa.models.delete("tiny-random")
    assert oa.models.delete(job.fine_tuned_model).deleted
    with pytest.raises(openai.NotFoundError) as e:
        oa.models.retrieve(job.fine_tuned_model)
    assert error_of(e.value)["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        oa.fine_tuning.jobs.retrieve(job.id)  # the model and its job are one


# ------------------------------------------------------------------ scopes and errors
def test_api_key_may_call_and_read_but_not_change(service, tuned, files):
    key = client(service, service.api_key)
    train, _ = files
    assert key.fine_tuning.jobs.retrieve(tuned.id).status == "succeeded"
    assert tuned.id in [j.id for j in key.fine_tuning.jobs.list()]
    assert key.files.retrieve(train.id).id == train.id
    refused = [
        lambda: key.fine_tuning.jobs.create(model="tiny-random", training_file=train.id),
        lambda: key.fine_tuning.jobs.cancel(tuned.id),
        lambda: key.files.create(file=("t.jsonl", chat_lines(20)), purpose="fine-tune"),
        lambda: key.files.delete(train.id),
    ]
    for call in refused:
        with pytest.raises(openai.PermissionDeniedError) as e:
            call()
        err = error_of(e.value)
        assert err["code"] == "insufficient_permissions" and "OAuth" in err["message"]


def test_wrong_or_missing_credentials_are_401_in_openai_shape(service):
    with pytest.raises(openai.AuthenticationError) as e:
        client(service, "tlk_not-a-key").models.list()
    assert error_of(e.value)["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(service, "tla_not-a-token").fine_tuning.jobs.list()
    r = httpx.get(service.url + "/v1/fine_tuning/jobs")
    assert r.status_code == 401 and set(r.json()["error"]) == ERROR_KEYS


# -------------------------------------------------------------- dispatch and protocols
def test_v1_models_answers_each_protocol_in_its_shape(service):
    bearer = {"Authorization": f"Bearer {service.token}"}
    # the OpenAI SDK: OpenAI's list
    assert client(service).models.list().object == "list"
    # a Google client (its key, or its x-goog-api-client header): Gemini's list
    for headers in ({"x-goog-api-key": service.api_key},
                    {**bearer, "x-goog-api-client": "google-genai-sdk/3.3.0"}):
        body = httpx.get(service.url + "/v1/models", headers=headers).json()
        assert body["models"][0]["name"].startswith("models/")
    # no sign either way: Gemini's, as before; /openai/v1 is always OpenAI's
    assert "models" in httpx.get(service.url + "/v1/models", headers=bearer).json()
    body = httpx.get(service.url + "/openai/v1/models", headers=bearer).json()
    assert body["object"] == "list"
    # an API key as the bearer is an OpenAI client's (the Gemini API never accepts one there)
    key = {"Authorization": f"Bearer {service.api_key}"}
    assert httpx.get(service.url + "/v1/files", headers=key).json()["object"] == "list"
    assert httpx.get(service.url + "/v1/models/tiny-random", headers=key).json() == {
        "id": "tiny-random", "object": "model", "created": 0, "owned_by": "tunelab"}


def test_google_genai_on_v1_still_gets_the_gemini_api(service):
    """google-genai's default version is v1: its models.list / get hit the two paths the
    OpenAI API also has, and must get Gemini's answers."""
    genai = pytest.importorskip("google.genai")
    from google.genai import types

    g = genai.Client(api_key=service.api_key,
                     http_options=types.HttpOptions(base_url=service.url, api_version="v1"))
    assert "models/tiny-random" in [m.name for m in g.models.list()]
    assert g.models.get(model="models/tiny-random").input_token_limit == 512


def test_an_upload_over_the_limit_is_refused_unread(service):
    with pytest.raises(openai.APIStatusError) as e:
        client(service).files.create(file=("big.jsonl", b"x" * (5 * 2**20)), purpose="fine-tune")
    assert e.value.status_code == 413
    assert error_of(e.value)["code"] == "request_too_large"


def test_a_gemini_tuned_model_is_an_openai_job_and_model(service):
    with service.client() as c:
        r = c.post("/v1beta/tunedModels", params={"tunedModelId": "from-gemini"},
                   json=create_body(epochs=1, displayName="From Gemini"))
        wait_op(c, r.json()["name"])
    oa = client(service)
    job = oa.fine_tuning.jobs.retrieve("ftjob-from-gemini")
    assert job.status == "succeeded" and job.training_file == ""  # inline examples
    assert job.fine_tuned_model == "ft:tiny-random:from-gemini:from-gemini"
    r = oa.chat.completions.create(model=job.fine_tuned_model, max_tokens=3,
                                   messages=[{"role": "user", "content": "word 1"}])
    assert r.choices[0].message.content is not None


def test_an_openai_job_is_a_gemini_tuned_model(service, tuned):
    name = f"tunedModels/{tuned.id.removeprefix('ftjob-')}"
    with service.client() as c:
        model = c.get(f"/v1beta/{name}").json()
        assert model["state"] == "ACTIVE" and model["displayName"] == "shout"
        r = c.post(f"/v1beta/{name}:generateContent", json={
            "contents": [{"parts": [{"text": "word 3"}]}],
            "generationConfig": {"maxOutputTokens": 6, "temperature": 0}})
    answer = r.json()["candidates"][0]["content"]["parts"][0]["text"]
    chat = client(service).chat.completions.create(
        model=tuned.fine_tuned_model, messages=[{"role": "user", "content": "word 3"}],
        max_tokens=6, temperature=0)
    assert chat.choices[0].message.content == answer
