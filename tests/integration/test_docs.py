"""Every example in docs/api.md runs against a real server (style point 9)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_doc_has_both_sessions():
    assert len(blocks("bash")) == 1 and len(blocks("python")) == 1


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="needs curl + jq")
def test_curl_session(service, tmp_path):
    script = "set -euo pipefail\n" + blocks("bash")[0]
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "TUNELAB": service.url, "TUNELAB_TOKEN": service.token,
                            "TUNELAB_API_KEY": service.api_key}, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "models/tiny-random" in out
    assert "tunedModels/doubler/operations/" in out
    assert '"completedPercent": 100' in out
    assert '"state": "ACTIVE"' in out
    assert "data: {" in out
    assert '"temperature": 0.2' in out
    assert '"exampleCount": 20' in out
    assert '"code": 1' in out and "cancelled" in out
    assert '"status": "NOT_FOUND"' in out
    assert "tunedModels/doubler ACTIVE" in out
    assert re.search(r"^apiKeys/\S+ …\S{4} doubler app$", out, re.M)


def test_python_session(service, tmp_path):
    r = subprocess.run([sys.executable, "-c", blocks("python")[0]], cwd=tmp_path,
                       capture_output=True, text=True,
                       env={**os.environ, "TUNELAB": service.url, "TUNELAB_TOKEN": service.token,
                            "TUNELAB_API_KEY": service.api_key}, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "10 steps" in out
    assert "ACTIVE" in out and "JOB_STATE_SUCCEEDED" in out
    assert "tunedModels/py-doubler" in out
    assert "cancelled: Tuning was cancelled by the user" in out
