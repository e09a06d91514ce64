"""Queries on shares of tuned models (the ``permissions`` table) and on what a user may see.

``auth/permissions.py`` holds the rules (which roles exist, who may grant what) and words
every error; this module reads and writes the rows, each method one transaction.
"""

from __future__ import annotations

from sqlalchemy import func, or_, select, update

from tunelab.store.repo import Store
from tunelab.store.tables import FileRow, JobRow, OperationRow, PermissionRow, TunedModelRow


class PermissionRecords:
    """The shares of one ``Store``'s tuned models."""

    def __init__(self, store: Store):
        self.store = store

    def roles_on(self, model_id: str, user: str) -> list[str]:
        """The roles shared with ``user`` on a model: directly, or with everyone."""
        with self.store.session() as s:
            return list(s.scalars(select(PermissionRow.role).where(
                PermissionRow.tuned_model_id == model_id,
                or_(PermissionRow.grantee == user, PermissionRow.grantee_type == "EVERYONE"))))

    def visible_models(self, user: str, mode: str, text: str | None, offset: int,
                       limit: int, writer_roles: tuple[str, ...]) -> list[TunedModelRow]:
        """Tuned models newest first. ``mode``: ``owner`` (owned by ``user``), ``everyone``
        (shared with everyone), ``writers`` (owned, or shared with ``user`` in one of
        ``writer_roles``), else owned or shared with ``user`` in any role. ``text``: a
        case-insensitive substring of the display name or description."""
        direct = select(PermissionRow.tuned_model_id).where(PermissionRow.grantee == user)
        if mode == "writers":
            direct = direct.where(PermissionRow.role.in_(writer_roles))
        public = select(PermissionRow.tuned_model_id).where(
            PermissionRow.grantee_type == "EVERYONE")
        q = select(TunedModelRow)
        if mode == "owner":
            q = q.where(TunedModelRow.owner == user)
        elif mode == "everyone":
            q = q.where(TunedModelRow.id.in_(public))
        else:
            q = q.where(or_(TunedModelRow.owner == user, TunedModelRow.id.in_(direct)))
        if text:
            like = f"%{text.lower()}%"
            q = q.where(or_(func.lower(TunedModelRow.display_name).like(like),
                            func.lower(TunedModelRow.description).like(like)))
        q = q.order_by(TunedModelRow.create_time.desc(), TunedModelRow.id)
        with self.store.session() as s:
            return list(s.scalars(q.offset(offset).limit(limit)))

    def list_permissions(self, model_id: str) -> list[PermissionRow]:
        with self.store.session() as s:
            return list(s.scalars(select(PermissionRow).where(
                PermissionRow.tuned_model_id == model_id).order_by(PermissionRow.create_time)))

    def get_permission(self, perm_id: str) -> PermissionRow | None:
        with self.store.session() as s:
            return s.get(PermissionRow, perm_id)

    def add_permission(self, row: PermissionRow) -> PermissionRow | None:
        """Add a share unless the grantee already has one on the model; returns that one."""
        with self.store.session() as s:
            same_grantee = (PermissionRow.grantee == row.grantee if row.grantee
                            else PermissionRow.grantee.is_(None))
            dup = s.scalar(select(PermissionRow).where(
                PermissionRow.tuned_model_id == row.tuned_model_id,
                PermissionRow.grantee_type == row.grantee_type, same_grantee))
            if dup is not None:
                return dup
            s.add(row)
        return None

    def set_role(self, perm_id: str, role: str) -> None:
        with self.store.session() as s:
            s.execute(update(PermissionRow).where(PermissionRow.id == perm_id)
                      .values(role=role))

    def delete_permission(self, perm_id: str) -> None:
        with self.store.session() as s:
            row = s.get(PermissionRow, perm_id)
            if row is not None:
                s.delete(row)

    def delete_permissions_of(self, model_id: str) -> None:
        """A deleted model's shares go with it."""
        with self.store.session() as s:
            for row in s.scalars(select(PermissionRow).where(
                    PermissionRow.tuned_model_id == model_id)):
                s.delete(row)

    def transfer_ownership(self, model_id: str, new_owner: str, old_owner_share: PermissionRow
                           ) -> None:
        """In one transaction: ``new_owner`` owns the model, its operations, jobs and dataset;
        the two owners' old shares on it go, and ``old_owner_share`` (the previous owner's
        new share) is added."""
        with self.store.session() as s:
            model = s.get(TunedModelRow, model_id)
            if model is None:
                return
            model.owner = new_owner
            s.execute(update(OperationRow).where(OperationRow.tuned_model_id == model_id)
                      .values(owner=new_owner))
            s.execute(update(JobRow).where(JobRow.tuned_model_id == model_id)
                      .values(owner=new_owner))
            if model.dataset_file:
                s.execute(update(FileRow).where(FileRow.id == model.dataset_file)
                          .values(owner=new_owner))
            for p in s.scalars(select(PermissionRow).where(
                    PermissionRow.tuned_model_id == model_id,
                    PermissionRow.grantee.in_([new_owner, old_owner_share.grantee]))):
                s.delete(p)
            s.flush()
            s.add(old_owner_share)
