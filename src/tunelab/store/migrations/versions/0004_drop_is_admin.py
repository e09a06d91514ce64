"""Drop ``users.is_admin``: nothing ever checked it (every account's rights come from its
credentials' scopes and its roles on models), so a flag that looked like a privilege was
removed rather than left to mislead.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("is_admin")


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("is_admin", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
