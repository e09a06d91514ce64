"""``.tar.gz`` archives of exported folders (the REST download) and the bounded reading of
an uploaded one (the REST import).

Reading never extracts an archive as it is: only regular files with the expected names are
read, each up to a size limit, and reading stops once the members' sizes add up past the
total limit, so a crafted archive (links, ``../`` paths, a gzip bomb) cannot write outside
the target or fill the disk.
"""

from __future__ import annotations

import tarfile
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


def read_members(archive: Path, wanted: set[str], dest: Path, max_total: int) -> dict[str, Path]:
    """Write the archive's regular files whose base name is in ``wanted`` to ``dest``
    (flat); returns name → path. At most ``max_total`` bytes are read in all."""
    found: dict[str, Path] = {}
    total = 0
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                total += max(member.size, 0)
                if total > max_total:
                    raise InvalidArgument(
                        f"The archive holds more than {max_total // 2**20} MB; put only the "
                        "adapter files in it (adapter_config.json, adapter_model.safetensors).")
                name = member.name.rsplit("/", 1)[-1]
                if not member.isreg() or name not in wanted or name in found:
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                path = dest / name
                with open(path, "wb") as out:
                    while block := src.read(2**20):
                        out.write(block)
                found[name] = path
    except (tarfile.TarError, EOFError, OSError) as e:
        raise InvalidArgument(
            f"The upload is not a readable .tar.gz archive ({e}); archive the adapter folder "
            "with: tar czf adapter.tar.gz ADAPTER_DIR") from None
    return found


def unpack(archive: Path, dest: Path, max_total: int) -> Path:
    """Extract an export archive's regular files into ``dest``, dropping its top folder;
    names with ``..``, absolute paths, links and devices are skipped."""
    total = 0
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                total += max(member.size, 0)
                if total > max_total:
                    raise InvalidArgument(
                        f"The archive unpacks to more than {max_total // 2**30} GB.")
                parts = member.name.split("/")[1:]
                if (not member.isreg() or not parts or member.name.startswith("/")
                        or any(p in ("", ".", "..") for p in parts)):
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                path = dest.joinpath(*parts)
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "wb") as out:
                    while block := src.read(2**20):
                        out.write(block)
    except (tarfile.TarError, EOFError) as e:
        raise InvalidArgument(f"The download is not a readable .tar.gz archive ({e}).") from None
    return dest
