"""The real google-genai SDK (3.3.0) against a real server, on v1beta and the default v1."""

from __future__ import annotations

import warnings

import pytest
from service_harness import create_body, wait_op

genai = pytest.importorskip("google.genai")
from google.genai import errors, types  # noqa: E402

warnings.filterwarnings("ignore")


@pytest.fixture(scope="module")
def tuned_name(service):
    """google-genai ≥1.47 cannot send examples, so the model is created over REST."""
    with service.client() as c:
        r = c.post("/v1beta/tunedModels", params={"tunedModelId": "new-sdk"},
                   json=create_body(epochs=1, displayName="New SDK", temperature=0.0))
        assert r.status_code == 200, r.text
        wait_op(c, r.json()["name"])
    return "tunedModels/new-sdk"


def _client(service, version: str | None = "v1beta"):
    """The owner's API key, plus their bearer token as a header (google-genai sends only the
    key in Gemini API mode; tuning calls need the token, see docs/auth.md)."""
    headers = {"Authorization": f"Bearer {service.token}"}
    opts = types.HttpOptions(base_url=service.url, api_version=version, headers=headers) \
        if version else types.HttpOptions(base_url=service.url, headers=headers)
    return genai.Client(api_key=service.api_key, http_options=opts)


def test_tune_without_examples_explains_the_sdk_bug(service):
    client = _client(service)
    with pytest.raises(errors.ClientError) as e:
        client.tunings.tune(
            base_model="models/tiny-random",
            training_dataset=types.TuningDataset(examples=[
                types.TuningExample(text_input=f"in {i}", output=f"out {i}") for i in range(20)]),
            config=types.CreateTuningJobConfig(epoch_count=1, batch_size=4, learning_rate=0.01,
                                               tuned_model_display_name="From genai"),
        )
    assert e.value.code == 400 and e.value.status == "INVALID_ARGUMENT"
    assert "google-genai 1.47" in e.value.message


def test_tunings_get(service, tuned_name):
    client = _client(service)
    job = client.tunings.get(name=tuned_name)
    assert job.name == tuned_name
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    assert job.base_model == "models/tiny-random"
    assert job.has_ended and job.has_succeeded
    assert job.start_time is not None and job.end_time is not None


@pytest.mark.parametrize("version", ["v1beta", None])
def test_generate_content_and_stream(service, tuned_name, version):
    client = _client(service, version)
    cfg = types.GenerateContentConfig(max_output_tokens=6)
    r = client.models.generate_content(model=tuned_name, contents="word 3", config=cfg)
    assert r.candidates[0].finish_reason in (types.FinishReason.STOP,
                                             types.FinishReason.MAX_TOKENS)
    assert r.usage_metadata.prompt_token_count > 0
    chunks = list(client.models.generate_content_stream(model=tuned_name, contents="word 3",
                                                        config=cfg))
    assert chunks[-1].candidates[0].finish_reason is not None
    # The model's own temperature (0) applies: the stream says what generate said.
    assert "".join(c.text or "" for c in chunks) == (r.text or "")


def test_count_tokens(service, tuned_name):
    client = _client(service)
    r = client.models.count_tokens(model=tuned_name, contents="hello")
    assert r.total_tokens > 5


def test_models_get_update_list_delete(service, tuned_name):
    client = _client(service)
    m = client.models.get(model=tuned_name)
    assert m.name == tuned_name and m.display_name == "New SDK"
    assert m.tuned_model_info.base_model == "models/tiny-random"
    m = client.models.update(model=tuned_name, config=types.UpdateModelConfig(
        display_name="Renamed", description="via genai"))
    assert m.display_name == "Renamed" and m.description == "via genai"
    names = [x.name for x in client.models.list(config={"query_base": False})]
    assert tuned_name in names
    bases = [x.name for x in client.models.list()]
    assert "models/tiny-random" in bases
    base = client.models.get(model="models/tiny-random")
    assert "createTunedModel" in base.supported_actions


def test_cancel_and_delete(service):
    with service.client() as c:
        op = c.post("/v1beta/tunedModels", params={"tunedModelId": "genai-cancel"},
                    json=create_body(n=40, epochs=50)).json()
    client = _client(service)
    client.tunings.cancel(name="tunedModels/genai-cancel")
    with service.client() as c:
        done = wait_op(c, op["name"])
    assert done["error"]["code"] == 1
    client.models.delete(model="tunedModels/genai-cancel")
    with pytest.raises(errors.ClientError) as e:
        client.tunings.get(name="tunedModels/genai-cancel")
    assert e.value.code == 404 and e.value.status == "NOT_FOUND"
