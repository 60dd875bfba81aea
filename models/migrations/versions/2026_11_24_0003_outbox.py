"""outbox

Why: the e-mail step kinds must never send a message twice, even when a run crashes or is
retried in the middle of a send. Each message gets a row claimed (`sending`) in its own
committed transaction before it goes on the wire and settled (`sent` / `failed`) right
after, so a later run knows what went out, what did not, and what a crash left unknown.
No row-level foreign keys (rows are written in batches of hundreds); statement-level
triggers delete the messages of deleted parties, contacts, steps and operations.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 10:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# parent table -> the outbox column that refers to it
CASCADES = {"party": "party_id", "contact": "contact_id", "operation": "operation_id", "step": "step_id"}


def upgrade() -> None:
    op.create_table(
        'outbox',
        sa.Column('id', sa.BigInteger(), nullable=False),
        sa.Column('operation_id', sa.Integer(), nullable=False),
        sa.Column('step_id', sa.Integer(), nullable=False),
        sa.Column('party_id', sa.Integer(), nullable=False),
        sa.Column('contact_id', sa.Integer(), nullable=True),
        sa.Column('recipient', sa.Text(), nullable=True),
        sa.Column('state', sa.Text(), server_default='pending', nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('message_id', sa.Text(), nullable=True),
        sa.Column('message_path', sa.Text(), nullable=True),
        sa.Column('channel', sa.Text(), nullable=True),
        sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
        sa.Column('created_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('claimed_at', sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column('sent_at', sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column('updated_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint("state in ('pending', 'sending', 'sent', 'failed')", name=op.f('ck_outbox_state')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    )
    op.create_index('uq_outbox_step_party_contact', 'outbox', ['step_id', 'party_id', 'contact_id'],
                    unique=True, postgresql_nulls_not_distinct=True)
    op.create_index('ix_outbox_step_state', 'outbox', ['step_id', 'state'], unique=False)
    for parent, column in CASCADES.items():
        op.execute(f"""
            create function cascade_{parent}_delete_outbox() returns trigger language plpgsql as $$
            begin
                delete from outbox where {column} in (select id from deleted);
                return null;
            end $$""")
        op.execute(f"""
            create trigger cascade_{parent}_delete_outbox after delete on {parent}
            referencing old table as deleted for each statement
            execute function cascade_{parent}_delete_outbox()""")
        # TRUNCATE fires no delete trigger (DELETE: the TRUNCATE may list the outbox too)
        op.execute(f"""
            create function cascade_{parent}_truncate_outbox() returns trigger language plpgsql as $$
            begin
                delete from outbox{" where contact_id is not null" if parent == "contact" else ""};
                return null;
            end $$""")
        op.execute(f"create trigger cascade_{parent}_truncate_outbox after truncate on {parent} "
                   f"for each statement execute function cascade_{parent}_truncate_outbox()")


def downgrade() -> None:
    for parent in CASCADES:
        op.execute(f"drop trigger cascade_{parent}_truncate_outbox on {parent}")
        op.execute(f"drop function cascade_{parent}_truncate_outbox()")
        op.execute(f"drop trigger cascade_{parent}_delete_outbox on {parent}")
        op.execute(f"drop function cascade_{parent}_delete_outbox()")
    op.drop_index('ix_outbox_step_state', table_name='outbox')
    op.drop_index('uq_outbox_step_party_contact', table_name='outbox')
    op.drop_table('outbox')
