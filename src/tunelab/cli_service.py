"""Service commands of the ``tunelab`` CLI: ``serve``, ``worker``, ``jobs``, ``cancel``, and
``tune --server`` (``submit_and_follow``). ``cli.py`` calls ``register(app)``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from tunelab.config import Settings
from tunelab.errors import TunelabError
from tunelab.parameters import TunedModelSettings, problems

console = Console()
err = Console(stderr=True)

ServerOpt = Annotated[
    str | None, typer.Option("--server", help="URL of a running tunelab service.")
]


# ------------------------------------------------------------------------------- serve
class WorkerPool:
    """``tunelab serve``'s worker processes, restarted if they die (a killed worker's job is
    resumed by the next one to claim it once its lease lapses)."""

    def __init__(self, n: int, threads: int = 0):
        self.n = n
        self.threads = threads  # torch threads of each worker (0: the worker's own setting)
        self.procs: list[subprocess.Popen] = []
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def _spawn(self) -> subprocess.Popen:
        # The worker watches this pid: if `serve` dies without stopping it (kill -9), the
        # worker notices, hands its job back to the queue and exits instead of lingering.
        env = {**os.environ, "TUNELAB_SUPERVISOR_PID": str(os.getpid())}
        if self.threads:
            env["TUNELAB_THREADS"] = str(self.threads)
        from tunelab.allocator import preload_env

        env = preload_env(env) or env  # jemalloc where found (allocator.py)
        return subprocess.Popen([sys.executable, "-m", "tunelab.jobs"], env=env)

    def start(self) -> None:
        self.procs = [self._spawn() for _ in range(self.n)]
        self._thread = threading.Thread(target=self._watch, daemon=True, name="worker-pool")
        self._thread.start()

    def _watch(self) -> None:
        while not self.stopping.wait(1.0):
            for i, p in enumerate(self.procs):
                if p.poll() is not None and not self.stopping.is_set():
                    err.print(f"worker {p.pid} exited ({p.returncode}); starting another")
                    self.procs[i] = self._spawn()

    def stop(self, timeout: float = 60.0) -> None:
        self.stopping.set()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # the job stops within a step, back to the queue
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()


def _check_port_free(host: str, port: int) -> None:
    """Fail before creating anything when another program (another `tunelab serve`?) already
    listens there: the plain message instead of uvicorn's bind error after start-up."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise typer.BadParameter(f"cannot listen on host '{host}': {e.strerror}",
                                 param_hint="--host") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            err.print(f"[bold red]Error:[/] cannot listen on {host}:{port}: {e.strerror}. "
                      "Is another tunelab serve running? Stop it, or choose another port "
                      "with --port.", highlight=False)
            raise typer.Exit(2) from None


