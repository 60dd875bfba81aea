"""distributed marketing

Why: a head office offers campaigns (packages) to its stores, agencies or franchises, which
order them, personalise them, run their own copies or approve their part of a target. This
adds the network (entity), packages and their audience, orders with their history, the
distributions that split a target between local entities, the local approvals of a
`local_approval` step, and on operations the owning entity and the parent of a child copy.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 08:29:18.512559
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('distribution',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.Text(), nullable=False),
    sa.Column('label', sa.Text(), nullable=False),
    sa.Column('field', sa.Text(), nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_distribution')),
    sa.UniqueConstraint('code', name=op.f('uq_distribution_code'))
    )
    op.create_table('entity',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.Text(), nullable=False),
    sa.Column('label', sa.Text(), nullable=False),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('operators', postgresql.ARRAY(sa.Text()), server_default='{}', nullable=False),
    sa.Column('reviewers', postgresql.ARRAY(sa.Text()), server_default='{}', nullable=False),
    sa.Column('emails', postgresql.ARRAY(sa.Text()), server_default='{}', nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("type in ('central', 'local')", name=op.f('ck_entity_type')),
    sa.ForeignKeyConstraint(['parent_id'], ['entity.id'], name=op.f('fk_entity_parent_id_entity')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_entity')),
    sa.UniqueConstraint('code', name=op.f('uq_entity_code'))
    )
    op.create_index(op.f('ix_entity_parent_id'), 'entity', ['parent_id'], unique=False)
    op.create_table('distribution_rule',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('distribution_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('entity_id', sa.Integer(), nullable=False),
    sa.Column('limit_count', sa.Integer(), nullable=True),
    sa.Column('limit_percent', sa.Float(), nullable=True),
    sa.CheckConstraint('limit_count is null or limit_percent is null', name=op.f('ck_distribution_rule_one_limit')),
    sa.CheckConstraint('limit_percent is null or (limit_percent > 0 and limit_percent <= 100)', name=op.f('ck_distribution_rule_percent')),
    sa.ForeignKeyConstraint(['distribution_id'], ['distribution.id'], name=op.f('fk_distribution_rule_distribution_id_distribution'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['entity_id'], ['entity.id'], name=op.f('fk_distribution_rule_entity_id_entity')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_distribution_rule')),
    sa.UniqueConstraint('distribution_id', 'value', name=op.f('uq_distribution_rule_distribution_id_value'))
    )
    op.create_index(op.f('ix_distribution_rule_entity_id'), 'distribution_rule', ['entity_id'], unique=False)
    op.create_table('package',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.Text(), nullable=False),
    sa.Column('label', sa.Text(), nullable=False),
    sa.Column('operation_id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('collaboration', sa.Text(), nullable=False),
    sa.Column('approval', sa.Text(), server_default='manual', nullable=False),
    sa.Column('timezone', sa.Text(), server_default='UTC', nullable=False),
    sa.Column('visible_from', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('visible_until', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('registration_deadline', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('personalization_deadline', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('distribution_id', sa.Integer(), nullable=True),
    sa.Column('form', postgresql.JSONB(astext_type=sa.Text()), server_default='[]', nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('documents', postgresql.ARRAY(sa.Text()), server_default='{}', nullable=False),
    sa.Column('published_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("approval in ('manual', 'automatic')", name=op.f('ck_package_approval')),
    sa.CheckConstraint("collaboration in ('simple', 'by_form', 'by_campaign', 'by_target_approval')", name=op.f('ck_package_collaboration')),
    sa.ForeignKeyConstraint(['distribution_id'], ['distribution.id'], name=op.f('fk_package_distribution_id_distribution')),
    sa.ForeignKeyConstraint(['operation_id'], ['operation.id'], name=op.f('fk_package_operation_id_operation'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['owner_id'], ['entity.id'], name=op.f('fk_package_owner_id_entity')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_package')),
    sa.UniqueConstraint('code', name=op.f('uq_package_code'))
    )
    op.create_index(op.f('ix_package_operation_id'), 'package', ['operation_id'], unique=False)
    op.create_table('local_approval',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('step_id', sa.Integer(), nullable=False),
    sa.Column('entity_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.Text(), server_default='pending', nullable=False),
    sa.Column('deadline', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('sent_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('reminders_sent', sa.Integer(), server_default='0', nullable=False),
    sa.Column('approved_by', sa.Text(), nullable=True),
    sa.Column('approved_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.CheckConstraint("status in ('pending', 'approved', 'expired')", name=op.f('ck_local_approval_status')),
    sa.ForeignKeyConstraint(['entity_id'], ['entity.id'], name=op.f('fk_local_approval_entity_id_entity')),
    sa.ForeignKeyConstraint(['step_id'], ['step.id'], name=op.f('fk_local_approval_step_id_step'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_local_approval')),
    sa.UniqueConstraint('step_id', 'entity_id', name=op.f('uq_local_approval_step_id_entity_id'))
    )
    op.create_index(op.f('ix_local_approval_step_id'), 'local_approval', ['step_id'], unique=False)
    op.create_table('local_approval_party',
    sa.Column('step_id', sa.Integer(), nullable=False),
    sa.Column('party_id', sa.Integer(), nullable=False),
    sa.Column('entity_id', sa.Integer(), nullable=False),
    sa.Column('removed', sa.Boolean(), server_default='false', nullable=False),
    sa.Column('removed_by', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['entity_id'], ['entity.id'], name=op.f('fk_local_approval_party_entity_id_entity')),
    sa.ForeignKeyConstraint(['party_id'], ['party.id'], name=op.f('fk_local_approval_party_party_id_party'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['step_id'], ['step.id'], name=op.f('fk_local_approval_party_step_id_step'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('step_id', 'party_id', name=op.f('pk_local_approval_party'))
    )
    op.create_index(op.f('ix_local_approval_party_entity_id'), 'local_approval_party', ['entity_id'], unique=False)
    op.create_table('package_audience',
    sa.Column('package_id', sa.Integer(), nullable=False),
    sa.Column('entity_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['entity_id'], ['entity.id'], name=op.f('fk_package_audience_entity_id_entity')),
    sa.ForeignKeyConstraint(['package_id'], ['package.id'], name=op.f('fk_package_audience_package_id_package'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('package_id', 'entity_id', name=op.f('pk_package_audience'))
    )
    op.create_table('package_order',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('package_id', sa.Integer(), nullable=False),
    sa.Column('entity_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.Text(), server_default='pending', nullable=False),
    sa.Column('values', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('child_operation_id', sa.Integer(), nullable=True),
    sa.Column('created_by', sa.Text(), nullable=False),
    sa.Column('decided_by', sa.Text(), nullable=True),
    sa.Column('decided_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status in ('pending', 'approved', 'rejected', 'cancelled')", name=op.f('ck_package_order_status')),
    sa.ForeignKeyConstraint(['child_operation_id'], ['operation.id'], name=op.f('fk_package_order_child_operation_id_operation'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['entity_id'], ['entity.id'], name=op.f('fk_package_order_entity_id_entity')),
    sa.ForeignKeyConstraint(['package_id'], ['package.id'], name=op.f('fk_package_order_package_id_package'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_package_order'))
    )
    op.create_index(op.f('ix_package_order_entity_id'), 'package_order', ['entity_id'], unique=False)
    op.create_index(op.f('ix_package_order_package_id'), 'package_order', ['package_id'], unique=False)
    op.create_index('uq_package_order_live', 'package_order', ['package_id', 'entity_id'], unique=True, postgresql_where="status <> 'cancelled'")
    op.create_table('order_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('action', sa.Text(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('values', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.ForeignKeyConstraint(['order_id'], ['package_order.id'], name=op.f('fk_order_event_order_id_package_order'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_order_event'))
    )
    op.create_index(op.f('ix_order_event_order_id'), 'order_event', ['order_id'], unique=False)
    op.add_column('operation', sa.Column('owner_entity_id', sa.Integer(), nullable=True))
    op.add_column('operation', sa.Column('parent_operation_id', sa.Integer(), nullable=True))
    op.create_index(op.f('ix_operation_owner_entity_id'), 'operation', ['owner_entity_id'], unique=False)
    op.create_index(op.f('ix_operation_parent_operation_id'), 'operation', ['parent_operation_id'], unique=False)
    op.create_foreign_key(op.f('fk_operation_owner_entity_id_entity'), 'operation', 'entity', ['owner_entity_id'], ['id'])
    op.create_foreign_key(op.f('fk_operation_parent_operation_id_operation'), 'operation', 'operation', ['parent_operation_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    op.drop_constraint(op.f('fk_operation_parent_operation_id_operation'), 'operation', type_='foreignkey')
    op.drop_constraint(op.f('fk_operation_owner_entity_id_entity'), 'operation', type_='foreignkey')
    op.drop_index(op.f('ix_operation_parent_operation_id'), table_name='operation')
    op.drop_index(op.f('ix_operation_owner_entity_id'), table_name='operation')
    op.drop_column('operation', 'parent_operation_id')
    op.drop_column('operation', 'owner_entity_id')
    op.drop_index(op.f('ix_order_event_order_id'), table_name='order_event')
    op.drop_table('order_event')
    op.drop_index('uq_package_order_live', table_name='package_order', postgresql_where="status <> 'cancelled'")
    op.drop_index(op.f('ix_package_order_package_id'), table_name='package_order')
    op.drop_index(op.f('ix_package_order_entity_id'), table_name='package_order')
    op.drop_table('package_order')
    op.drop_table('package_audience')
    op.drop_index(op.f('ix_local_approval_party_entity_id'), table_name='local_approval_party')
    op.drop_table('local_approval_party')
    op.drop_index(op.f('ix_local_approval_step_id'), table_name='local_approval')
    op.drop_table('local_approval')
    op.drop_index(op.f('ix_package_operation_id'), table_name='package')
    op.drop_table('package')
    op.drop_index(op.f('ix_distribution_rule_entity_id'), table_name='distribution_rule')
    op.drop_table('distribution_rule')
    op.drop_index(op.f('ix_entity_parent_id'), table_name='entity')
    op.drop_table('entity')
    op.drop_table('distribution')
