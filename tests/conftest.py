"""Fixtures shared by every test folder: a throwaway PostgreSQL cluster.

``pg_cluster`` (one per session) runs Debian's PostgreSQL binaries itself: ``initdb`` into a
temporary folder, ``pg_ctl start`` on a free port of 127.0.0.1 (unix socket in the same
folder, fsync off: the data is thrown away), and ``pg_ctl stop`` at the end. ``postgres_url``
creates a fresh database in it for each test. Tests that use them are skipped, with the
reason, when the binaries (``apt-get install postgresql``) or psycopg
(``pip install -e '.[postgres]'``) are missing. ``TUNELAB_TEST_PG_BINDIR`` names another
folder of PostgreSQL binaries.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

# Tests pin losses and greedy tokens, which must not depend on the CPU a test runs on: the frozen
# base is held in fp32 unless a test asks for another precision (TUNELAB_PRECISION, catalog/
# precision.py). Servers started by tests inherit it.
os.environ.setdefault("TUNELAB_PRECISION", "fp32")


def _pg_bindir() -> Path | None:
    env = os.environ.get("TUNELAB_TEST_PG_BINDIR")
    if env:
        return Path(env) if (Path(env) / "initdb").exists() else None
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    for d in reversed(dirs):
        if (Path(d) / "initdb").exists():
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """A PostgreSQL cluster of our own. PostgreSQL refuses to run as root, so as root the
    binaries run as the ``postgres`` user (``runuser``) in a folder that user owns."""

    SUPERUSER = "tunelab"

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="tunelab-pg-"))  # /tmp: reachable by postgres
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self._names = itertools.count(1)
        self._started = False
        self._as: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")  # KeyError: no such user (caught by the fixture)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, tool: str, *args: str) -> None:
        cmd = [*self._as, str(self.bindir / tool), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stdout}{res.stderr}{log}")

    def start(self) -> PgCluster:
        self._run("initdb", "-D", str(self.data), "-U", self.SUPERUSER, "--auth=trust",
                  "--encoding=UTF8", "--no-locale", "--no-sync")
        for attempt in range(3):  # another process may take the free port before we do
            self.port = _free_port()
            opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                    "-c max_connections=200")
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                          "-o", opts, "start")
                self._started = True
                return self
            except RuntimeError:
                if attempt == 2:
                    raise
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        dsn = f"host=127.0.0.1 port={self.port} user={self.SUPERUSER} dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            if self._started:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster():
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql, "
                    "or set TUNELAB_TEST_PG_BINDIR)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[postgres]')")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
    cluster = PgCluster(bindir)
    try:
        cluster.start()
    except Exception:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(pg_cluster) -> str:
    """The SQLAlchemy URL of a fresh, empty PostgreSQL database."""
    return pg_cluster.create_database()


# ``make test PYTEST_WORKERS="-n 2 --dist loadfile --no-loadscope-reorder"`` runs the suite on
# two workers, each test module whole on one of them, in the order collected (one process is
# the default, see the Makefile). The longest modules go first, so the last module
# a worker picks up is a short one and both finish at about the same time. Measured with
# ``--durations`` on the whole suite; the rest keep their order after these.
LONGEST_FIRST = (
    "tests/integration/test_restart.py",
    "tests/integration/test_ray.py",
    "tests/integration/test_auth.py",
    "tests/unit/test_bench_quality_smoke.py",
    "tests/integration/test_cli_service.py",
    "tests/integration/test_export_docs.py",
    "tests/integration/test_docs_evaluation.py",
    "tests/integration/test_serve_lifecycle.py",
    "tests/unit/test_bench_smoke.py",
    "tests/unit/test_parity.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(item) -> int:
        return rank.get(Path(item.path).relative_to(config.rootpath).as_posix(), len(rank))

    items.sort(key=key)  # stable: tests keep their order within a module


# ``make test`` (and so CI) runs the whole suite: it installs the system packages first and sets
# TUNELAB_TEST_STRICT=1, which turns every skip into a failure, so a test the README promises can
# never be skipped silently because a machine lacks something. A bare ``pytest`` still skips
# with the reason (handy on a laptop without PostgreSQL).
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and os.environ.get("TUNELAB_TEST_STRICT") == "1"
            and not hasattr(report, "wasxfail")):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (f"skipped under make test (TUNELAB_TEST_STRICT=1), which promises the "
                           f"whole suite: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped at import (``pytest.importorskip``)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("TUNELAB_TEST_STRICT") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under make test (TUNELAB_TEST_STRICT=1): {reason}"
