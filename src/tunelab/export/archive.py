"""``.tar.gz`` archives of exported folders (the REST download) and the bounded reading of
an uploaded one (the REST import).

Reading never extracts an archive as it is: only regular files with the expected names are
read, each up to a size limit, and reading stops once the members' sizes add up past the
total limit, so a crafted archive (links, ``../`` paths, a gzip bomb) cannot write outside
the target or fill the disk.
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

from tunelab.errors import InvalidArgument


def pack(folder: Path, archive: Path) -> Path:
    """``folder``'s files under one top folder named like ``archive`` (``x.tar.gz`` → ``x/``)."""
    top = archive.name.removesuffix(".tar.gz")
    with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
        for f in sorted(Path(folder).rglob("*")):
            if f.is_file():
                tar.add(f, arcname=f"{top}/{f.relative_to(folder).as_posix()}", recursive=False)
    return archive


def _extract(archive: Path, max_total: int, place: Callable[[str], Path | None],
             too_big: str, unreadable: str) -> None:
    """Stream the archive's regular files to where ``place`` puts them (given the member's
    name; ``None`` skips it), stopping with ``too_big`` once the members' sizes add past
    ``max_total`` (counted over every member, kept or not: a member's size is read before its
    content, and ``tarfile`` reads at most that many bytes of it). An archive that cannot be
    read is ``unreadable`` (``{e}`` is what was wrong); a failing write (a full disk) is not
    the archive's fault and is raised as it is."""
    total = 0
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                total += max(member.size, 0)
                if total > max_total:
                    raise InvalidArgument(too_big)
                path = place(member.name) if member.isreg() else None
                src = tar.extractfile(member) if path is not None else None
                if src is None:
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "wb") as out:
                    while block := src.read(2**20):
                        out.write(block)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise InvalidArgument(unreadable.format(e=e)) from None


def read_members(archive: Path, wanted: set[str], dest: Path, max_total: int) -> dict[str, Path]:
    """Write the archive's regular files whose base name is in ``wanted`` to ``dest``
    (flat; the first of a name wins); returns name → path. At most ``max_total`` bytes are
    read in all."""
    found: dict[str, Path] = {}

    def place(member: str) -> Path | None:
        name = member.rsplit("/", 1)[-1]
        if name not in wanted or name in found:
            return None
        found[name] = dest / name
        return found[name]

    dest.mkdir(parents=True, exist_ok=True)
    _extract(archive, max_total, place,
             too_big=f"The archive holds more than {max_total // 2**20} MB; put only the "
                     "adapter files in it (adapter_config.json, adapter_model.safetensors).",
             unreadable="The upload is not a readable .tar.gz archive ({e}); archive the "
                        "adapter folder with: tar czf adapter.tar.gz ADAPTER_DIR")
    return found


def unpack(archive: Path, dest: Path, max_total: int) -> Path:
    """Extract an export archive's regular files into ``dest``, dropping its top folder;
    names with ``..``, absolute paths, links and devices are skipped."""

    def place(member: str) -> Path | None:
        parts = member.split("/")[1:]
        if not parts or member.startswith("/") or any(p in ("", ".", "..") for p in parts):
            return None
        return dest.joinpath(*parts)

    dest.mkdir(parents=True, exist_ok=True)
    _extract(archive, max_total, place,
             too_big=f"The archive unpacks to more than {max_total // 2**30} GB.",
             unreadable="The download is not a readable .tar.gz archive ({e}).")
    return dest
