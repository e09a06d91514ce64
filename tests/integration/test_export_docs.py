"""Every example in docs/export.md runs: the CLI session on a fresh home, the Python snippet on
its output, and the curl session against a real server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from service_harness import create_body, wait_op

DOC = Path(__file__).resolve().parents[2] / "docs" / "export.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def bash(script: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_doc_has_its_sessions():
    assert len(blocks("bash")) == 2 and len(blocks("python")) == 1


def test_cli_session_and_python_snippet(tmp_path):
    env = {**os.environ, "TUNELAB_HOME": str(tmp_path / "home"), "TUNELAB_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = bash(blocks("bash")[0], tmp_path, env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "adapter_model.safetensors" in r.stdout and "chat_template.jinja" in r.stdout
    assert (tmp_path / "run.gguf").read_bytes()[:4] == b"GGUF"
    assert (tmp_path / "imported" / "manifest.json").exists()
    r = subprocess.run([sys.executable, "-c", blocks("python")[0]], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "merged answers:" in r.stdout


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="needs curl + jq")
def test_curl_session(service, client, tmp_path):
    op = client.post("/v1beta/tunedModels", params={"tunedModelId": "doc-export"},
                     json=create_body(epochs=2)).json()
    assert "error" not in wait_op(client, op["name"])
    r = bash(blocks("bash")[1], tmp_path, {**os.environ, "TUNELAB": service.url,
                                           "TUNELAB_TOKEN": service.token, "MODEL": "doc-export"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^tunedModels/imported-adapter-\S+ ACTIVE$", r.stdout, re.M)
    assert "format must be one of peft, merged, gguf" in r.stdout
    assert (tmp_path / "model.gguf").read_bytes()[:4] == b"GGUF"
