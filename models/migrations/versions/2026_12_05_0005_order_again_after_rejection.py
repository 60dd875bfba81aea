"""order again after a rejection

Why: a rejected order is a decision on that order, not on the entity: the local entity may
order the package again (with other values, after talking to the reviewers) while the
registration is open. Only pending and approved orders are live now; rejected and cancelled
ones stay as history.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 09:00:00
"""

from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('uq_package_order_live', table_name='package_order', postgresql_where="status <> 'cancelled'")
    op.create_index('uq_package_order_live', 'package_order', ['package_id', 'entity_id'], unique=True,
                    postgresql_where="status in ('pending', 'approved')")


def downgrade() -> None:
    op.drop_index('uq_package_order_live', table_name='package_order',
                  postgresql_where="status in ('pending', 'approved')")
    op.create_index('uq_package_order_live', 'package_order', ['package_id', 'entity_id'], unique=True,
                    postgresql_where="status <> 'cancelled'")
