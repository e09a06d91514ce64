"""The google-genai versions the SDK matrix runs (tests/integration/test_sdk_matrix.py), each
in its own virtualenv under ``.venv/sdk-envs/`` (one SDK version per environment: they cannot
share one). ``make install-dev`` builds them (``python tests/integration/sdk_envs.py``); a
test that finds one missing builds it, and fails, saying what to run, if it cannot.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / ".venv" / "sdk-envs"
# The Gemini-API path changed under these (see docs/sdks.md and the wire reference §5.1):
VERSIONS = {
    "1.46.0": "the last version that sends the training examples (snake_case keys)",
    "1.47.0": "the first version that drops them",
    "3.6.1": "the newest 3.x on the index (default api_version v1; tunings.list refused)",
}


def env_dir(version: str) -> Path:
    return ROOT / f"google-genai-{version}"


def python_of(version: str) -> Path:
    return env_dir(version) / "bin" / "python"


def build(version: str) -> Path:
    """The environment's python, creating the environment first if needed. A half-built
    one (no ``.complete`` marker) is built again."""
    python = python_of(version)
    marker = env_dir(version) / ".complete"
    if marker.exists() and python.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(env_dir(version))],
                   check=True, capture_output=True, text=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                    f"google-genai=={version}"], check=True, capture_output=True, text=True)
    marker.touch()
    return python


if __name__ == "__main__":
    for v in VERSIONS:
        try:
            build(v)
        except subprocess.CalledProcessError as e:
            sys.exit(f"could not install google-genai=={v} into {env_dir(v)}:\n"
                     f"{(e.stderr or '')[-2000:]}")
        print(f"google-genai {v}: {python_of(v)}")