def _unwritable(home: Path, exc: Exception) -> typer.Exit:
    """One plain line, instead of a traceback, when ``serve`` cannot write its data directory
    (a read-only or full disk, no permission); ``exc`` is raised on when it is not that."""
    from tunelab.fsutil import storage_fault

    fault = storage_fault(exc)
    why = {"full": "is on a full disk", "read-only": "is on a read-only file system"}.get(
        fault.kind if fault else "") or _write_problem(home)
    if why is None:
        raise exc
    err.print(f"[bold red]Error:[/] cannot start: the data directory {home} {why}. Make it "
              "writable (or free space), or point TUNELAB_HOME at a writable directory.",
              highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _write_problem(home: Path) -> str | None:
    """Why nothing can be written in ``home`` (None: a file can be created there)."""
    import errno
    import tempfile

    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=home):
            return None
    except OSError as e:
        if e.errno == errno.EROFS:
            return "is on a read-only file system"
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return "is on a full disk"
        if e.errno in (errno.EACCES, errno.EPERM):
            return "is not writable by this user"
        return f"cannot be written ({e.strerror})"


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Tuning worker processes to start.")] = 1,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Start no worker (run `tunelab worker`).")
    ] = False,
) -> None:
    """Run the API (Gemini tuning protocol under /v1beta) and local tuning workers."""
    import uvicorn

    from tunelab.api.app import create_app
    from tunelab.quiet import quiet_libraries
    from tunelab.store import Store

    quiet_libraries()   # before the workers start: they inherit TQDM_DISABLE
    _check_port_free(host, port)
    settings = Settings()
    try:
        store = Store.open(settings)  # migrations run once, before any worker starts
    except Exception as e:
        raise _unwritable(settings.home, e) from None
    n_workers = 0 if no_worker else max(0, workers)
    # The API and its local workers share this machine's cores instead of each taking all.
    api_threads, worker_threads = settings.thread_split(n_workers)
    settings = settings.model_copy(update={"api_threads": api_threads})
    pool = WorkerPool(n_workers, worker_threads)
    app = create_app(settings, store)
    from tunelab.auth.bootstrap import ensure_owner

    try:
        created = ensure_owner(settings, app.state.accounts)
    except Exception as e:
        raise _unwritable(settings.home, e) from None
    if created:
        err.print(f"tunelab: created the owner account; its password, API key and refresh "
                  f"token are in {created} (readable only by you). See docs/auth.md.")
    per_worker = f", {worker_threads} per worker" if pool.n else ""
    err.print(f"tunelab: data in {settings.home}; {pool.n} worker(s); torch threads: API "
              f"{api_threads}{per_worker}; http://{host}:{port}")
    pool.start()

    def _exit(signum, frame):
        raise SystemExit(0)

    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal with the handler
    # that was in place before it started; with this one that ends in SystemExit, so the
    # `finally` below still stops the workers (the default handler would kill us first).
    signal.signal(signal.SIGTERM, _exit)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        pool.stop()  # then cli.main's end_quickly, as for every command


def worker(
    once: Annotated[bool, typer.Option(help="Exit when the queue is empty.")] = False,
) -> None:
    """Run one tuning worker against the store in TUNELAB_HOME / TUNELAB_DATABASE_URL."""
    from tunelab.jobs.worker import run_worker

    run_worker(Settings(), once=once)


# --------------------------------------------------------------------- client helpers
def _client(server: str):
    """An HTTP client signed in with the CLI's credentials (auth/client.py)."""
    import httpx

    from tunelab.auth.client import auth_for

    return httpx.Client(base_url=server.rstrip("/"), timeout=60.0, auth=auth_for(server))


def _check(resp) -> dict:
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if resp.status_code == 401 and "authorization" not in resp.request.headers:
        server = str(resp.request.url.copy_with(path="/", query=None)).rstrip("/")
        raise TunelabError(
            f"No credentials for {server}. Sign in with `tunelab login --server {server} "
            "YOUR_NAME`, or run this on the server's machine with TUNELAB_HOME set to its data "
            "directory (its owner credentials are there).")
    if resp.status_code >= 400:
        e = body.get("error", {}) if isinstance(body, dict) else {}
        raise TunelabError(
            f"{resp.status_code} {e.get('status', '')}: {e.get('message', resp.text)}"
        )
    return body


