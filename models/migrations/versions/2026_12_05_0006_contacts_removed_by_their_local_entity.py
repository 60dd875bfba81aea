"""contacts removed by their local entity

Why: a local entity approving its list removes people, not only companies: it may keep a
party while taking one of its contacts off (the buyer who left, the director who asked not to
be mailed). Rows name the removed contacts; the kept parties' other contacts go on.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 10:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('local_approval_contact',
    sa.Column('step_id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=False),
    sa.Column('party_id', sa.Integer(), nullable=False),
    sa.Column('removed_by', sa.Text(), nullable=False),
    sa.Column('removed_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contact.id'], name=op.f('fk_local_approval_contact_contact_id_contact'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['step_id', 'party_id'], ['local_approval_party.step_id', 'local_approval_party.party_id'], name=op.f('fk_local_approval_contact_step_id_local_approval_party'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('step_id', 'contact_id', name=op.f('pk_local_approval_contact'))
    )


def downgrade() -> None:
    op.drop_table('local_approval_contact')
