"""`tunelab serve` owns its worker processes: stopping it stops them, and killing it outright
(kill -9) leaves no orphan worker behind either."""

from __future__ import annotations

import os
import signal
import time

import pytest
from service_harness import Service


def worker_pids(home) -> list[int]:
    """Worker processes (python -m tunelab.jobs) whose TUNELAB_HOME is ``home``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            if b"tunelab.jobs" not in cmd:
                continue
            env = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if f"TUNELAB_HOME={home}".encode() in env:
            pids.append(int(entry))
    return pids


def wait_gone(home, timeout: float = 90) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = worker_pids(home)
        if not left:
            return []
        time.sleep(0.5)
    return worker_pids(home)


pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_serve_stops_its_workers(tmp_path, sig):
    svc = Service(tmp_path, workers=2).start()
    try:
        assert len(worker_pids(tmp_path)) == 2
        svc.proc.send_signal(sig)
        svc.proc.wait(90)
        assert wait_gone(tmp_path) == []
    finally:
        svc.stop()
        for pid in worker_pids(tmp_path):
            os.kill(pid, signal.SIGKILL)


def test_serve_output_is_tunelabs_own_lines(tmp_path):
    """A service's log holds tunelab's lines: no library deprecation notices, no migration
    chatter, no carriage-return progress bars, over a whole tuning job and generation."""
    from service_harness import create_body, wait_op

    svc = Service(tmp_path).start()
    try:
        with svc.client(svc.token) as c:
            op = c.post("/v1beta/tunedModels", json=create_body(epochs=1)).json()
            done = wait_op(c, op["name"])
            assert "error" not in done, done
            model = op["name"].split("/operations/")[0]
            r = c.post(f"/v1beta/{model}:generateContent",
                       json={"contents": [{"parts": [{"text": "word 3"}]}]})
            assert r.status_code == 200, r.text
    finally:
        svc.stop()
    log = svc.read_log()
    assert "job 1 completed" in log
    for noise in ("Warning", "warnings.warn", "alembic", "\r"):
        assert noise not in log, f"{noise!r} in the service log:\n{log}"
