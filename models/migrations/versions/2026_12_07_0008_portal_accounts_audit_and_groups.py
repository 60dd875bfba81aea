"""portal accounts, the audit trail and the operations' confidentiality groups

Why: local entities and reviewers work in the portal with real accounts (argon2 hashes, a
lockout after wrong passwords, one-time links); every login, logout, decision and refusal is
kept; an operation names the collaborator groups that may see it (else its family's).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 23:30:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

NOW = sa.text("now()")


def upgrade() -> None:
    op.add_column("operation", sa.Column("groups", ARRAY(sa.Text()), server_default="{}", nullable=False))
    op.create_table(
        "account",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("login", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("disabled", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("entity_id", sa.Integer(), sa.ForeignKey("entity.id", name="fk_account_entity_id_entity"),
                  nullable=True),
        sa.Column("collaborator_id", sa.Integer(),
                  sa.ForeignKey("collaborator.id", name="fk_account_collaborator_id_collaborator"), nullable=True),
        sa.Column("roles", ARRAY(sa.Text()), nullable=False),
        sa.Column("generation", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failed_logins", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", TIMESTAMP(timezone=True), nullable=True),
        sa.Column("last_login_at", TIMESTAMP(timezone=True), nullable=True),
        sa.Column("created_at", TIMESTAMP(timezone=True), server_default=NOW, nullable=False),
        sa.Column("updated_at", TIMESTAMP(timezone=True), server_default=NOW, nullable=False),
        sa.CheckConstraint("cardinality(roles) > 0", name="ck_account_roles"),
        sa.CheckConstraint("login ~ '^[a-z0-9][a-z0-9._-]{0,63}$'", name="ck_account_login"),
        sa.PrimaryKeyConstraint("id", name="pk_account"),
        sa.UniqueConstraint("login", name="uq_account_login"),
    )
    op.create_index("uq_account_email", "account", ["email"], unique=True)
    op.create_index("ix_account_entity_id", "account", ["entity_id"])
    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", TIMESTAMP(timezone=True), server_default=NOW, nullable=False),
        sa.Column("login", sa.Text(), nullable=True),
        sa.Column("entity_id", sa.Integer(),
                  sa.ForeignKey("entity.id", name="fk_audit_event_entity_id_entity", ondelete="SET NULL"),
                  nullable=True),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), server_default="ok", nullable=False),
        sa.Column("detail", JSONB(), nullable=True),
        sa.Column("source", sa.Text(), server_default="portal", nullable=False),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("operation_id", sa.Integer(),
                  sa.ForeignKey("operation.id", name="fk_audit_event_operation_id_operation", ondelete="SET NULL"),
                  nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_event"),
    )
    op.create_index("ix_audit_event_login", "audit_event", ["login"])
    op.create_index("ix_audit_event_entity_id", "audit_event", ["entity_id"])
    op.create_index("ix_audit_event_operation_id", "audit_event", ["operation_id"])


def downgrade() -> None:
    op.drop_table("audit_event")
    op.drop_table("account")
    op.drop_column("operation", "groups")
