"""indexes for target contacts and the cascade triggers

Why: `targets list` counts each target's contacts by (operation, party), and nothing indexed
operation_target_contact that way: a sequential scan per listed party (1.0 s for 100,000
targets, and `--sort contacts` never finished). The statement-level cascade triggers of 0002
delete per-party rows by step_target.operation_id and by the party_id of the *_contact tables,
which no index led with either: deleting one party scanned every target contact.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 18:30:00
"""

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

INDEXES = {
    "ix_operation_target_contact_operation_party": ("operation_target_contact", ["operation_id", "party_id"]),
    "ix_operation_target_contact_party_id": ("operation_target_contact", ["party_id"]),
    "ix_step_target_contact_party_id": ("step_target_contact", ["party_id"]),
    "ix_step_target_operation_id": ("step_target", ["operation_id"]),
}


def upgrade() -> None:
    for name, (table, columns) in INDEXES.items():
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, (table, _) in INDEXES.items():
        op.drop_index(name, table_name=table)
