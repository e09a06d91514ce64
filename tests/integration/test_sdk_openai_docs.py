"""Every example of the "OpenAI SDK" section of docs/sdks.md runs against a real server, in
the order written (style point 9)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openai")
DOC = Path(__file__).resolve().parents[2] / "docs" / "sdks.md"


def section() -> str:
    text = DOC.read_text()
    start = text.index("\n## OpenAI SDK\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section(), flags=re.S)


def env(service) -> dict[str, str]:
    return {**os.environ, "TUNELAB": service.url, "TUNELAB_TOKEN": service.token,
            "TUNELAB_API_KEY": service.api_key}


def test_python_examples(service, tmp_path):
    assert len(blocks("python")) == 4
    r = subprocess.run([sys.executable, "-c", "\n".join(blocks("python"))], cwd=tmp_path,
                       capture_output=True, text=True, env=env(service), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    status, model, batch = lines[0].split()
    assert status == "succeeded" and batch == "4"
    assert re.fullmatch(r"ft:tiny-random:caps:caps-[a-z0-9]{5}", model)
    assert lines[1] == "The job has successfully completed"
    assert lines[2].startswith("New fine-tuned model created: ft:tiny-random:caps:")
    assert lines[3].startswith("Checkpoint created at step 12")
    assert lines[4].startswith("12 ") and lines[4].endswith(f"{model}:ckpt-step-12")
    assert lines[5].startswith("6 ") and lines[5].endswith(f"{model}:ckpt-step-6")
    text, tokens = lines[6].rsplit(" ", 1)
    assert int(tokens) > 0 and lines[7] == text  # streamed: the same greedy answer
    name, finish = lines[8].split()
    assert name == f"{model}:ckpt-step-6" and finish in ("stop", "length")
    assert "tiny-random" in lines[9] and model in lines[9]
    assert lines[10:] == ["cancelled", "succeeded", "403 insufficient_permissions", "True",
                          "True"]


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="needs curl + jq")
def test_curl_examples(service, tmp_path):
    r = subprocess.run(["bash", "-c", "set -euo pipefail\n" + blocks("bash")[0]], cwd=tmp_path,
                       capture_output=True, text=True, env=env(service), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "smollm2-135m-instruct",
        '{"type":"invalid_request_error","code":"model_not_found","param":"model"}']
