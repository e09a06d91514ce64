"""google-genai in Vertex mode (``vertexai=True``) against a real server, with no workaround:
the SDK's own ``tunings.tune`` / ``get`` / ``list`` / ``cancel`` on
``projects/{p}/locations/{l}/tuningJobs``, and generation on the tuned endpoint, under both
``v1beta1`` (the SDK's default) and ``v1``. google-auth credentials refresh against
tunelab's ``/oauth2/token``. A job made here is a tuned model on the Gemini routes, and the
other way round."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import pytest
from service_harness import Service, create_body, free_port, wait_op

from tunelab.data.parse import MAX_FILE_BYTES

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


def test_the_examples_held_out_count_in_the_dataset(service):
    """Nothing set on 60 examples: 20 held out to choose the epoch, then a refit on all 60.
    The job says the dataset's 60, not the 40 of the first run."""
    client = vertex_client(service)
    job = client.tunings.tune(base_model="tiny-random", training_dataset=types.TuningDataset(
        gcs_uri=upload(service, vertex_data(60))))
    done = wait_job(client, job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED
    stats = done.tuning_data_stats.supervised_tuning_data_stats
    assert stats.tuning_dataset_example_count == 60
    # the steps of both runs: more than the first run's on 40 examples
    hp = done.supervised_tuning_spec.hyper_parameters
    assert stats.tuning_step_count > -(-40 // hp.batch_size) * hp.epoch_count


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
         ["reads no gs:// datasets", "TUNELAB_ARTIFACT_STORE", "POST /v1beta/files",
          "'files/ID'"]),
        (types.TuningDataset(gcs_uri="https://example.org/train.jsonl"), {},
         ["not a dataset this server can read", "gs:// or s3://", "'files/ID'"]),
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


# ------------------------------------------------------------ datasets in a bucket, pinning
# Real S3 and GCS servers on 127.0.0.1: moto's server (IAM enforced, so a denied object is a
# real 403) and gcp-storage-emulator (the GCS JSON API), read by tunelab through s3fs and
# gcsfs as an operator configures them.
PROJECT, LOCATION = "acme-tuning", "europe-west4"
NO_AUTH_ACTIONS = 3  # moto answers this many requests unsigned: the IAM set-up below


def _listening(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the store server exited"
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture(scope="module")
def stores():
    """An S3 server whose user 'tunelab' may read every object but private/, and a GCS
    server, each with datasets in Vertex's JSONL format."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("s3fs")
    gcsfs = pytest.importorskip("gcsfs")
    emulator = shutil.which("gcp-storage-emulator") or str(
        Path(sys.executable).with_name("gcp-storage-emulator"))
    s3_port, gs_port = free_port(), free_port()
    procs = [
        subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                          str(s3_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(NO_AUTH_ACTIONS)}),
        subprocess.Popen([emulator, "start", "--host", "127.0.0.1", "--port", str(gs_port),
                          "--in-memory"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        _listening(s3_port, procs[0])
        _listening(gs_port, procs[1])
        s3_url, gs_url = f"http://127.0.0.1:{s3_port}", f"http://127.0.0.1:{gs_port}"
        iam = boto3.client("iam", endpoint_url=s3_url, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="tunelab")
        key = iam.create_access_key(UserName="tunelab")["AccessKey"]
        iam.put_user_policy(UserName="tunelab", PolicyName="datasets", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "s3:GetObject",
                 "Resource": "arn:aws:s3:::datasets/private/*"}]}))
        s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1",
                          aws_access_key_id=key["AccessKeyId"],
                          aws_secret_access_key=key["SecretAccessKey"])
        s3.create_bucket(Bucket="datasets")
        for name, body in [("train.jsonl", vertex_data(20)), ("valid.jsonl", vertex_data(3)),
                           ("private/train.jsonl", vertex_data(20)),
                           ("huge.jsonl", b"x" * (MAX_FILE_BYTES + 1)),
                           ("broken.jsonl", vertex_data(19) + b"{not json\n")]:
            s3.put_object(Bucket="datasets", Key=name, Body=body)
        # gcsfs's plain filesystem: its default one first asks the server over gRPC for the
        # bucket's layout, which an emulator does not serve (the server below is told so)
        gs = gcsfs.core.GCSFileSystem(endpoint_url=gs_url, token="anon", project="test",
                                      skip_instance_cache=True)
        gs.mkdir("vertex-data")
        gs.pipe_file("vertex-data/train.jsonl", vertex_data(20))
        yield {"s3": {"endpoint_url": s3_url, "key": key["AccessKeyId"],
                      "secret": key["SecretAccessKey"],
                      "config_kwargs": {"retries": {"max_attempts": 1}}},
               "gs": {"endpoint_url": gs_url, "token": "anon", "project": "test"}}, procs
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)


@pytest.fixture(scope="module")
def bucket_service(stores, tmp_path_factory):
    """A server that reads s3:// and gs:// datasets, and serves one project and location."""
    options, _ = stores
    svc = Service(tmp_path_factory.mktemp("buckets"), env={
        "TUNELAB_ARTIFACT_STORE": json.dumps(options),
        "TUNELAB_VERTEX_PROJECT": PROJECT, "TUNELAB_VERTEX_LOCATION": LOCATION,
        # gcsfs asks a GCS server for the bucket's layout over gRPC first; an emulator has none
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}).start()
    yield svc
    svc.stop()


def test_datasets_in_s3_and_gcs_buckets_tune_with_the_adapter_size_asked(bucket_service):
    client = vertex_client(bucket_service, PROJECT, LOCATION)
    job = client.tunings.tune(
        base_model="tiny-random",
        training_dataset=types.TuningDataset(gcs_uri="s3://datasets/train.jsonl"),
        config=types.CreateTuningJobConfig(
            validation_dataset=types.TuningValidationDataset(
                gcs_uri="s3://datasets/valid.jsonl"),  # 3 examples: any number from 1
            epoch_count=2, batch_size=4, learning_rate=0.01,
            adapter_size=types.AdapterSize.ADAPTER_SIZE_FOUR),
    )
    gs_job = client.tunings.tune(
        base_model="tiny-random",
        training_dataset=types.TuningDataset(gcs_uri="gs://vertex-data/train.jsonl"),
        config=types.CreateTuningJobConfig(epoch_count=1, batch_size=4),
    )
    done, gs_done = wait_job(client, job.name), wait_job(client, gs_job.name)
    assert done.state == gs_done.state == types.JobState.JOB_STATE_SUCCEEDED
    spec = done.supervised_tuning_spec
    assert spec.training_dataset_uri == "s3://datasets/train.jsonl"
    assert spec.validation_dataset_uri == "s3://datasets/valid.jsonl"
    assert spec.hyper_parameters.adapter_size == types.AdapterSize.ADAPTER_SIZE_FOUR
    assert done.tuning_data_stats.supervised_tuning_data_stats.tuning_dataset_example_count \
        == 20
    job_id = done.name.rsplit("/", 1)[1]
    adapter = json.loads((bucket_service.home / "artifacts" / "tuned" / job_id / "adapter"
                          / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 8
    assert gs_done.supervised_tuning_spec.training_dataset_uri == \
        "gs://vertex-data/train.jsonl"
    assert gs_done.supervised_tuning_spec.hyper_parameters.adapter_size == \
        types.AdapterSize.ADAPTER_SIZE_EIGHT  # chosen from the data: fewer than 1,000
    r = client.models.generate_content(model=gs_done.tuned_model.endpoint, contents="word 3",
                                       config=types.GenerateContentConfig(max_output_tokens=3))
    assert r.candidates[0].finish_reason is not None


@pytest.mark.parametrize("uri, code, words", [
    ("s3://datasets/missing.jsonl", 400, ["'s3://datasets/missing.jsonl' was not found"]),
    ("s3://datasets/private/train.jsonl", 403,
     ["may not read 's3://datasets/private/train.jsonl'", "read access", "POST /v1beta/files"]),
    ("s3://datasets/huge.jsonl", 400, [f"holds {MAX_FILE_BYTES + 1:,} bytes", "at most"]),
    ("s3://datasets/broken.jsonl", 400, ["s3://datasets/broken.jsonl, line 20"]),
    ("s3://datasets", 400, ["does not name one object"]),
    ("gs://vertex-data/nope.jsonl", 400, ["'gs://vertex-data/nope.jsonl' was not found"]),
])
def test_bucket_problems_say_what_to_do(bucket_service, uri, code, words):
    client = vertex_client(bucket_service, PROJECT, LOCATION)
    with pytest.raises(errors.ClientError) as e:
        client.tunings.tune(base_model="tiny-random",
                            training_dataset=types.TuningDataset(gcs_uri=uri))
    assert e.value.code == code, e.value.message
    for w in words:
        assert w in e.value.message, (w, e.value.message)
    assert str(bucket_service.home) not in e.value.message and "Traceback" not in \
        e.value.message


def test_adapter_sizes_map_to_ranks_and_others_are_refused(bucket_service):
    client = vertex_client(bucket_service, PROJECT, LOCATION)
    job = client.tunings.tune(
        base_model="tiny-random",
        training_dataset=types.TuningDataset(gcs_uri="s3://datasets/train.jsonl"),
        config=types.CreateTuningJobConfig(epoch_count=1, batch_size=4,
                                           adapter_size="ADAPTER_SIZE_THIRTY_TWO"))
    assert job.supervised_tuning_spec.hyper_parameters.adapter_size == \
        types.AdapterSize.ADAPTER_SIZE_THIRTY_TWO
    wait_job(client, job.name)
    base = f"{bucket_service.url}/v1/projects/{PROJECT}/locations/{LOCATION}/tuningJobs"
    body = {"baseModel": "tiny-random", "supervisedTuningSpec": {
        "trainingDatasetUri": "s3://datasets/train.jsonl",
        "hyperParameters": {"adapterSize": "ADAPTER_SIZE_SIXTY_FOUR"}}}
    r = httpx.post(base, json=body, headers={"Authorization": f"Bearer {bucket_service.token}"})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "ADAPTER_SIZE_SIXTY_FOUR" in message and "ADAPTER_SIZE_ONE, ADAPTER_SIZE_TWO, " \
        "ADAPTER_SIZE_FOUR, ADAPTER_SIZE_EIGHT, ADAPTER_SIZE_SIXTEEN, ADAPTER_SIZE_THIRTY_TWO" \
        in message


@pytest.mark.parametrize("project, location", [("other", LOCATION), (PROJECT, "us-central1")])
def test_a_pinned_project_and_location_refuse_others(bucket_service, project, location):
    client = vertex_client(bucket_service, project, location)
    for call in (lambda: list(client.tunings.list()),
                 lambda: client.tunings.get(name=f"projects/{project}/locations/{location}/"
                                                 "tuningJobs/any")):
        with pytest.raises(errors.ClientError) as e:
            call()
        assert e.value.code == 403 and e.value.status == "PERMISSION_DENIED"
        assert f"projects/{project}/locations/{location}" in e.value.message
        assert f"serves project '{PROJECT}' in location '{LOCATION}' only" in e.value.message
    r = httpx.get(f"{bucket_service.url}/v1/projects/{project}/locations/{location}/tuningJobs")
    assert r.status_code == 401  # credentials are checked first, as Vertex does
    assert list(vertex_client(bucket_service, PROJECT, LOCATION).tunings.list())


def doc_section(title: str) -> str:
    text = (Path(__file__).resolve().parents[2] / "docs" / "sdks.md").read_text()
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def test_the_documented_bucket_session_runs(bucket_service, tmp_path):
    """docs/sdks.md, "Datasets in a bucket": the setting's example is one tunelab reads, and
    the session runs after the Google section's sign-in, as written."""
    from tunelab.config import Settings

    section = doc_section("Datasets in a bucket")
    setting = re.search(r"```text\nTUNELAB_ARTIFACT_STORE=(.*?)\n```", section, re.S)[1]
    assert set(Settings(artifact_store=json.loads(setting)).artifact_store) == {"s3", "gs"}
    sign_in = re.findall(r"```python\n(.*?)```", doc_section("Google SDKs"), re.S)[0]
    session = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(session) == 1
    bucket_service.accounts().add_user("vera", "vera's password")
    r = subprocess.run([sys.executable, "-c", sign_in + session[0]], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600, env={
                           **os.environ, "TUNELAB": bucket_service.url, "TUNELAB_USER": "vera",
                           "TUNELAB_PASSWORD": "vera's password", "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert r.stdout.splitlines() == ["JOB_STATE_SUCCEEDED s3://datasets/train.jsonl",
                                     "ADAPTER_SIZE_FOUR"]


def test_an_unreachable_store_is_503_with_retry_advice(bucket_service, stores):
    """Last: it stops the S3 server."""
    _, procs = stores
    procs[0].terminate()
    procs[0].wait(30)
    client = vertex_client(bucket_service, PROJECT, LOCATION)
    with pytest.raises(errors.ServerError) as e:
        client.tunings.tune(base_model="tiny-random",
                            training_dataset=types.TuningDataset(
                                gcs_uri="s3://datasets/train.jsonl"))
    assert e.value.code == 503 and e.value.status == "UNAVAILABLE"
    assert "could not be reached" in e.value.message and "Try again" in e.value.message
