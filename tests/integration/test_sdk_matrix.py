"""Every google-genai version that matters, against one live server: 1.46 (sends the
examples, snake_case), 1.47 (the first that drops them) and the newest 3.x (drops them;
default api_version v1; tunings.list refused inside the SDK). Each runs in its own virtualenv
(``sdk_envs.py``) through ``sdk_matrix_client.py``: in Gemini-API mode it tunes with the
documented workaround (and 1.46 without it), polls, lists, generates, streams, counts tokens
and cancels; in Vertex mode it does the same with no workaround. Nothing is skipped: a missing
environment is built, and a failure to build one fails the test saying what to run."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import sdk_envs

from tunelab.jobs.requests import EXTRA_BODY_SNIPPET

CLIENT = Path(__file__).with_name("sdk_matrix_client.py")
CASES = [(v, mode) for v in sdk_envs.VERSIONS for mode in ("gemini", "vertex")]


def run(service, version: str, mode: str) -> dict:
    try:
        python = sdk_envs.build(version)
    except subprocess.CalledProcessError as e:
        pytest.fail(f"google-genai {version} is not installed in {sdk_envs.env_dir(version)} "
                    f"and could not be: run `make install-dev` (it runs "
                    f"tests/integration/sdk_envs.py) where the package index is reachable.\n"
                    f"{(e.stderr or '')[-1500:]}")
    env = {**os.environ, "TUNELAB": service.url, "TUNELAB_API_KEY": service.api_key,
           "TUNELAB_REFRESH_TOKEN": service.creds["refresh_token"]}
    env.pop("PYTHONPATH", None)
    r = subprocess.run([str(python), str(CLIENT), mode], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def as_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def major(version: str) -> int:
    return as_tuple(version)[0]


def check_inference(seen: dict) -> None:
    assert seen["finish"] in ("STOP", "MAX_TOKENS")
    assert seen["stream_finish"] in ("STOP", "MAX_TOKENS")
    assert seen["stream_text"] == seen["text"]  # temperature 0: the same reply
    assert seen["count_tokens"] > 2


@pytest.mark.parametrize(("version", "mode"), CASES, ids=[f"{v}-{m}" for v, m in CASES])
def test_sdk_version(service, version, mode):
    out = run(service, version, mode)
    assert out["sdk_version"] == version
    if mode == "gemini":
        assert out["default_api_version"] == ("v1beta" if major(version) < 3 else "v1")
        plain = out["plain_tune"]
        if version == "1.46.0":  # still sends the examples (as text_input)
            assert plain["name"].startswith("tunedModels/matrix-")
            assert plain["state"] == "JOB_STATE_QUEUED"
        else:  # the SDK dropped them: the 400 shows the workaround, exactly as documented
            assert plain["code"] == 400 and plain["status"] == "INVALID_ARGUMENT"
            assert EXTRA_BODY_SNIPPET in plain["message"]
        tuned = out["workaround_tune"]
        assert tuned["queued"] == "JOB_STATE_QUEUED"
        assert tuned["state"] == "JOB_STATE_SUCCEEDED" and tuned["succeeded"]
        if as_tuple(version) < (1, 74):
            assert tuned["name"] in out["list"]
        else:
            assert out["list"].startswith("refused:")
        check_inference(out["inference"])
        check_inference(out["inference_other_version"])
        assert out["models_get"] == {"name": tuned["name"], "display_name": "Matrix"}
        assert tuned["name"] in out["tuned_list"]
        assert "models/tiny-random" in out["base_list"]
        # a model cancelled mid-run keeps what it learned (ACTIVE → SUCCEEDED in this SDK's
        # mapping); one cancelled before it started has nothing (FAILED)
        assert out["cancel"]["ended"]
        assert out["cancel"]["state"] in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED")
    else:
        assert out["default_api_version"] == "v1beta1"
        tune = out["tune"]
        assert tune["name"].startswith("projects/matrix/locations/us-central1/tuningJobs/")
        assert tune["queued"] in ("JOB_STATE_PENDING", "JOB_STATE_RUNNING")
        assert tune["state"] == "JOB_STATE_SUCCEEDED"
        # the dataset's 40, of which 8 (10%, at least 8) were held out for scoring
        assert tune["examples"] == 40
        assert tune["endpoint"].endswith(tune["name"].rsplit("/", 1)[1])
        assert tune["name"] in out["list"]
        check_inference(out["inference"])
        check_inference(out["inference_v1"])
        assert out["cancel"] == {"state": "JOB_STATE_CANCELLED", "error": 1}
