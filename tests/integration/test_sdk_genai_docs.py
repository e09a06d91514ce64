"""Every example of the "Google SDKs" section of docs/sdks.md runs against a real server
(style point 9): the Vertex-mode session with the newest google-genai (and the pinned 3.3.0),
the Gemini-API-mode session with every version of the matrix, the old SDK's with 0.8.6.
A newcomer with only the newest google-genai follows exactly these lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sdk_envs

from tunelab.jobs.requests import EXTRA_BODY_SNIPPET

DOC = Path(__file__).resolve().parents[2] / "docs" / "sdks.md"
NEWEST = max(sdk_envs.VERSIONS, key=lambda v: tuple(int(x) for x in v.split(".")))
PINNED = "pinned"  # the google-genai of the dev extras, in this interpreter


def section() -> str:
    text = DOC.read_text()
    start = text.index("\n## Google SDKs\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def blocks() -> dict[str, str]:
    """The python examples by role, in the order the section has them."""
    found = re.findall(r"```python\n(.*?)```", section(), flags=re.S)
    names = ["sign_in", "vertex_client", "vertex_session", "gemini_client", "gemini_session",
             "old_sdk"]
    assert len(found) == len(names)
    return dict(zip(names, found, strict=True))


@pytest.fixture(scope="module")
def user_env(service):
    acc = service.accounts()
    acc.add_user("nora", "nora's password")
    key = acc.create_key("nora", "docs")[1]
    return {**os.environ, "TUNELAB": service.url, "TUNELAB_USER": "nora",
            "TUNELAB_PASSWORD": "nora's password", "TUNELAB_API_KEY": key}


def run(env: dict, version: str, *parts: str, cwd: Path) -> list[str]:
    python = sys.executable if version == PINNED else str(sdk_envs.build(version))
    code = "\n".join(blocks()[p] for p in ("sign_in", *parts))
    r = subprocess.run([python, "-c", code], cwd=cwd, capture_output=True, text=True,
                       env={**env, "PYTHONWARNINGS": "ignore"}, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr[-5000:]
    return r.stdout.splitlines()


def test_the_400_shows_the_documented_snippet():
    assert EXTRA_BODY_SNIPPET in section().replace("\n", " ")


@pytest.mark.parametrize("version", [NEWEST, PINNED])
def test_vertex_session(user_env, tmp_path, version):
    lines = run(user_env, version, "vertex_client", "vertex_session", cwd=tmp_path)
    state, endpoint = lines[0].split()
    assert state == "JOB_STATE_SUCCEEDED"
    assert re.fullmatch(r"projects/my-project/locations/us-central1/endpoints/capitals-\w{5}",
                        endpoint)
    assert lines[1] == "12 steps"  # ceil(24 / 4) × 2 epochs
    assert lines[2:] == ["True", "True", "JOB_STATE_CANCELLED"]


@pytest.mark.parametrize("version", [*sdk_envs.VERSIONS, PINNED])
def test_gemini_api_session(user_env, tmp_path, version):
    lines = run(user_env, version, "gemini_client", "gemini_session", cwd=tmp_path)
    name, state = lines[0].split()
    assert re.fullmatch(r"tunedModels/gemini-mode-\w{5}", name)
    assert state == "JOB_STATE_SUCCEEDED"
    assert lines[1:] == ["True", "True", "True"]


def test_old_sdk_session(user_env, tmp_path):
    pytest.importorskip("google.generativeai")
    assert run(user_env, PINNED, "old_sdk", cwd=tmp_path) == ["tunedModels/old-sdk ACTIVE",
                                                              "True"]
