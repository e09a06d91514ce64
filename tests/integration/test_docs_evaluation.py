"""Every example in docs/evaluation.md runs: the CLI session locally, the REST session
against a real server (style point 9)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "evaluation.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_doc_has_both_sessions():
    assert len(blocks("bash")) == 1 and len(blocks("python")) == 1


def test_cli_session(tmp_path):
    bindir = Path(sys.executable).parent
    env = {**os.environ, "BASE": "tiny-random", "TUNELAB_HOME": str(tmp_path / "home"),
           "COLUMNS": "200", "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    script = "set -euo pipefail\n" + blocks("bash")[0]
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "8 of the 48 examples were held out" in r.stdout
    # an epoch with its margins, or (the tiny random model may learn nothing in two epochs)
    # the note that no epoch got any validation example right
    one_line = " ".join(r.stdout.split())
    assert "Best epoch: Epoch" in one_line or "Best epoch: No epoch got any" in one_line
    assert "Scores on test.jsonl (6 examples)" in r.stdout
    assert "tiny-random" in r.stdout  # the base model, added to the comparison


def test_rest_session(service, tmp_path):
    r = subprocess.run([sys.executable, "-c", blocks("python")[0]], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "TUNELAB": service.url, "TUNELAB_TOKEN": service.token,
                            "BASE": "tiny-random"})
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "Each epoch is scored on the 8 validation examples given." in out
    assert re.search(r"^base: [0-9.]+ \[\(1, [0-9.]+\), \(2, [0-9.]+\)\]$", out, re.M)
    assert "has the best validation accuracy" in out or re.search(
        r"No epoch got any of the 8 validation examples right \(accuracy 0.000", out)
    assert re.search(r"^tunedModels/parity accuracy [0-9.]+ \d+ ms$", out, re.M)
    assert re.search(r"^models/tiny-random accuracy [0-9.]+ \d+ ms$", out, re.M)
