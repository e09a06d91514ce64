"""Initial tables: tuned models, operations, snapshots, files, jobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from tunelab.store.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tuned_models",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False, index=True),
        sa.Column("display_name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("base_model", sa.String(255), nullable=False),
        sa.Column("source_tuned_model", sa.String(255)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_message", sa.Text, nullable=False),
        sa.Column("cancelled", sa.Boolean, nullable=False),
        sa.Column("temperature", sa.Float),
        sa.Column("top_p", sa.Float),
        sa.Column("top_k", sa.Integer),
        sa.Column("epoch_count", sa.Integer, nullable=False),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.Column("learning_rate", sa.Float, nullable=False),
        sa.Column("learning_rate_multiplier", sa.Float),
        sa.Column("example_count", sa.Integer, nullable=False),
        sa.Column("total_steps", sa.Integer, nullable=False),
        sa.Column("dataset_file", sa.String(63)),
        sa.Column("create_time", UTCDateTime, nullable=False),
        sa.Column("update_time", UTCDateTime, nullable=False),
        sa.Column("start_time", UTCDateTime),
        sa.Column("complete_time", UTCDateTime),
    )
    op.create_table(
        "operations",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("tuned_model_id", sa.String(63), nullable=False, index=True),
        sa.Column("owner", sa.String(255), nullable=False, index=True),
        sa.Column("done", sa.Boolean, nullable=False),
        sa.Column("error_code", sa.Integer),
        sa.Column("error_message", sa.Text),
        sa.Column("create_time", UTCDateTime, nullable=False),
    )
    op.create_table(
        "snapshots",
        sa.Column("tuned_model_id", sa.String(63), primary_key=True),
        sa.Column("step", sa.Integer, primary_key=True),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("mean_loss", sa.Float, nullable=False),
        sa.Column("compute_time", UTCDateTime, nullable=False),
    )
    op.create_table(
        "files",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=False),
        sa.Column("mime_type", sa.String(255), nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("example_count", sa.Integer, nullable=False),
        sa.Column("info", sa.JSON, nullable=False),
        sa.Column("create_time", UTCDateTime, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tuned_model_id", sa.String(63), nullable=False, index=True),
        sa.Column("operation", sa.String(255), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("worker_id", sa.String(255)),
        sa.Column("lease_expires_at", UTCDateTime),
        sa.Column("heartbeat_at", UTCDateTime),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("completed_steps", sa.Integer, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("enqueue_time", UTCDateTime, nullable=False),
        sa.Column("finish_time", UTCDateTime),
    )


def downgrade() -> None:
    for table in ("jobs", "files", "snapshots", "operations", "tuned_models"):
        op.drop_table(table)
