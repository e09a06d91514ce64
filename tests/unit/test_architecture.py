"""The layering of docs/architecture.md, checked on the source: every import of every module
under src/tunelab (at the top or inside a function) is read with ``ast``, nothing is imported,
and an import across a rule fails with the file, the line and the rule it breaks.

Imports the API layer still makes while another change is under way are listed in ALLOWED,
each with the issue point that removes it; an entry that no longer matches anything fails too,
so the list only shrinks.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "tunelab"

FOUNDATION = {"errors", "config", "fsutil", "ids", "paging", "parameters", "quiet"}
ENGINE = {"catalog", "data", "training", "inference", "examples"}
WEB = {"api", "studio"}
ENTRY = {"cli", "cli_service"}


@dataclass(frozen=True)
class Import:
    path: str  # relative to src/tunelab, e.g. "api/gemini/routes.py"
    line: int
    module: str  # "tunelab.store.repo", "sqlalchemy.orm"
    names: tuple[str, ...]  # what a ``from`` import takes; () for ``import x``

    @property
    def package(self) -> str:
        """The importing unit: the top-level package (``api``) or module (``cli_service``)."""
        first = self.path.split("/")[0]
        return first.removesuffix(".py")

    @property
    def target(self) -> str:
        """What is imported: a tunelab unit (``store``) or a third-party top-level name."""
        parts = self.module.split(".")
        return parts[1] if parts[0] == "tunelab" and len(parts) > 1 else parts[0]

    @property
    def internal(self) -> bool:
        return self.module.startswith("tunelab.")

    def __str__(self) -> str:
        what = f"from {self.module} import {', '.join(self.names)}" if self.names else \
            f"import {self.module}"
        return f"src/tunelab/{self.path}:{self.line}: {what}"


def imports_of(path: Path, root: Path = SRC) -> list[Import]:
    rel = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text(), str(path))
    package = rel.rsplit("/", 1)[0].replace("/", ".") if "/" in rel else ""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [Import(rel, node.lineno, a.name, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = ["tunelab", *package.split(".")] if package else ["tunelab"]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append(Import(rel, node.lineno, module, tuple(a.name for a in node.names)))
    return out


def all_imports() -> list[Import]:
    return [i for p in sorted(SRC.rglob("*.py")) for i in imports_of(p)]


@dataclass(frozen=True)
class Rule:
    """``importers`` (units) may not import ``forbidden`` (units or third-party names)."""

    name: str
    importers: frozenset[str]
    forbidden: frozenset[str]

    def broken_by(self, imp: Import) -> bool:
        return imp.package in self.importers and imp.target in self.forbidden


ALL_UNITS = FOUNDATION | ENGINE | WEB | ENTRY | {"store", "auth", "jobs", "models", "export"}


def _all_but(*allowed: str) -> frozenset[str]:
    return frozenset(ALL_UNITS - set(allowed))


RULES = [
    Rule("only store/ speaks SQL", _all_but("store"), frozenset({"sqlalchemy", "alembic"})),
    Rule("only the web layer (api/, studio/) and the server command speak HTTP-server",
         _all_but("api", "studio", "cli_service"),
         frozenset({"fastapi", "starlette", "uvicorn"})),
    Rule("the foundation depends on nothing else of tunelab", frozenset(FOUNDATION),
         frozenset(ALL_UNITS - FOUNDATION)),
    Rule("the engine knows nothing of storage, queues, accounts, HTTP or the CLI",
         frozenset(ENGINE),
         frozenset({"store", "jobs", "models", "auth", "export", *WEB, *ENTRY})),
    Rule("catalog/ is below data/, training/ and inference/", frozenset({"catalog"}),
         frozenset({"data", "training", "inference", "examples"})),
    Rule("data/ is below training/ and inference/", frozenset({"data"}),
         frozenset({"training", "inference", "examples"})),
    Rule("training/ and inference/ are independent", frozenset({"training"}),
         frozenset({"inference"})),
    Rule("training/ and inference/ are independent", frozenset({"inference"}),
         frozenset({"training"})),
    Rule("store/ depends on the foundation only", frozenset({"store"}),
         frozenset(ALL_UNITS - FOUNDATION - {"store"})),
    Rule("auth/ holds rules on the store, nothing above", frozenset({"auth"}),
         frozenset(ALL_UNITS - FOUNDATION - {"store", "auth"})),
    Rule("jobs/ connects the engine to the store, nothing above", frozenset({"jobs"}),
         frozenset({"auth", "models", "export", *WEB, *ENTRY})),
    Rule("models/ (a tuned model's life) is below the protocols and the CLI",
         frozenset({"models"}), frozenset({"export", *WEB, *ENTRY})),
    Rule("only the web layer and the CLI entry points import the web layer",
         _all_but(*WEB, *ENTRY), frozenset(WEB)),
]


def _cli_module(imp: Import) -> bool:
    return imp.path.endswith("/cli.py") or imp.path in ("cli.py", "cli_service.py")


def entry_point_imports(imp: Import) -> bool:
    """Nothing imports the CLI entry points but the CLI itself (``cli.py`` modules)."""
    return imp.internal and imp.target in ENTRY and not _cli_module(imp)


def store_queries_in_web(imp: Import) -> bool:
    """The web layer translates HTTP to the services: it may read the store's row types to
    convert them, but not open the store or call its queries (``Store``, ``store.repo``,
    ``store.accounts``, ``store.permissions``). ``api/app.py`` builds the store and hands it to
    the services: that is wiring, not a query."""
    if imp.package not in WEB or not imp.module.startswith("tunelab.store"):
        return False
    if imp.path == "api/app.py":
        return False
    return imp.module != "tunelab.store" or any(not n.endswith("Row") for n in imp.names)


_CHECKPOINT_NAMES = {"list_checkpoints", "select_epoch", "read_manifest", "checkpoint_dir",
                     "adapter_damage"}


def checkpoints_in_web(imp: Import) -> bool:
    """The web layer does not work on a tuned model's files (checkpoints, the manifest, the
    served epoch): a service does."""
    return imp.package in WEB and imp.module.startswith("tunelab.training") and (
        imp.module == "tunelab.training.checkpoint"
        or bool(_CHECKPOINT_NAMES & set(imp.names)))


CHECKS = {
    "the CLI entry points are imported only by CLI modules": entry_point_imports,
    "the web layer does not query the store": store_queries_in_web,
    "the web layer does not work on checkpoints": checkpoints_in_web,
}

# Imports that break a rule while a change is under way, each naming the change that removes
# it: (path, imported module): the rule it breaks. Empty since the tuned-model service
# (models/service.py, issue 15 point 1) took the store queries and the checkpoint work out of
# the routes; keep it empty.
ALLOWED: dict[tuple[str, str], str] = {}


def violations() -> tuple[list[str], set[tuple[str, str]]]:
    """(every import that breaks a rule and is not allowed, the allow-list entries used)."""
    found, used = [], set()
    for imp in all_imports():
        broken = [r.name for r in RULES if r.broken_by(imp)]
        broken += [name for name, check in CHECKS.items() if check(imp)]
        for rule in broken:
            key = (imp.path, imp.module)
            if ALLOWED.get(key) == rule:
                used.add(key)
            else:
                found.append(f"{imp}  breaks: {rule}")
    return found, used


def test_the_layering_holds():
    found, _ = violations()
    assert not found, "imports across the layers (docs/architecture.md):\n" + "\n".join(found)


def test_the_allow_list_only_shrinks():
    _, used = violations()
    stale = sorted(set(ALLOWED) - used)
    assert not stale, f"these allowed imports are gone; remove them from ALLOWED: {stale}"


@pytest.mark.parametrize(("path", "source", "rule"), [
    ("training/x.py", "from tunelab.store import Store", "the engine knows"),
    ("training/x.py", "def f():\n    from tunelab.jobs import worker", "the engine knows"),
    ("auth/x.py", "from fastapi import Request", "speak HTTP-server"),
    ("jobs/x.py", "import sqlalchemy", "only store/ speaks SQL"),
    ("api/gemini/x.py", "from sqlalchemy import select", "only store/ speaks SQL"),
    ("api/gemini/x.py", "from tunelab.store import Store", "does not query the store"),
    ("api/gemini/x.py", "from ...store.repo import Page", "does not query the store"),
    ("studio/x.py", "from tunelab.training import select_epoch", "work on checkpoints"),
    ("store/x.py", "from tunelab.auth.errors import QuotaExceeded", "store/ depends on"),
    ("data/x.py", "from tunelab.cli_service import _client", "entry points"),
    ("models/x.py", "from tunelab.api.deps import Principal", "models/ (a tuned model's life)"),
    ("jobs/x.py", "from tunelab.models import TunedModels", "jobs/ connects the engine"),
    ("api/openai/x.py", "from tunelab.training.checkpoint import checkpoint_dir",
     "work on checkpoints"),
])
def test_a_crossing_import_is_caught(tmp_path, path, source, rule):
    """Each kind of rule catches the import it is about (on a module written for the test)."""
    fake = tmp_path / "tunelab"
    (fake / path).parent.mkdir(parents=True)
    (fake / path).write_text(source + "\n")
    imps = imports_of(fake / path, root=fake)
    broken = [r.name for r in RULES for i in imps if r.broken_by(i)]
    broken += [name for name, check in CHECKS.items() for i in imps if check(i)]
    assert any(rule in b for b in broken), (imps, broken)


# The services ``api/app.py`` hangs on ``app.state`` that the rest of the web layer may not
# call: a tuned model's life (create, read, its files, its adapter) is ``models/service.py``'s
# (``app.state.models``); ``app.state.tuning`` (``jobs/service.py``) is the layer beneath it.
BELOW_THE_MODELS_SERVICE = {"tuning": "a tuned model goes through app.state.models "
                                      "(models/service.py), not the jobs service beneath it"}


def state_uses(path: Path, root: Path = SRC) -> list[tuple[str, int, str]]:
    """(path, line, name) for every ``<anything>.state.<name>`` read in the module."""
    rel = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text(), str(path))
    return [(rel, node.lineno, node.attr) for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "state"]


def services_skipped(root: Path = SRC) -> list[str]:
    """Every web-layer module (but ``api/app.py``, which builds the services) that calls a
    service the tuned-model service stands in front of."""
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.split("/")[0] not in WEB or rel == "api/app.py":
            continue
        out += [f"src/tunelab/{p}:{line}: .state.{name}  breaks: {BELOW_THE_MODELS_SERVICE[name]}"
                for p, line, name in state_uses(path, root) if name in BELOW_THE_MODELS_SERVICE]
    return out


def test_the_web_layer_reaches_tuned_models_through_their_service():
    found = services_skipped()
    assert not found, "\n".join(found)


def test_a_route_calling_the_jobs_service_is_caught(tmp_path):
    fake = tmp_path / "tunelab"
    (fake / "api" / "gemini").mkdir(parents=True)
    (fake / "api" / "gemini" / "x.py").write_text(
        "def f(request):\n    return request.app.state.tuning.usable_adapter(None)\n")
    (fake / "api" / "app.py").write_text("def f(app):\n    app.state.tuning = None\n")
    (fake / "api" / "ok.py").write_text("def f(request):\n    return request.app.state.models\n")
    assert [f.split(":")[0] for f in services_skipped(fake)] == ["src/tunelab/api/gemini/x.py"]


def test_row_types_in_the_web_layer_are_fine():
    imps = [Import("api/gemini/convert.py", 1, "tunelab.store", ("TunedModelRow", "FileRow"))]
    assert not any(check(i) for i in imps for check in CHECKS.values())



def access_checks(path: Path, root: Path = SRC) -> list[tuple[str, int]]:
    """(path, line) of every call of a ``require`` method in the module: the accounts'
    access check for a tuned model (``Accounts.require``, ``Permissions.require``) is the
    only method of that name in tunelab."""
    rel = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text(), str(path))
    return [(rel, node.lineno) for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "require"]


def access_checked_in_web(root: Path = SRC) -> list[str]:
    """Every web-layer module that checks a caller's role on a tuned model itself instead of
    asking the tuned-model service (``app.state.models.get(id, user, role)``)."""
    out = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] in WEB:
            out += [f"src/tunelab/{p}:{line}: .require(...)  breaks: a route gets a tuned "
                    "model with the caller's role through app.state.models.get"
                    for p, line in access_checks(path, root)]
    return out


def test_the_web_layer_checks_access_to_tuned_models_through_their_service():
    found = access_checked_in_web()
    assert not found, "\n".join(found)


def test_a_route_checking_access_itself_is_caught(tmp_path):
    fake = tmp_path / "tunelab"
    (fake / "api").mkdir(parents=True)
    (fake / "models").mkdir()
    (fake / "api" / "export.py").write_text(
        "def f(request, p):\n    return request.app.state.accounts.require('m', p.owner, 'W')\n")
    (fake / "api" / "ok.py").write_text(
        "def f(request, p):\n    return request.app.state.models.get('m', p.owner, 'W')\n")
    (fake / "models" / "service.py").write_text(
        "def get(self, m, u, n):\n    return self.accounts.require(m, u, n)\n")
    assert [f.split(":")[0] for f in access_checked_in_web(fake)] == ["src/tunelab/api/export.py"]


def test_the_cli_and_the_api_start_without_importing_torch():
    """Importing torch costs a process 1.3-2 s (more on a busy machine); the CLI's commands that
    never touch a model (jobs, cancel, users, keys, --help) and the API process until it trains
    or serves must not pay it at start-up."""
    import subprocess
    import sys

    code = ("import sys, tunelab.cli, tunelab.api.app, tunelab.cli_service; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))[:3])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"torch imported at start-up: {out.stdout}"
