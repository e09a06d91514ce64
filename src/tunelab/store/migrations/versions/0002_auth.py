"""Accounts and credentials: users, API keys, OAuth clients and tokens, permissions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from tunelab.store.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("email", sa.String(255), unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("password_hash", sa.String(255)),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("max_concurrent_jobs", sa.Integer),
        sa.Column("max_tuned_models", sa.Integer),
        sa.Column("create_time", UTCDateTime, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user", sa.String(255), nullable=False, index=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("hint", sa.String(16), nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.Column("create_time", UTCDateTime, nullable=False),
        sa.Column("last_used", UTCDateTime),
    )
    op.create_table(
        "oauth_clients",
        sa.Column("client_id", sa.String(255), primary_key=True),
        sa.Column("user", sa.String(255), nullable=False, index=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.Column("create_time", UTCDateTime, nullable=False),
    )
    op.create_table(
        "oauth_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("user", sa.String(255), nullable=False, index=True),
        sa.Column("client_id", sa.String(255), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("parent", sa.String(64), index=True),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.Column("expires_at", UTCDateTime),
        sa.Column("create_time", UTCDateTime, nullable=False),
    )
    op.create_table(
        "permissions",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("tuned_model_id", sa.String(63), nullable=False, index=True),
        sa.Column("grantee_type", sa.String(16), nullable=False),
        sa.Column("grantee", sa.String(255), index=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("create_time", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    for table in ("permissions", "oauth_tokens", "oauth_clients", "api_keys", "users"):
        op.drop_table(table)
