"""google-genai in Vertex mode (``vertexai=True``) against a real server, with no workaround:
the SDK's own ``tunings.tune`` / ``get`` / ``list`` / ``cancel`` on
``projects/{p}/locations/{l}/tuningJobs``, and generation on the tuned endpoint, under both
``v1beta1`` (the SDK's default) and ``v1``. google-auth credentials refresh against
tunelab's ``/oauth2/token``. A job made here is a tuned model on the Gemini routes, and the
other way round."""

from __future__ import annotations

import json
import time
import warnings

import httpx
import pytest
from service_harness import create_body, wait_op

genai = pytest.importorskip("google.genai")
from google.genai import errors, types  # noqa: E402
from google.oauth2.credentials import Credentials  # noqa: E402

warnings.filterwarnings("ignore")


def vertex_data(n: int = 20) -> bytes:
    """Vertex's JSONL format: contents (user, model) and a system instruction."""
    rows = [{"systemInstruction": {"parts": [{"text": "Answer in capitals."}]},
             "contents": [{"role": "user", "parts": [{"text": f"word {i}"}]},
                          {"role": "model", "parts": [{"text": f"WORD {i}"}]}]}
            for i in range(n)]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def upload(service, data: bytes, name: str = "train.jsonl") -> str:
    with service.client() as c:
        r = c.post("/v1beta/files", files={"file": (name, data, "application/jsonl")})
    assert r.status_code == 200, r.text
    return r.json()["name"]


def vertex_client(service, project: str = "my-project", location: str = "us-central1",
                  version: str | None = None) -> genai.Client:
    creds = Credentials(token=None, refresh_token=service.creds["refresh_token"],
                        token_uri=f"{service.url}/oauth2/token", client_id="tunelab",
                        client_secret="")
    opts = types.HttpOptions(base_url=service.url, api_version=version) if version else \
        types.HttpOptions(base_url=service.url)
    return genai.Client(vertexai=True, project=project, location=location, credentials=creds,
                        http_options=opts)


def wait_job(client: genai.Client, name: str, timeout: float = 300) -> types.TuningJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.tunings.get(name=name)
        if job.has_ended:
            return job
        time.sleep(0.2)
    raise AssertionError(f"{name} did not end: {job.state}")


@pytest.fixture(scope="module")
def tuned(service):
    """One job tuned through Vertex mode on an uploaded Vertex-format dataset."""
    client = vertex_client(service)
    train = upload(service, vertex_data())
    job = client.tunings.tune(
        base_model="tiny-random",
        training_dataset=types.TuningDataset(gcs_uri=train),
        config=types.CreateTuningJobConfig(
            tuned_model_display_name="Vertex capitals", epoch_count=2, batch_size=4,
            learning_rate=0.01),
    )
    return client, job, wait_job(client, job.name), train


def test_tune_poll_and_the_job_it_answers(tuned):
    _, job, done, train = tuned
    assert job.name.startswith("projects/my-project/locations/us-central1/tuningJobs/vertex-cap")
    assert job.state in (types.JobState.JOB_STATE_PENDING, types.JobState.JOB_STATE_RUNNING)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED and done.has_succeeded
    assert done.tuned_model_display_name == "Vertex capitals"
    assert done.start_time is not None and done.end_time is not None
    spec = done.supervised_tuning_spec
    assert spec.training_dataset_uri == train
    assert spec.hyper_parameters.epoch_count == 2
    assert spec.hyper_parameters.adapter_size == types.AdapterSize.ADAPTER_SIZE_EIGHT
    stats = done.tuning_data_stats.supervised_tuning_data_stats
    assert stats.tuning_dataset_example_count == 20  # 20 < 40: nothing held out
    assert stats.tuning_step_count == 10  # ceil(20 / 4) × 2 epochs
    job_id = job.name.rsplit("/", 1)[1]
    assert done.tuned_model.endpoint == \
        f"projects/my-project/locations/us-central1/endpoints/{job_id}"


@pytest.mark.parametrize("version", [None, "v1"])
def test_generate_and_stream_on_the_tuned_endpoint(service, tuned, version):
    _, _, done, _ = tuned
    client = vertex_client(service, version=version)
    cfg = types.GenerateContentConfig(max_output_tokens=6, temperature=0.0)
    r = client.models.generate_content(model=done.tuned_model.endpoint, contents="word 3",
                                       config=cfg)
    assert r.candidates[0].finish_reason in (types.FinishReason.STOP,
                                             types.FinishReason.MAX_TOKENS)
    assert r.usage_metadata.prompt_token_count > 0
    chunks = list(client.models.generate_content_stream(
        model=done.tuned_model.endpoint, contents="word 3", config=cfg))
    assert chunks[-1].candidates[0].finish_reason is not None
    assert "".join(c.text or "" for c in chunks) == (r.text or "")
    assert client.models.count_tokens(model=done.tuned_model.endpoint,
                                      contents="word 3").total_tokens > 2