def jobs(
    server: ServerOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Include finished jobs.")] = False,
) -> None:
    """List tuning jobs (the queue, in order, with progress)."""
    table = Table("model", "state", "steps", "queue", "worker" if not server else "updated")
    try:
        if server:
            with _client(server) as c:
                body = _check(c.get("/v1beta/tunedModels", params={"pageSize": 1000}))
                for m in body.get("tunedModels", []):
                    if not all_ and m.get("state") != "CREATING":
                        continue
                    snaps = m.get("tuningTask", {}).get("snapshots") or []
                    meta = _latest_operation(c, m["name"]).get("metadata") or {}
                    done = meta.get("completedSteps", snaps[-1]["step"] if snaps else 0)
                    pos = meta.get("queuePosition")
                    table.add_row(m["name"], m["state"],
                                  f"{done}/{meta.get('totalSteps', '?')}",
                                  str(pos) if pos else "", m.get("updateTime", ""))
        else:
            from tunelab.store import Store

            store = Store.open(Settings())
            for j in store.list_jobs(include_done=all_):
                pos = store.queue_position(j)
                table.add_row(
                    f"tunedModels/{j.tuned_model_id}",
                    j.state + (" (cancelling)" if j.cancel_requested else ""),
                    f"{j.completed_steps}/{j.spec.get('total_steps', '?')}",
                    str(pos) if pos else "",
                    j.worker_id or "",
                )
    except TunelabError as e:
        err.print(f"[red]{e.message}[/]")
        raise typer.Exit(2) from None
    console.print(table)


def _latest_operation(c: Any, model: str) -> dict:
    """A tuned model's newest operation, whose metadata holds the queue position and the
    step counts (the tuned model itself carries neither)."""
    ops = _check(c.get(f"/v1beta/{model}/operations", params={"pageSize": 1}))
    return (ops.get("operations") or [{}])[0]


def cancel(
    model: Annotated[str, typer.Argument(help="tunedModels/ID or ID.")],
    server: ServerOpt = None,
) -> None:
    """Cancel a tuning job; it stops within one step and keeps what it learned so far."""
    model_id = model.removeprefix("tunedModels/")
    try:
        if server:
            with _client(server) as c:
                _check(c.post(f"/v1beta/tunedModels/{model_id}:cancel"))
        else:
            from tunelab.models import TunedModels
            from tunelab.store import Store

            settings = Settings()
            TunedModels.open(settings, Store.open(settings)).cancel(model_id)
    except TunelabError as e:
        err.print(f"[red]{e.message}[/]")
        raise typer.Exit(2) from None
    console.print(f"Cancel requested for tunedModels/{model_id}.")


