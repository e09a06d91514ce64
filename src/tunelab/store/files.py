"""Queries on uploaded files (``kind='upload'``; a create request's own dataset is kept with
its tuned model), counted against the owner's ``max_files``."""

from __future__ import annotations

from sqlalchemy import delete, func, select

from tunelab.errors import NotFound, QuotaExceeded
from tunelab.paging import Page, decode_token, encode_token
from tunelab.store.base import StoreBase
from tunelab.store.tables import FileRow


class FileQueries(StoreBase):
    """Uploads: add, get, list, delete."""

    def add_file(self, row: FileRow) -> None:
        """Keep an upload's record, while its owner is under ``max_files`` (checked under the
        owner's lock, as jobs are)."""
        with self.session() as s:
            if row.kind == "upload" and self.quota.max_files > 0:
                self.lock_owner(s, row.owner)
                n = s.scalar(select(func.count()).select_from(FileRow)
                             .where(FileRow.owner == row.owner, FileRow.kind == "upload"))
                if n >= self.quota.max_files:
                    raise QuotaExceeded(
                        "max_files",
                        f"Quota exceeded for max_files: user '{row.owner}' stores {n} uploaded "
                        f"files and the limit is {self.quota.max_files}. Delete files you no "
                        "longer need (DELETE /v1beta/files/ID, or the Studio), or ask the "
                        "administrator to raise the limit (TUNELAB_MAX_FILES).")
            s.add(row)

    def get_file(self, file_id: str, owner: str | None) -> FileRow:
        with self.session() as s:
            row = s.get(FileRow, file_id)
            if row is None or row.kind != "upload" or (owner is not None and row.owner != owner):
                raise NotFound(f"File 'files/{file_id}' was not found.")
            return row

    def list_files(self, owner: str | None, page_size: int, page_token: str | None) -> Page:
        offset = decode_token(page_token)
        with self.session() as s:
            q = select(FileRow).where(FileRow.kind == "upload")
            if owner is not None:
                q = q.where(FileRow.owner == owner)
            q = q.order_by(FileRow.create_time.desc()).offset(offset).limit(page_size + 1)
            rows = list(s.scalars(q))
        more = len(rows) > page_size
        return Page(rows[:page_size], encode_token(offset + page_size) if more else None)

    def delete_file(self, file_id: str, owner: str | None) -> FileRow:
        row = self.get_file(file_id, owner)
        with self.session() as s:
            s.execute(delete(FileRow).where(FileRow.id == file_id))
        return row
