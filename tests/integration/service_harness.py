"""Start a real tunelab service (``tunelab serve``) and workers as subprocesses, on a free
port of 127.0.0.1 with a temporary TUNELAB_HOME and the tiny random base model.

The service is never open: the first ``serve`` creates the owner account and writes its
credentials to HOME/credentials.json; ``Service`` reads them, so ``client()`` sends the
owner's bearer token (tuning scope) and ``api_key`` / ``token`` are at hand for tests that
call with other credentials."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

OWNER_CREDENTIALS = "credentials.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def examples(n: int = 20) -> list[dict]:
    """Inputs and outputs in one consistent format (no validation warnings)."""
    return [{"textInput": f"word {i}", "output": f"WORD {i}"} for i in range(n)]


def create_body(n: int = 20, epochs: int = 2, batch: int = 4, **extra) -> dict:
    body = {
        "baseModel": "models/tiny-random",
        "tuningTask": {
            "trainingData": {"examples": {"examples": examples(n)}},
            "hyperparameters": {"epochCount": epochs, "batchSize": batch, "learningRate": 0.01},
        },
    }
    body.update(extra)
    return body


class PortTaken(RuntimeError):
    """The server's port was taken between choosing it and the server binding it."""


class Service:
    def __init__(self, home: Path, *, workers: int = 1, env: dict | None = None):
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.env = {
            **os.environ,
            "TUNELAB_HOME": str(home),
            "TUNELAB_DEFAULT_BASE_MODEL": "tiny-random",
            "TUNELAB_THREADS": "1",
            "TUNELAB_LEASE_SECONDS": "2",
            "TUNELAB_MAX_CONCURRENT_JOBS": "50",  # tests queue many jobs; test_auth sets its own
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None
        self.worker_procs: list[subprocess.Popen] = []
        self.log_path = home / f"serve-{self.port}.log"
        self.log = open(self.log_path, "ab")

    def start(self) -> Service:
        for attempt in range(3):
            try:
                return self._start()
            except PortTaken:
                # another test process (pytest -n) took the free port before the server bound
                # it: the same server on another free port
                if attempt == 2:
                    raise
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
                self.log.close()
                self.log_path = self.home / f"serve-{self.port}.log"
                self.log = open(self.log_path, "ab")
        return self

    def _start(self) -> Service:
        args = [sys.executable, "-m", "tunelab.cli", "serve", "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", str(self.workers)]
        if self.workers == 0:
            args.append("--no-worker")
        self.proc = subprocess.Popen(args, env=self.env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 240  # generous: the test machine is often loaded
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.read_log()
                said = " ".join(log.split())  # the CLI wraps its message at 80 columns
                if f"cannot listen on 127.0.0.1:{self.port}: Address already in use" in said:
                    raise PortTaken(log)
                raise RuntimeError(f"server exited: {log}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    self._sign_in()
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.read_log()}")

    def _sign_in(self) -> None:
        self.creds = json.loads((self.home / OWNER_CREDENTIALS).read_text())
        self.api_key = self.creds["api_key"]
        self.token = self.oauth_token(refresh_token=self.creds["refresh_token"])

    def oauth_token(self, **form) -> str:
        """An access token from /oauth2/token: ``refresh_token=…`` or
        ``username=…, password=…`` (password grant), optionally ``scope=…``."""
        grant = "refresh_token" if "refresh_token" in form else "password"
        r = httpx.post(self.url + "/oauth2/token", data={"grant_type": grant,
                                                         "client_id": "tunelab", **form})
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def accounts(self):
        """The service's accounts, opened on its store from this process (to add users)."""
        from tunelab.auth.accounts import Accounts
        from tunelab.config import Settings
        from tunelab.store import Store

        settings = Settings(home=self.home)
        return Accounts(Store.open(settings), settings)

    def start_worker(self) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-m", "tunelab.jobs"], env=self.env,
                             stdout=self.log, stderr=self.log)
        self.worker_procs.append(p)
        return p

    def read_log(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        for p in [self.proc, *self.worker_procs]:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [self.proc, *self.worker_procs]:
            if p is not None:
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.worker_procs = []

    def client(self, token: str | None = None) -> httpx.Client:
        """A client with a bearer token (the owner's unless another is given)."""
        return httpx.Client(base_url=self.url, timeout=60,
                            headers={"Authorization": f"Bearer {token or self.token}"})


def wait_op(c: httpx.Client, name: str, until=lambda op: op.get("done"), timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        op = c.get(f"/v1beta/{name}").json()
        if until(op):
            return op
        time.sleep(0.1)
    raise AssertionError(f"operation {name} did not reach the condition: {op}")


def snapshot_tuples(op_or_model: dict) -> list[tuple]:
    snaps = (op_or_model.get("metadata") or op_or_model.get("tuningTask") or {}).get(
        "snapshots", []
    )
    return [(s["step"], s["epoch"], round(s["meanLoss"], 5)) for s in snaps]