def submit_and_follow(
    server: str,
    examples: list,
    hp: Any,
    base_model: str,
    display_name: str | None,
    *,
    poll_seconds: float = 1.0,
    out: Console | None = None,
    validation: list | None = None,
) -> dict:
    """Submit a tuning job to a tunelab service and show the progress bar from the
    operation's snapshots until it is done. Ctrl-C cancels the job. Returns the final
    Operation JSON; raises TunelabError when the server rejects the request."""
    out = out or console

    def wire(e: Any) -> dict:
        """An example on the wire, its system prompt (chat-format data) included."""
        sent = {"textInput": e.text_input, "output": e.output}
        return sent if e.system is None else {**sent, "systemInstruction": e.system}

    body: dict = {
        "baseModel": base_model if base_model.startswith("models/") else f"models/{base_model}",
        "tuningTask": {
            "trainingData": {"examples": {"examples": [wire(e) for e in examples]}},
            "hyperparameters": {k: v for k, v in {
                "epochCount": hp.epoch_count,
                "batchSize": hp.batch_size,
                "learningRate": hp.learning_rate,
                "learningRateMultiplier": hp.learning_rate_multiplier,
                "answerLabels": hp.answer_labels,
            }.items() if v is not None},
        },
    }
    if display_name:
        too_long = problems(TunedModelSettings, {"display_name": display_name})
        if too_long:  # said before anything is sent, never cut silently
            raise TunelabError(f"--display-name {too_long[0].message}; give a shorter name.")
        body["displayName"] = display_name
    if validation:
        body["tuningTask"]["validationData"] = {"examples": {"examples": [
            wire(e) for e in validation]}}
    progress = Progress(
        TextColumn("[bold blue]tuning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epoch {task.fields[epoch]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=out,
        disable=not out.is_terminal,  # a log or a pipe: a line per epoch instead
    )
    started, said_epoch, said_queue = time.monotonic(), None, None
    with _client(server) as c:
        op = _check(c.post("/v1beta/tunedModels", json=body))
        meta = op["metadata"]
        out.print(f"Submitted {meta['tunedModel']} ({meta['totalSteps']} steps) to {server}")
        split = (meta.get("evaluation") or {}).get("validation")
        if split:
            out.print(f"Validation: {split['message']}", highlight=False)
            for w in split.get("warnings") or []:
                out.print(f"  [yellow]![/] {w}", highlight=False)
        cancelled = False
        with progress:
            task = progress.add_task("tune", total=meta["totalSteps"], epoch="–", loss="–",
                                     note="")
            while True:
                meta = op["metadata"]
                snaps = meta.get("snapshots") or []
                pos = meta.get("queuePosition")
                progress.update(
                    task,
                    completed=meta.get("completedSteps", 0),
                    total=meta.get("totalSteps") or None,  # a refit's real length, once known
                    epoch=snaps[-1]["epoch"] if snaps else "–",
                    loss=f"{snaps[-1]['meanLoss']:.4f}" if snaps else "–",
                    note=f"queued (position {pos})" if pos else "",
                )
                if not out.is_terminal:
                    if pos and pos != said_queue:
                        out.print(f"tuning: queued (position {pos})", highlight=False)
                    said_queue = pos
                    if snaps and snaps[-1]["epoch"] != said_epoch:
                        said_epoch = snaps[-1]["epoch"]
                        progress_line(out, f"epoch {said_epoch}", meta.get("completedSteps", 0),
                                      meta.get("totalSteps"), snaps[-1]["meanLoss"], started)
                if op.get("done"):
                    break
                try:
                    time.sleep(poll_seconds)
                    op = _check(c.get(f"/v1beta/{op['name']}"))
                except KeyboardInterrupt:
                    if cancelled:
                        raise
                    cancelled = True
                    out.print("Cancelling (Ctrl-C again to stop following)…")
                    _check(c.post(f"/v1beta/{op['name']}:cancel"))
        if not out.is_terminal:  # where the job ended, as the bar would show it
            meta, snaps = op["metadata"], op["metadata"].get("snapshots") or []
            progress_line(out, "ended", meta.get("completedSteps", 0), meta.get("totalSteps"),
                          snaps[-1]["meanLoss"] if snaps else None, started)
        name = op["metadata"]["tunedModel"]
        if "error" in op:
            out.print(f"[yellow]{name}: {op['error'].get('message', '')}[/]")
        else:
            out.print(f"[green]{name} is ACTIVE.[/] Call it with POST "
                      f"{server.rstrip('/')}/v1beta/{name}:generateContent")
        evaluation = op["metadata"].get("evaluation") or {}
        if evaluation.get("advice"):
            out.print(f"[bold]Best epoch:[/] {evaluation['advice']}", highlight=False)
        if evaluation.get("refit"):  # training/refit.py: what is served, in words
            out.print(f"[bold]Served:[/] {evaluation['refit']}", highlight=False)
        return op


def progress_line(to: Console, what: str, done: int, total: int | None, loss: float | None,
                  started: float) -> None:
    """One plain line of a tune's progress, for a log or a pipe (which shows no live bar):
    ``tuning: epoch 2/5, step 20/50, loss 0.0312 (last step), 1:05 elapsed`` (the table of
    epochs after training gives each epoch's mean)."""
    of = f"/{total}" if total else ""
    said = f", loss {loss:.4f} (last step)" if loss is not None else ""
    to.print(f"tuning: {what}, step {done}{of}{said}, {elapsed(started)} elapsed",
             highlight=False)


def elapsed(started: float) -> str:
    """The time since ``started`` (``time.monotonic``) as ``m:ss``."""
    seconds = int(time.monotonic() - started)
    return f"{seconds // 60}:{seconds % 60:02d}"


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(worker)
    app.command()(jobs)
    app.command()(cancel)
    from tunelab.auth import cli as auth_cli

    auth_cli.register(app)
