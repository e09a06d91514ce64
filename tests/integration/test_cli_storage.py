"""`tunelab tune` (local, no server) on a disk that fills up: one plain line, no traceback, and
the same command resumes once there is space. The full disk is a real tmpfs (needs root, as
tests/integration/test_storage_faults.py; CI runs as root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="a real full file system is made by mounting a small tmpfs, which "
    "needs root (CI runs the suite as root)")


def test_tune_on_a_full_disk_says_so_in_one_line_and_resumes(tmp_path):
    from tunelab.catalog import get_base_model, load_base_model

    tiny = load_base_model(get_base_model("tiny-random"), tmp_path / "models", "cpu", threads=1)
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps({"text_input": f"add {i} and {i + 1}",
                                        "output": f"{2 * i + 1}"}) + "\n" for i in range(24)))
    env = {**os.environ, "TUNELAB_HOME": str(tmp_path / "home"),
           "TUNELAB_EXTRA_MODELS": json.dumps({"tiny": str(tiny.path)})}
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(out)], check=True)
    cmd = [sys.executable, "-m", "tunelab.cli", "tune", str(data), "--base-model", "tiny",
           "--epochs", "2", "--learning-rate", "0.02", "-o", str(out)]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
        assert "The disk tunelab was writing to is full" in r.stderr
        subprocess.run(["mount", "-o", "remount,size=64m", str(out)], check=True)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads((out / "manifest.json").read_text())["epochs_run"] == 2
    finally:
        if subprocess.run(["umount", str(out)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(out)], check=False)
