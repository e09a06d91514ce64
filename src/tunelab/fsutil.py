"""Crash-safe file writes shared by the model cache and the trainer's checkpoints, and what a
full or read-only disk means for them.

Every write here goes to a temporary name beside its target (``.NAME-…``) and is renamed into
place, so a crash or a full disk leaves the old content or the new, never half of it; what an
interrupted write left behind is removed by ``remove_leftovers`` once nobody writes there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from tunelab.errors import Unavailable

# errno values meaning "this storage takes no writes now": full or over quota, or read-only.
_FULL = {errno.ENOSPC, errno.EDQUOT}
_READ_ONLY = {errno.EROFS}
# SQLite's primary result codes for the same faults (sqlite3.Error.sqlite_errorcode & 0xff).
_SQLITE_FULL, _SQLITE_READONLY = 13, 8
_OS_ERROR = re.compile(r"\(os error (\d+)\)")

STORAGE_FULL = (
    "The server is out of storage space, so this could not be saved; nothing was changed. "
    "Try again later; if it persists, ask the server's operator to free space in tunelab's "
    "data directory."
)
STORAGE_READ_ONLY = (
    "The server's storage is read-only right now, so this could not be saved; nothing was "
    "changed. Try again later; if it persists, ask the server's operator to make tunelab's "
    "data directory writable."
)


class StorageUnavailable(Unavailable):
    """The storage is full (``kind`` "full") or read-only ("read-only"): retry later. The
    message names the fault and what to do, never the path that failed."""

    def __init__(self, kind: str):
        super().__init__(STORAGE_FULL if kind == "full" else STORAGE_READ_ONLY, retry_after=30)
        self.kind = kind


def storage_fault(exc: BaseException) -> StorageUnavailable | None:
    """The retryable error to report when ``exc`` (or an exception behind it: its cause,
    context, or a database driver's original error) is a full or read-only storage; else
    None (the failure is something else)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, StorageUnavailable):
            return e
        number = e.errno if isinstance(e, OSError) else _rust_errno(e)
        if number in _FULL | _READ_ONLY:
            return StorageUnavailable("full" if number in _FULL else "read-only")
        code = getattr(e, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in (_SQLITE_FULL, _SQLITE_READONLY):
            return StorageUnavailable("full" if code & 0xFF == _SQLITE_FULL else "read-only")
        orig = getattr(e, "orig", None)  # SQLAlchemy wraps the driver's exception
        todo += [e.__cause__, e.__context__, orig if isinstance(orig, BaseException) else None]
    return None


def _rust_errno(exc: BaseException) -> int | None:
    """The errno in an I/O error of a library written in Rust (safetensors writes the
    weights): not an OSError, only a message ending in "(os error 28)"."""
    found = _OS_ERROR.search(str(exc)) if not isinstance(exc, OSError) else None
    return int(found.group(1)) if found else None


def _fsync_files(path: Path) -> None:
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (a rename lives in the folder's entries)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_dir(final: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_dir)`` and move the result to ``final`` in one rename.

    A crash leaves either the old folder or the new one, never half of one; a write that
    fails (a full disk) leaves the old one and removes its temporary folder.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        write(tmp)
        _fsync_files(tmp)
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}-old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, text.encode())


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old content or the new, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_leftovers(folder: Path, names: Iterable[str]) -> int:
    """Remove the temporary files and folders (``.NAME-…``) that ``atomic_dir`` and
    ``atomic_write`` calls for ``names`` left in ``folder`` when their process died mid-write.
    Only for a folder nobody is writing to now (the caller holds the job's lease). Returns
    the bytes freed."""
    if not folder.is_dir():
        return 0
    prefixes = tuple(f".{name}-" for name in names)
    freed = 0
    for entry in folder.iterdir():
        if not entry.name.startswith(prefixes):
            continue
        if entry.is_dir() and not entry.is_symlink():
            freed += sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
            shutil.rmtree(entry, ignore_errors=True)
        else:
            freed += entry.lstat().st_size
            entry.unlink(missing_ok=True)
    return freed


def private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) if missing; a folder created here is readable only
    by its owner (0700): it holds the database with password hashes and users' data."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes on this machine (e.g. the API and its worker
    converting the same base model on first use: one converts, the other waits and reuses)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
