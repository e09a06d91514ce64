"""Queries on tuned models (created with their operation and queued job, under the owner's
limits), their training snapshots, the dataset a create request sent, and their operations."""

from __future__ import annotations

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError

from tunelab.errors import AlreadyExists, NotFound
from tunelab.paging import Page, decode_token, encode_token
from tunelab.store.base import StoreBase
from tunelab.store.quotas import check_create_quota
from tunelab.store.tables import FileRow, JobRow, OperationRow, SnapshotRow, TunedModelRow, utcnow


class TunedModelQueries(StoreBase):
    """Tuned models: create, read, list, update and delete; their snapshots and operations."""

    def create_tuned_model(
        self, model: TunedModelRow, op: OperationRow, job: JobRow, dataset: FileRow | None
    ) -> None:
        """The model, its operation and its queued job appear together or not at all, and only
        while the owner is under their limits (checked under the owner's lock: 16 concurrent
        creates against a limit of 4 queue exactly 4)."""
        self.quota.check_description(model.description)
        try:
            with self.session() as s:
                self.lock_owner(s, model.owner)
                check_create_quota(s, self.quota, model.owner, job.state != "done")
                if s.get(TunedModelRow, model.id) is not None:
                    raise AlreadyExists(
                        f"Tuned model 'tunedModels/{model.id}' already exists; "
                        "choose another tunedModelId or delete the existing model."
                    )
                if dataset is not None:
                    s.add(dataset)
                s.add_all([model, op, job])
        except IntegrityError as e:
            raise AlreadyExists(
                f"Tuned model 'tunedModels/{model.id}' already exists; choose another id."
            ) from e

    def add_tuned_model(self, model: TunedModelRow, op: OperationRow) -> bool:
        """Add a model that needs no job (an imported adapter) with its operation; False when
        the id is taken. The row claims the id atomically, before any file is written."""
        try:
            with self.session() as s:
                if s.get(TunedModelRow, model.id) is not None:
                    return False
                s.add_all([model, op])
        except IntegrityError:
            return False
        return True

    def find_tuned_model(self, model_id: str) -> TunedModelRow | None:
        with self.session() as s:
            return s.get(TunedModelRow, model_id)

    def get_tuned_model(self, model_id: str, owner: str | None) -> TunedModelRow:
        with self.session() as s:
            row = s.get(TunedModelRow, model_id)
            if row is None or (owner is not None and row.owner != owner):
                raise NotFound(f"Tuned model 'tunedModels/{model_id}' was not found.")
            return row

    def list_tuned_models(
        self, owner: str | None, page_size: int, page_token: str | None, text: str | None
    ) -> Page:
        offset = decode_token(page_token)
        with self.session() as s:
            q = select(TunedModelRow)
            if owner is not None:
                q = q.where(TunedModelRow.owner == owner)
            if text:
                like = f"%{text.lower()}%"
                q = q.where(
                    or_(
                        func.lower(TunedModelRow.display_name).like(like),
                        func.lower(TunedModelRow.description).like(like),
                    )
                )
            q = q.order_by(TunedModelRow.create_time.desc(), TunedModelRow.id)
            rows = list(s.scalars(q.offset(offset).limit(page_size + 1)))
        more = len(rows) > page_size
        return Page(rows[:page_size], encode_token(offset + page_size) if more else None)

    def update_tuned_model(self, model_id: str, owner: str | None, fields: dict) -> TunedModelRow:
        if "description" in fields:
            self.quota.check_description(fields["description"])
        with self.session() as s:
            row = s.get(TunedModelRow, model_id)
            if row is None or (owner is not None and row.owner != owner):
                raise NotFound(f"Tuned model 'tunedModels/{model_id}' was not found.")
            for k, v in fields.items():
                setattr(row, k, v)
            row.update_time = utcnow()
            return row

    def delete_tuned_model(self, model_id: str, owner: str | None) -> bool:
        """Delete a model, its operations and snapshots. A running job is asked to stop (its
        worker removes the artifacts); returns True when the caller may remove them now."""
        with self.session() as s:
            row = s.get(TunedModelRow, model_id)
            if row is None or (owner is not None and row.owner != owner):
                raise NotFound(f"Tuned model 'tunedModels/{model_id}' was not found.")
            running = False
            for job in s.scalars(select(JobRow).where(JobRow.tuned_model_id == model_id)):
                if job.state == "running":
                    job.cancel_requested = True
                    running = True
                elif job.state == "queued":
                    job.state = "done"
                    job.error = "deleted"
                    job.finish_time = utcnow()
            s.execute(delete(SnapshotRow).where(SnapshotRow.tuned_model_id == model_id))
            s.execute(delete(OperationRow).where(OperationRow.tuned_model_id == model_id))
            if row.dataset_file:
                ds = s.get(FileRow, row.dataset_file)
                if ds is not None and ds.kind == "dataset":
                    s.delete(ds)
            s.delete(row)
            return not running

    def dataset_path(self, file_id: str) -> str | None:
        with self.session() as s:
            row = s.get(FileRow, file_id)
            return row.path if row is not None else None

    def snapshots(self, model_id: str) -> list[SnapshotRow]:
        with self.session() as s:
            q = select(SnapshotRow).where(SnapshotRow.tuned_model_id == model_id)
            return list(s.scalars(q.order_by(SnapshotRow.step)))

    # -- operations: a create request's long-running operation ---------------------------
    def get_operation(self, name: str, owner: str | None) -> OperationRow:
        with self.session() as s:
            row = s.get(OperationRow, name)
            if row is None or (owner is not None and row.owner != owner):
                raise NotFound(f"Operation '{name}' was not found.")
            return row

    def list_operations(
        self, model_id: str, owner: str | None, page_size: int, page_token: str | None
    ) -> Page:
        offset = decode_token(page_token)
        self.get_tuned_model(model_id, owner)
        with self.session() as s:
            q = (
                select(OperationRow)
                .where(OperationRow.tuned_model_id == model_id)
                .order_by(OperationRow.create_time.desc())
            )
            rows = list(s.scalars(q.offset(offset).limit(page_size + 1)))
        more = len(rows) > page_size
        return Page(rows[:page_size], encode_token(offset + page_size) if more else None)