def test_any_project_and_location_see_the_same_jobs(service, tuned):
    _, job, _, _ = tuned
    job_id = job.name.rsplit("/", 1)[1]
    other = vertex_client(service, project="another-123", location="europe-west4", version="v1")
    names = [j.name for j in other.tunings.list()]
    assert f"projects/another-123/locations/europe-west4/tuningJobs/{job_id}" in names
    got = other.tunings.get(name=f"projects/another-123/locations/europe-west4/tuningJobs/"
                                 f"{job_id}")
    assert got.state == types.JobState.JOB_STATE_SUCCEEDED


def test_a_vertex_job_is_a_gemini_tuned_model_and_back(service, tuned):
    client, job, _, _ = tuned
    job_id = job.name.rsplit("/", 1)[1]
    with service.client() as c:
        model = c.get(f"/v1beta/tunedModels/{job_id}").json()
        assert model["state"] == "ACTIVE" and model["displayName"] == "Vertex capitals"
        r = c.post("/v1beta/tunedModels", params={"tunedModelId": "from-gemini"},
                   json=create_body(epochs=1))
        assert r.status_code == 200, r.text
        wait_op(c, r.json()["name"])
    seen = client.tunings.get(name="projects/my-project/locations/us-central1/tuningJobs/"
                                   "from-gemini")
    assert seen.state == types.JobState.JOB_STATE_SUCCEEDED
    assert seen.tuning_data_stats.supervised_tuning_data_stats.tuning_step_count == 5


def test_cancel_ends_the_job_cancelled(service):
    client = vertex_client(service)
    train = upload(service, vertex_data(40), "long.jsonl")
    job = client.tunings.tune(
        base_model="publishers/google/models/tiny-random",
        training_dataset=types.TuningDataset(gcs_uri=train),
        config=types.CreateTuningJobConfig(epoch_count=50, batch_size=4),
    )
    client.tunings.cancel(name=job.name)
    done = wait_job(client, job.name)
    assert done.state == types.JobState.JOB_STATE_CANCELLED
    assert done.error.code == 1 and "cancelled" in done.error.message


def test_what_tunelab_cannot_do_is_refused_with_what_to_do(service):
    client = vertex_client(service)
    train = upload(service, vertex_data(), "more.jsonl")
    cases = [
        (types.TuningDataset(gcs_uri="gs://bucket/train.jsonl"), {},
         ["no artifact store", "POST /v1beta/files", "'files/ID'"]),
        (types.TuningDataset(gcs_uri=train), {"adapter_size": "ADAPTER_SIZE_FOUR"},
         ["rank 8", "leave adapter_size out or set ADAPTER_SIZE_EIGHT"]),
        (types.TuningDataset(gcs_uri=train), {"labels": {"team": "search"}},
         ["does not support labels", "supervised tuning", "Leave the others out"]),
        (types.TuningDataset(gcs_uri=train), {"base": "projects/p/locations/l/models/m"},
         ["preTunedModel", "is not supported yet"]),
    ]
    for dataset, config, words in cases:
        base = config.pop("base", "tiny-random")
        with pytest.raises(errors.ClientError) as e:
            client.tunings.tune(base_model=base, training_dataset=dataset,
                                config=types.CreateTuningJobConfig(**config))
        assert e.value.code == 400 and e.value.status == "INVALID_ARGUMENT"
        for w in words:
            assert w in e.value.message, (w, e.value.message)
    with pytest.raises(errors.ClientError) as e:
        client.tunings.get(name="projects/my-project/locations/us-central1/tuningJobs/nope")
    assert e.value.code == 404 and "tuningJobs/nope" in e.value.message


def test_an_api_key_may_call_the_model_but_not_create_or_cancel(service, tuned):
    _, job, done, train = tuned
    base = f"{service.url}/v1beta1/projects/p/locations/l"
    key = {"x-goog-api-key": service.api_key}
    body = {"baseModel": "tiny-random",
            "supervisedTuningSpec": {"trainingDatasetUri": train}}
    for r in (httpx.post(f"{base}/tuningJobs", json=body, headers=key),
              httpx.post(f"{base}/tuningJobs/{job.name.rsplit('/', 1)[1]}:cancel",
                         headers=key)):
        assert r.status_code == 403, r.text
        err = r.json()["error"]
        assert err["status"] == "PERMISSION_DENIED"
        assert err["message"] == "Request had insufficient authentication scopes."
    endpoint = done.tuned_model.endpoint
    r = httpx.post(f"{service.url}/v1beta1/{endpoint}:generateContent", headers=key,
                   json={"contents": [{"role": "user", "parts": [{"text": "word 1"}]}],
                         "generationConfig": {"maxOutputTokens": 3}}, timeout=60)
    assert r.status_code == 200, r.text
    assert httpx.get(f"{base}/tuningJobs", headers=key).status_code == 200
