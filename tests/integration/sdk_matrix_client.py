"""One google-genai version against a live tunelab, run by test_sdk_matrix.py with the
python of that version's environment (so it imports only the SDK, never tunelab).

``python sdk_matrix_client.py gemini|vertex`` with TUNELAB, TUNELAB_API_KEY,
TUNELAB_REFRESH_TOKEN in the environment; prints one JSON object of what the SDK did and
saw, for the test to judge. Every SDK call is a real request to the server.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

import requests
from google import genai
from google.genai import errors, types
from google.oauth2.credentials import Credentials

warnings.filterwarnings("ignore")
URL = os.environ["TUNELAB"]
KEY = os.environ["TUNELAB_API_KEY"]


def _v(enum) -> str | None:
    """An SDK enum's wire value ('JOB_STATE_SUCCEEDED'), whatever the version's str()."""
    return getattr(enum, "value", enum)


def credentials() -> Credentials:
    creds = Credentials(token=None, refresh_token=os.environ["TUNELAB_REFRESH_TOKEN"],
                        token_uri=f"{URL}/oauth2/token", client_id="tunelab", client_secret="")
    from google.auth.transport.requests import Request

    creds.refresh(Request())
    return creds


def examples(n: int) -> list[dict]:
    return [{"textInput": f"word {i}", "output": f"WORD {i}"} for i in range(n)]


def sdk_examples(n: int) -> list[types.TuningExample]:
    return [types.TuningExample(text_input=e["textInput"], output=e["output"])
            for e in examples(n)]


def wait(client: genai.Client, name: str) -> types.TuningJob:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = client.tunings.get(name=name)
        if job.has_ended:
            return job
        time.sleep(0.2)
    raise SystemExit(f"{name} did not end")


def inference(client: genai.Client, model: str) -> dict:
    cfg = types.GenerateContentConfig(max_output_tokens=5, temperature=0.0)
    r = client.models.generate_content(model=model, contents="word 3", config=cfg)
    chunks = list(client.models.generate_content_stream(model=model, contents="word 3",
                                                        config=cfg))
    return {
        "text": r.text or "",
        "finish": _v(r.candidates[0].finish_reason),
        "stream_text": "".join(c.text or "" for c in chunks),
        "stream_finish": _v(chunks[-1].candidates[0].finish_reason),
        "count_tokens": client.models.count_tokens(model=model, contents="word 3").total_tokens,
    }


def gemini() -> dict:
    bearer = {"Authorization": f"Bearer {credentials().token}"}
    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=URL,
                                                                      headers=bearer))
    out: dict = {"default_api_version": client._api_client._http_options.api_version}
    config = {"tuned_model_display_name": "Matrix", "epoch_count": 1, "batch_size": 4,
              "learning_rate": 0.01}
    # 1. tune() as the SDK's own docs write it
    try:
        job = client.tunings.tune(base_model="models/tiny-random",
                                  training_dataset=types.TuningDataset(examples=sdk_examples(20)),
                                  config=types.CreateTuningJobConfig(**config))
        out["plain_tune"] = {"name": job.name, "state": _v(job.state)}
    except errors.ClientError as e:
        out["plain_tune"] = {"code": e.code, "status": e.status, "message": e.message}
    # 2. the documented workaround: the examples in extra_body of the tune call's config
    extra = {"tuningTask": {"trainingData": {"examples": {"examples": examples(20)}}}}
    job = client.tunings.tune(
        base_model="models/tiny-random",
        training_dataset=types.TuningDataset(examples=sdk_examples(20)),
        config=types.CreateTuningJobConfig(
            **config, http_options=types.HttpOptions(extra_body=extra)))
    done = wait(client, job.name)
    out["workaround_tune"] = {"name": job.name, "queued": _v(job.state),
                              "state": _v(done.state), "succeeded": done.has_succeeded}
    # 3. list: sent by versions before 1.74, refused inside the SDK after
    try:
        out["list"] = [j.name for j in client.tunings.list()]
    except ValueError as e:
        out["list"] = f"refused: {e}"
    # 4. inference on the tuned model, on the default version and the other one
    out["inference"] = inference(client, job.name)
    other = "v1" if out["default_api_version"] == "v1beta" else "v1beta"
    other_client = genai.Client(api_key=KEY, http_options=types.HttpOptions(
        base_url=URL, headers=bearer, api_version=other))
    out["inference_other_version"] = {"api_version": other, **inference(other_client, job.name)}
    m = client.models.get(model=job.name)
    out["models_get"] = {"name": m.name, "display_name": m.display_name}
    out["tuned_list"] = [x.name for x in client.models.list(config={"query_base": False})]
    out["base_list"] = [x.name for x in client.models.list()]
    # 5. cancel a long job
    long_job = client.tunings.tune(
        base_model="models/tiny-random",
        training_dataset=types.TuningDataset(examples=sdk_examples(40)),
        config=types.CreateTuningJobConfig(epoch_count=50, batch_size=4, http_options=types.
                                           HttpOptions(extra_body={"tuningTask": {
                                               "trainingData": {"examples": {
                                                   "examples": examples(40)}}}})))
    client.tunings.cancel(name=long_job.name)
    cancelled = wait(client, long_job.name)
    out["cancel"] = {"state": _v(cancelled.state), "ended": cancelled.has_ended}
    return out


def vertex() -> dict:
    creds = credentials()
    data = "".join(json.dumps({"contents": [
        {"role": "user", "parts": [{"text": e["textInput"]}]},
        {"role": "model", "parts": [{"text": e["output"]}]}]}) + "\n" for e in examples(40))
    r = requests.post(f"{URL}/v1beta/files", headers={"Authorization": f"Bearer {creds.token}"},
                      files={"file": ("train.jsonl", data.encode(), "application/jsonl")},
                      timeout=60)
    r.raise_for_status()
    train = r.json()["name"]
    client = genai.Client(vertexai=True, project="matrix", location="us-central1",
                          credentials=creds, http_options=types.HttpOptions(base_url=URL))
    out: dict = {"default_api_version": client._api_client._http_options.api_version}
    job = client.tunings.tune(base_model="tiny-random",
                              training_dataset=types.TuningDataset(gcs_uri=train),
                              config=types.CreateTuningJobConfig(
                                  tuned_model_display_name="Matrix vertex", epoch_count=1))
    done = wait(client, job.name)
    out["tune"] = {"name": job.name, "queued": _v(job.state), "state": _v(done.state),
                   "endpoint": done.tuned_model.endpoint if done.tuned_model else None,
                   "examples": done.tuning_data_stats.supervised_tuning_data_stats
                   .tuning_dataset_example_count}
    out["list"] = [j.name for j in client.tunings.list()]
    out["inference"] = inference(client, done.tuned_model.endpoint)
    v1 = genai.Client(vertexai=True, project="matrix", location="us-central1",
                      credentials=creds, http_options=types.HttpOptions(base_url=URL,
                                                                        api_version="v1"))
    out["inference_v1"] = inference(v1, done.tuned_model.endpoint)
    long_job = client.tunings.tune(base_model="tiny-random",
                                   training_dataset=types.TuningDataset(gcs_uri=train),
                                   config=types.CreateTuningJobConfig(epoch_count=50))
    client.tunings.cancel(name=long_job.name)
    cancelled = wait(client, long_job.name)
    out["cancel"] = {"state": _v(cancelled.state),
                     "error": cancelled.error.code if cancelled.error else None}
    return out


if __name__ == "__main__":
    result = {"gemini": gemini, "vertex": vertex}[sys.argv[1]]()
    result["sdk_version"] = genai.__version__
    print(json.dumps(result))
